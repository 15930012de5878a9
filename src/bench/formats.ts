/**
 * Image formats and network media against QEMU's own block layer: the bench image's bytes read through
 * xenide's raw medium, a fully allocated qcow2 copy (`qemu-img convert -O qcow2 -S 0`), and an NBD export of
 * the raw image (`qemu-nbd` on a unix socket), each on the async engine at QD1 and QD32, next to
 * `qemu-img bench` (Debian's qemu-utils) on the same file or export with the matching options.
 *
 * `qemu-img bench` has one access pattern: it reads sequentially from offset 0, one buffer after the other
 * (qemu-img.c, img_bench: `offset += step`, wrapping at the image's end). xenide is measured both ways: 4 KiB
 * random reads (the figure the targets read) and the same sequential walk, so the ratio of like with like is
 * shown beside it. Each repeat runs xenide and then qemu-img with as many requests as xenide completed, so the
 * two take about the same time and a change in the machine's load falls on both.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { allocAligned } from "../storage/aligned.ts";
import { AsyncEngine } from "../storage/engine.ts";
import { openMedium } from "../storage/open.ts";
import type { BlockBackend, IoCompletion, IoRequest } from "../storage/types.ts";
import { offsets, SECTOR } from "./offsets.ts";
import { spread } from "./stats.ts";
import type { AccessPattern, FormatMedium, FormatRow, FormatsResult } from "./types.ts";

const QEMU_IMG = process.env.XENIDE_QEMU_IMG ?? "qemu-img";
const QEMU_NBD = process.env.XENIDE_QEMU_NBD ?? "qemu-nbd";
const BLOCK = 4096;
export const FORMAT_DEPTHS = [1, 32] as const;
const EXPORT = "bench";

export interface FormatsOptions {
  /** The raw bench image (made by prepareImage: patterned data, then the stamp sector). */
  image: string;
  /** Bytes of data the workloads address (the image's data part). */
  workingSet: number;
  /** Whether the image's file system takes O_DIRECT. */
  direct: boolean;
  repeats: number;
  budgetMs: number;
}

/** The first line of `prog --version`, or null when the program cannot run. */
function versionOf(prog: string): string | null {
  const r = spawnSync(prog, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return null;
  return (r.stdout.split("\n")[0] ?? "").trim();
}

/**
 * Keep `qd` reads of BLOCK bytes outstanding on `backend` through the async engine for `ms` milliseconds.
 * Returns the completed reads and the seconds they took (the last ones drained included).
 */
export async function runMedium(
  backend: BlockBackend,
  qd: number,
  pattern: AccessPattern,
  workingSet: number,
  ms: number,
): Promise<{ ops: number; seconds: number }> {
  const engine = new AsyncEngine(backend, { maxInflight: qd });
  const next = offsets(pattern, BLOCK, workingSet);
  const reqs: IoRequest[] = Array.from({ length: qd }, (_, tag) => ({
    op: "read",
    tag,
    sector: 0,
    bufs: [allocAligned(BLOCK)],
  }));
  const out: IoCompletion[] = [];
  return new Promise((resolve, reject) => {
    let ops = 0;
    let failed = false;
    const t0 = performance.now();
    const deadline = t0 + ms;
    const submit = (tag: number) => {
      const r = reqs[tag]!;
      r.sector = next();
      engine.submit(r);
    };
    engine.onReady = () => {
      out.length = 0;
      engine.reap(out);
      const more = performance.now() < deadline && !failed;
      for (const c of out) {
        if (c.error) {
          if (!failed) reject(c.error);
          failed = true;
          continue;
        }
        ops++;
        if (more) submit(c.tag);
      }
      if (engine.inflight === 0 && !failed) {
        engine.onReady = null;
        resolve({ ops, seconds: (performance.now() - t0) / 1000 });
      }
    };
    for (let tag = 0; tag < qd; tag++) submit(tag);
  });
}

/**
 * Read one block at `lba` through the medium and compare it with the same block of the raw image read with
 * node:fs (the cells before may have written anything there; the raw file is the truth either way).
 */
async function checkBytes(backend: BlockBackend, image: string, lba: number): Promise<string | null> {
  const engine = new AsyncEngine(backend, { maxInflight: 1 });
  const buf = allocAligned(BLOCK);
  const done = new Promise<IoCompletion>((resolve) => {
    const out: IoCompletion[] = [];
    engine.onReady = () => {
      engine.reap(out);
      if (out[0]) resolve(out[0]);
    };
  });
  engine.submit({ op: "read", tag: 0, sector: lba, bufs: [buf] });
  const c = await done;
  if (c.error) return c.error.message;
  const want = new Uint8Array(BLOCK);
  const fd = fs.openSync(image, "r");
  try {
    fs.readSync(fd, want, 0, BLOCK, lba * SECTOR);
  } finally {
    fs.closeSync(fd);
  }
  return Buffer.from(buf).equals(Buffer.from(want))
    ? null
    : `the block at sector ${lba} differs from the image`;
}

/** `qemu-img bench` output: "Run completed in 1.234 seconds." */
export function parseQemuImgBench(stdout: string): number | null {
  const m = /Run completed in ([0-9.]+) seconds/.exec(stdout);
  return m ? Number(m[1]) : null;
}

/** The `qemu-img bench` arguments matching xenide's workload on one medium. */
export function qemuImgArgs(medium: FormatMedium, target: string, qd: number, count: number): string[] {
  const fmt = medium === "qcow2" ? "qcow2" : "raw";
  return ["bench", "-f", fmt, "-t", "none", "-d", String(qd), "-s", "4K", "-c", String(count), target];
}

function qemuImgBench(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(QEMU_IMG, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    p.on("error", reject);
    // "close": the output is read to its end (at "exit" the pipes can still hold the result line).
    p.on("close", (code) => {
      const s = parseQemuImgBench(out);
      if (code === 0 && s !== null && s > 0) resolve(s);
      else reject(new Error(`qemu-img ${args.join(" ")}: ${out.trim().split("\n").pop() ?? `exit ${code}`}`));
    });
  });
}

