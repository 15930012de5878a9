/**
 * Side by side: the same Linux workload on v86's built-in IDE and on xenide's, in one run. Debian's 686
 * kernel boots in v86 with an initramfs that, once the disk is up, writes then reads a sequential run with
 * direct I/O (dd oflag=direct / iflag=direct, 1 MiB blocks), so every byte crosses the controller. Both disks
 * are held in memory (v86's SyncBuffer, xenide's MemoryBackend), so the figures compare controllers, not host
 * storage. MB/s is host wall time between the guest's phase markers: it measures how fast the emulated PC
 * moves data through each controller, v86's CPU emulation included.
 *
 *   npx tsx bench/v86-ide.ts [--mib 16] [--reps 3] [--modes dma,pio]     (or `runV86IdeBench()` from a bench runner)
 *
 * Needs the Debian pieces (scripts/fetch-guest.sh). Prints a table; writes report/bench/v86-ide.json. Takes
 * about a minute per boot (four boots for both modes) on a 2-core machine.
 */

import { mkdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { CommandLedger, formatLedger, type PhaseReport } from "../src/hosts/v86/ledger.ts";
import { buildBootDisk, type DiskLayout } from "../test/support/guests/disk.ts";
import { buildInitramfs } from "../test/support/guests/initramfs.ts";
import { findGuestPieces, REPO_ROOT } from "../test/support/guests/pieces.ts";
import { type GuestDisk, runLinux } from "../test/support/guests/run-linux.ts";

const MiB = 1024 * 1024;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

/** Write then read the run `reps` times, each pass between its own phase markers. */
export function seqScript(layout: DiskLayout, mib: number, reps: number): string {
  const at = layout.scratch.start / 2048; // in 1 MiB blocks
  const s = [`i=0; while [ ! -b /dev/sda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`];
  for (let r = 1; r <= reps; r++) {
    s.push(
      `echo "@@ phase seq-write-${r}"`,
      `dd if=/dev/zero of=/dev/sda bs=1M seek=${at} count=${mib} oflag=direct 2>/dev/null`,
      `echo "@@ phase seq-read-${r}"`,
      `dd if=/dev/sda of=/dev/null bs=1M skip=${at} count=${mib} iflag=direct 2>/dev/null`,
    );
  }
  s.push(`echo "@@ phase end"`);
  return s.join("\n");
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
}

export interface Row {
  controller: "v86" | "xenide";
  mode: "dma" | "pio";
  /** Medians over the passes, and every pass. */
  writeMBps: number;
  readMBps: number;
  writeMBpsPasses: number[];
  readMBpsPasses: number[];
  bootMs: number;
  /** Host load average when the boot started (the figures are wall-clock: a busy host lowers them). */
  loadAvg: number;
  phases?: PhaseReport[];
}

async function one(
  controller: Row["controller"],
  mode: Row["mode"],
  image: Uint8Array,
  initrd: Uint8Array,
  mib: number,
  reps: number,
): Promise<Row> {
  const pieces = findGuestPieces();
  if (typeof pieces === "string") throw new Error(pieces);
  const stamps = new Map<string, number>();
  let ledger: CommandLedger | undefined;
  const disk: GuestDisk =
    controller === "v86" ? { kind: "v86", bytes: image } : { kind: "xenide-memory", bytes: image.slice() };
  const loadAvg = loadavg()[0]!;
  const t0 = performance.now();
  const run = await runLinux({
    pieces,
    initrd,
    disk,
    attach: { onWrite: (port, size, value) => ledger?.onWrite(port, size, value) },
    onCreate: (pc) => {
      ledger = new CommandLedger(pc.hv.acct, () => pc.ide.ide.bmBase, "boot");
    },
    onLine: (line) => {
      const m = /^@@ phase (\S+)/.exec(line);
      if (!m) return;
      stamps.set(m[1]!, performance.now());
      ledger?.mark(m[1]!);
    },
    timeoutMs: 900_000,
  });
  const bytes = mib * MiB;
  const mbps = (from: string, to: string) => {
    const t0 = stamps.get(from);
    const t1 = stamps.get(to);
    if (t0 === undefined || t1 === undefined) {
      throw new Error(
        `${controller}/${mode}: guest did not finish the workload:\n${run.lines.slice(-20).join("\n")}`,
      );
    }
    return bytes / 1e6 / ((t1 - t0) / 1000);
  };
  const writes: number[] = [];
  const reads: number[] = [];
  for (let r = 1; r <= reps; r++) {
    writes.push(mbps(`seq-write-${r}`, `seq-read-${r}`));
    reads.push(mbps(`seq-read-${r}`, r < reps ? `seq-write-${r + 1}` : "end"));
  }
  const row: Row = {
    controller,
    mode,
    writeMBps: median(writes),
    readMBps: median(reads),
    writeMBpsPasses: writes,
    readMBpsPasses: reads,
    bootMs: stamps.get("seq-write-1")! - t0,
    loadAvg,
  };
  if (ledger)
    row.phases = ledger.finish().filter((p) => p.phase.startsWith("seq-") && p.phase.endsWith("-1"));
  return row;
}

export interface V86IdeBenchResult {
  mib: number;
  reps: number;
  blockSize: number;
  rows: Row[];
  ratios: { mode: Row["mode"]; write: number; read: number }[];
  date: string;
}

/**
 * Run the comparison and write report/bench/v86-ide.json. Resolves null (after printing why) when the
 * Debian pieces are not there.
 */
export async function runV86IdeBench(
  opts: { mib?: number; modes?: Row["mode"][]; reps?: number } = {},
): Promise<V86IdeBenchResult | null> {
  const pieces = findGuestPieces();
  if (typeof pieces === "string") {
    console.log(`v86-ide bench skipped: ${pieces}`);
    return null;
  }
  const mib = opts.mib ?? 16;
  const reps = opts.reps ?? 3;
  const modes = opts.modes ?? ["dma", "pio"];
  const tmp = mkdtempSync(join(tmpdir(), "xenide-bench-v86-"));
  try {
    const img = join(tmp, "disk.img");
    const sectors = (48 + Math.max(mib, 16)) * 2048;
    const layout = buildBootDisk(pieces, img, {
      sectors,
      fat: { start: 2048, sectors: 24 * 2048 },
      ext2: { start: 25 * 2048, sectors: 16 * 2048 },
      scratch: { start: 48 * 2048, sectors: sectors - 48 * 2048 },
    });
    const image = new Uint8Array(readFileSync(img));
    const rows: Row[] = [];
    for (const mode of modes) {
      const initrd = buildInitramfs(pieces, {
        script: seqScript(layout, mib, reps),
        ...(mode === "pio" ? { libataArgs: "dma=0" } : {}),
      });
      for (const controller of ["v86", "xenide"] as const) {
        const row = await one(controller, mode, image, initrd, mib, reps);
        rows.push(row);
        console.log(
          `${controller.padEnd(6)} ${mode.toUpperCase().padEnd(3)}  write ${row.writeMBps.toFixed(2).padStart(7)} MB/s  ` +
            `read ${row.readMBps.toFixed(2).padStart(7)} MB/s  (median of ${reps}; boot ${(row.bootMs / 1000).toFixed(1)} s, ` +
            `load ${row.loadAvg.toFixed(1)})`,
        );
        if (row.phases) console.log(formatLedger(`  xenide exits, ${mode.toUpperCase()}:`, row.phases));
      }
    }
    const ratios = modes.map((mode) => {
      const v = rows.find((r) => r.controller === "v86" && r.mode === mode)!;
      const x = rows.find((r) => r.controller === "xenide" && r.mode === mode)!;
      return { mode, write: x.writeMBps / v.writeMBps, read: x.readMBps / v.readMBps };
    });
    for (const r of ratios) {
      console.log(
        `ours/theirs ${r.mode.toUpperCase()}: write ${r.write.toFixed(2)}x, read ${r.read.toFixed(2)}x`,
      );
    }
    const result: V86IdeBenchResult = {
      mib,
      reps,
      blockSize: MiB,
      rows,
      ratios,
      date: new Date().toISOString(),
    };
    const dir = join(REPO_ROOT, "report", "bench");
    mkdirSync(dir, { recursive: true });
    const out = join(dir, "v86-ide.json");
    writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
    console.log(`wrote ${out}`);
    return result;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runV86IdeBench({
    mib: Number(arg("mib", "16")),
    modes: arg("modes", "dma,pio").split(",") as Row["mode"][],
  });
}