/** Start qemu-nbd serving `image` read-only on a unix socket; resolves once the socket accepts. */
async function startNbd(image: string, socket: string): Promise<ChildProcess> {
  // --cache=none: the server reads the image with O_DIRECT, as `-t none` asks of the other media.
  const args = ["-r", "-f", "raw", "-x", EXPORT, "-k", socket, "--persistent", "--shared=4", "--cache=none"];
  const p = spawn(QEMU_NBD, [...args, image], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  p.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (p.exitCode !== null || p.signalCode !== null)
      throw new Error(`qemu-nbd exited: ${err.trim() || p.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socket);
      s.on("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return p;
    if (Date.now() > deadline) {
      p.kill("SIGTERM");
      throw new Error(`qemu-nbd did not open ${socket} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function emptyRow(
  medium: FormatMedium,
  qd: number,
  direct: boolean,
  status: FormatRow["status"],
  note: string,
) {
  const row: FormatRow = {
    medium,
    qd,
    blockSize: BLOCK,
    direct,
    status,
    note,
    xenideRandIops: null,
    xenideSeqIops: null,
    qemuImgIops: null,
    ratio: null,
    seqRatio: null,
    qemuImg: "",
  };
  return row;
}

/** A medium of the comparison, read-only: a file as `medium` (O_DIRECT when `direct`), or an NBD URL. */
function openFormatMedium(medium: FormatMedium, target: string, direct: boolean): BlockBackend {
  return openMedium(target, { ...(medium === "nbd" ? {} : { format: medium, direct }), readOnly: true });
}

/** Measure one medium at one depth: `repeats` rounds of xenide random, xenide sequential, qemu-img bench. */
async function measureRow(
  medium: FormatMedium,
  target: string,
  qd: number,
  o: FormatsOptions,
  direct: boolean,
): Promise<FormatRow> {
  const rand: number[] = [];
  const seq: number[] = [];
  const qemu: number[] = [];
  let lastArgs: string[] = [];
  for (let r = 0; r < o.repeats; r++) {
    const backend = openFormatMedium(medium, target, direct);
    let seqOps: number;
    try {
      const a = await runMedium(backend, qd, "rand", o.workingSet, o.budgetMs);
      rand.push(a.ops / a.seconds);
      const b = await runMedium(backend, qd, "seq", o.workingSet, o.budgetMs);
      seq.push(b.ops / b.seconds);
      seqOps = b.ops;
    } finally {
      backend.close();
    }
    // As many requests as xenide's sequential pass completed, so both sides run about as long.
    lastArgs = qemuImgArgs(medium, target, qd, Math.max(qd * 16, seqOps));
    const seconds = await qemuImgBench(lastArgs);
    qemu.push(Number(lastArgs[lastArgs.indexOf("-c") + 1]) / seconds);
  }
  const x = spread(rand);
  const xs = spread(seq);
  const q = spread(qemu);
  return {
    medium,
    qd,
    blockSize: BLOCK,
    direct,
    status: "ok",
    xenideRandIops: x,
    xenideSeqIops: xs,
    qemuImgIops: q,
    ratio: x.median / q.median,
    seqRatio: xs.median / q.median,
    qemuImg: `qemu-img ${lastArgs.join(" ")}`,
  };
}

/**
 * qcow2 against raw, 4 KiB random reads at QD32: `repeats` rounds alternating between the two media (each round
 * opens both again), so a disk whose speed drifts during the run weighs on both alike.
 */
async function measureQcow2OfRaw(
  raw: { target: string; direct: boolean },
  qcow2: { target: string; direct: boolean },
  o: FormatsOptions,
): Promise<NonNullable<FormatsResult["qcow2OfRaw"]>> {
  const qd = 32;
  const got = { raw: [] as number[], qcow2: [] as number[] };
  for (let r = 0; r < o.repeats; r++) {
    // Alternate which goes first, so neither always follows the other's cache state.
    const order = r % 2 === 0 ? (["raw", "qcow2"] as const) : (["qcow2", "raw"] as const);
    for (const m of order) {
      const spec = m === "raw" ? raw : qcow2;
      const backend = openFormatMedium(m, spec.target, spec.direct);
      try {
        const a = await runMedium(backend, qd, "rand", o.workingSet, o.budgetMs);
        got[m].push(a.ops / a.seconds);
      } finally {
        backend.close();
      }
    }
  }
  const rs = spread(got.raw);
  const qs = spread(got.qcow2);
  return { raw: rs, qcow2: qs, ratio: qs.median / rs.median };
}

export async function measureFormats(o: FormatsOptions): Promise<FormatsResult> {
  const base: FormatsResult = {
    status: "unavailable",
    qemuImgVersion: null,
    imageBytes: o.workingSet,
    repeats: o.repeats,
    budgetMs: o.budgetMs,
    rows: [],
  };
  const version = versionOf(QEMU_IMG);
  if (!version) return { ...base, note: `${QEMU_IMG} not installed (apt-get install qemu-utils)` };
  base.qemuImgVersion = version;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-formats-"));
  let nbd: ChildProcess | null = null;
  try {
    const qcow2 = path.join(tmp, "bench.qcow2");
    // -S 0: no zero detection, so every cluster is allocated (the issue's "fully allocated").
    const conv = spawnSync(QEMU_IMG, ["convert", "-f", "raw", "-O", "qcow2", "-S", "0", o.image, qcow2], {
      encoding: "utf8",
    });
    const media: { medium: FormatMedium; target: string; direct: boolean; note?: string }[] = [
      { medium: "raw", target: o.image, direct: o.direct },
    ];
    if (conv.status === 0) media.push({ medium: "qcow2", target: qcow2, direct: o.direct });
    else
      media.push({
        medium: "qcow2",
        target: "",
        direct: o.direct,
        note: `qemu-img convert: ${conv.stderr.trim()}`,
      });
    const socket = path.join(tmp, "nbd.sock");
    const nbdVersion = versionOf(QEMU_NBD);
    let nbdNote: string | undefined;
    if (!nbdVersion) nbdNote = `${QEMU_NBD} not installed (apt-get install qemu-utils)`;
    else {
      try {
        nbd = await startNbd(o.image, socket);
      } catch (e) {
        nbdNote = (e as Error).message;
      }
    }
    const nbdUrl = `nbd+unix:///${EXPORT}?socket=${socket}`;
    media.push({ medium: "nbd", target: nbdUrl, direct: false, ...(nbdNote ? { note: nbdNote } : {}) });

    const rows: FormatRow[] = [];
    const checks: FormatMedium[] = [];
    for (const m of media) {
      // The medium's bytes are checked once, before any of its rows is measured.
      let bad = m.note ?? null;
      if (bad === null) {
        try {
          const b = openFormatMedium(m.medium, m.target, m.direct);
          try {
            const mismatch = await checkBytes(b, o.image, (o.workingSet / 2 / SECTOR) | 0);
            if (mismatch) bad = `data check failed: ${mismatch}`;
          } finally {
            b.close();
          }
        } catch (e) {
          bad = (e as Error).message;
        }
      }
      for (const qd of FORMAT_DEPTHS) {
        if (bad !== null) {
          rows.push(emptyRow(m.medium, qd, m.direct, m.note ? "unavailable" : "error", bad));
          continue;
        }
        try {
          rows.push(await measureRow(m.medium, m.target, qd, o, m.direct));
        } catch (e) {
          rows.push(emptyRow(m.medium, qd, m.direct, "error", (e as Error).message));
        }
      }
      if (bad === null) checks.push(m.medium);
    }
    const rawM = media.find((m) => m.medium === "raw");
    const qcow2M = media.find((m) => m.medium === "qcow2");
    let qcow2OfRaw: FormatsResult["qcow2OfRaw"];
    if (rawM && qcow2M && checks.includes("raw") && checks.includes("qcow2")) {
      try {
        qcow2OfRaw = await measureQcow2OfRaw(rawM, qcow2M, o);
      } catch {
        qcow2OfRaw = undefined; // the rows above already carry what failed
      }
    }
    return {
      ...base,
      status: "ok",
      ...(nbdVersion ? { qemuNbdVersion: nbdVersion } : {}),
      rows,
      checked: checks,
      ...(qcow2OfRaw ? { qcow2OfRaw } : {}),
    };
  } catch (e) {
    return { ...base, status: "error", note: (e as Error).message };
  } finally {
    if (nbd && nbd.exitCode === null) {
      const gone = new Promise((r) => nbd!.once("exit", r));
      nbd.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 2000))]);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
