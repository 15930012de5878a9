/**
 * `xenide bench`: the same workloads through every path on the same raw image, with plain node:fs as the
 * baseline measured in the same run, exits and modelled cycles per I/O, the port-exit rate, the streaming
 * memory probe, the qtest comparison with QEMU, and the targets checked against all of it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { COUNTER_KINDS, DEFAULT_COSTS } from "../hypervisor/accounting.ts";
import { measureDispatch, measurePioWorkload } from "./dispatch.ts";
import { directSupported, prepareImage } from "./image.ts";
import { comparisons, type InterleaveSettings, interleaveSettings, measureComparison } from "./interleave.ts";
import { baselineFor, buildMatrix } from "./matrix.ts";
import type { ImageRef } from "./paths.ts";
import { currentLibuv, floorProbes, probeAlignment, probeSyscallInPv, probeSyscallTlb } from "./probes.ts";
import { runRssProbe } from "./rss.ts";
import { runStartupProbe } from "./startup.ts";
import { measureCd } from "./cd.ts";
import { measureFormats } from "./formats.ts";
import { measureIdeTest } from "./idetest.ts";
import { measureQtest } from "./qtest.ts";
import { catchStray, emptyRow, runCellGuarded } from "./runner.ts";
import { checkTargets, findRow } from "./targets.ts";
import {
  BENCH_SCHEMA,
  type BenchResult,
  type CellSpec,
  type InterleavedResult,
  type MachineInfo,
  type ProbeResult,
  type Row,
} from "./types.ts";
import { verifyPath } from "./verify.ts";

export * from "./types.ts";
export { checkTargets, findRow } from "./targets.ts";
export { buildMatrix } from "./matrix.ts";

/** Clock used to turn modelled cycles into time (the machine's measured dependent-add rate). */
export const MODEL_GHZ = 3.5;

export interface BenchOptions {
  quick: boolean;
  /** Where the bench image lives (default: a temporary directory, removed afterwards). */
  image?: string;
  /** Overwrite `image` even when it exists and is not a bench image xenide made. */
  force?: boolean;
  repeats?: number;
  budgetMs?: number;
  only?: string[];
  /**
   * Skip the 4 GiB streaming probe / the qtest comparison / the start-up probe (which by default runs unless
   * the budget per repeat is under 50 ms: a smoke run).
   */
  rss?: boolean;
  qtest?: boolean;
  startup?: boolean;
  /**
   * QEMU's ide-test against the launcher and against QEMU (about a minute per program): by default in a full
   * run only. The raw/qcow2/NBD comparison with `qemu-img bench`: by default in every run.
   */
  ideTest?: boolean;
  formats?: boolean;
  /** CD-ROM reads by PIO and DMA beside the disk's (exact counts, about two seconds; default on). */
  cd?: boolean;
  /**
   * The PV, DMA and async targets and their floors in interleaved rounds (default: on, with rounds and slices
   * by the run's kind; `interleaveSettings`); false leaves the targets to the rows.
   */
  interleave?: Partial<InterleaveSettings> | false;
  /** The CLI's entry script, for the child processes (the RSS probe, `xenide qtest`). */
  cli?: string;
  progress?: (done: number, total: number, what: string) => void;
}

export function machineInfo(loadAtStart = os.loadavg()[0]!): MachineInfo {
  const cpus = os.cpus();
  const libuv = currentLibuv();
  return {
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.arch()}`,
    kernel: os.release(),
    node: process.versions.node,
    v8: process.versions.v8,
    uvThreadpool: libuv.pool,
    uvIoUring: libuv.ioUring,
    hostname: os.hostname(),
    loadAvg: { start: loadAtStart, end: os.loadavg()[0]! },
  };
}

/** Run order: by workload, the baseline first, so each comparison is made minutes apart at most. */
function orderCells(cells: CellSpec[]): CellSpec[] {
  const key = (c: CellSpec) => {
    const w = c.workload;
    return `${c.cache}|${w.op}|${w.pattern}|${String(w.blockSize).padStart(8, "0")}|${String(w.qd).padStart(3, "0")}`;
  };
  const rank = (c: CellSpec) => (c.path.variant === "fs-sync" ? 0 : c.path.variant === "fs-libuv" ? 1 : 2);
  return [...cells].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : rank(a) - rank(b)));
}

/** Fill in each row's baseline and ratio (same op, pattern, block size, depth and cache state). */
export function attachBaselines(rows: Row[]): void {
  for (const r of rows) {
    if (r.status !== "ok" || r.variant === "fs-sync") continue;
    const base = baselineFor(r);
    if (base === r.path) continue;
    const b = findRow(rows, {
      path: base,
      op: r.op,
      pattern: r.pattern,
      blockSize: r.blockSize,
      qd: r.qd,
      cache: r.cache,
    });
    if (!b) continue;
    r.baseline = b.path;
    r.ratio = r.iops.median / b.iops.median;
  }
}

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const startedAt = new Date().toISOString();
  const loadAtStart = os.loadavg()[0]!;
  const repeats = o.repeats ?? (o.quick ? 3 : 3);
  const budgetMs = o.budgetMs ?? (o.quick ? 80 : 150);
  const workingSet = (o.quick ? 64 : 256) * 2 ** 20;
  const tmp = o.image ? null : fs.mkdtempSync(path.join(os.tmpdir(), "xenide-bench-"));
  const imagePath = o.image ?? path.join(tmp!, "bench.img");
  const image: ImageRef = { path: imagePath, bytes: workingSet };
  try {
    prepareImage(imagePath, workingSet, { force: o.force === true });
    const direct = directSupported(imagePath);
    const cells = orderCells(buildMatrix({ quick: o.quick, direct, only: o.only }));
    // Steps the run will take: the exit rate, every cell, and the RSS probe and qtest comparison when asked for.
    const startupOn = o.startup ?? budgetMs >= 50;
    const ideTestOn = o.ideTest ?? !o.quick;
    const formatsOn = o.formats ?? true;
    const cdOn = o.cd ?? true;
    const rounds = o.interleave === false ? [] : comparisons(direct, o.only);
    const total =
      cells.length +
      rounds.length +
      3 +
      (o.rss === false ? 0 : 2) +
      (o.qtest === false ? 0 : 1) +
      (startupOn ? 1 : 0) +
      (ideTestOn ? 1 : 0) +
      (formatsOn ? 1 : 0) +
      (cdOn ? 1 : 0);
    let done = 0;
    const tick = (what: string) => o.progress?.(++done, total, what);

    // The port-exit rate first, in a process whose JIT has not yet seen every other path's devices.
    tick("port-exit rate");
    const d = measureDispatch(repeats, o.quick ? 100 : 250);
    tick("port exits in a 16-bit PIO read workload");
    const pioCpu = await measurePioWorkload(repeats, Math.min(o.quick ? 150 : 300, budgetMs * 2));

    // Every path's data is checked once before anything is measured.
    const checks: BenchResult["checks"] = [];
    const seen = new Set<string>();
    let lba = 0;
    for (const c of cells) {
      if (seen.has(c.path.id) || c.path.backend !== "raw") continue;
      seen.add(c.path.id);
      checks.push(await verifyPath(c.path, image, lba));
      lba += 128;
    }

    const rows: Row[] = [];
    const unavailable: BenchResult["unavailable"] = [];
    const stopCatching = catchStray();
    const broken = new Map<string, string>();
    for (const c of cells) {
      tick(
        `${c.path.id} ${c.cache} ${c.workload.op} ${c.workload.pattern} ${c.workload.blockSize} qd${c.workload.qd}`,
      );
      const bad = broken.get(c.path.id);
      if (bad) {
        rows.push(emptyRow(c, "unavailable", bad));
        continue;
      }
      // PV async against sync at QD32 on O_DIRECT swings with the disk's queue from moment to moment: those
      // cells run four times as long, in at least five repeats, so the ratio the target reads is stable.
      const long = c.cache === "cold" && c.path.family === "pv" && c.workload.qd >= 32;
      try {
        rows.push(
          await runCellGuarded(c, {
            image,
            workingSet,
            repeats: long ? Math.max(5, repeats) : repeats,
            budgetMs: long ? budgetMs * 4 : budgetMs,
            warmupMs: Math.min(50, budgetMs / 2),
          }),
        );
      } catch (e) {
        const msg = (e as Error).message;
        rows.push(emptyRow(c, "error", msg));
        // A path that cannot even open is unavailable for the rest of the run.
        if (/probe|connect|not available|unavailable|did not answer/i.test(msg)) {
          broken.set(c.path.id, msg);
          unavailable.push({ path: c.path.id, reason: msg });
        }
      }
    }
    for (const ch of checks) {
      if (ch.ok) continue;
      for (const r of rows)
        if (r.path === ch.path && r.status === "ok") r.note = `data check failed: ${ch.note}`;
    }
    attachBaselines(rows);

    // The targets again, each in interleaved rounds with its baseline and its null disk: a ratio from rows
    // measured minutes apart swings with the machine's speed in between.
    const interleaved: InterleavedResult[] = [];
    const settings = { ...interleaveSettings(o.quick, budgetMs), ...(o.interleave || {}) };
    for (const c of rounds) {
      tick(`interleaved rounds: ${c.id}`);
      let timer: NodeJS.Timeout | undefined;
      try {
        interleaved.push(
          await Promise.race([
            measureComparison(c, { ...settings, image, workingSet }),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error("no result after 180 s")), 180_000);
            }),
          ]),
        );
      } catch (e) {
        unavailable.push({ path: `(interleaved ${c.id})`, reason: (e as Error).message });
      } finally {
        clearTimeout(timer);
      }
    }

    const pio = rows
      .filter((r) => r.path === "ide-pio16/sync/null" && r.op === "read" && r.status === "ok")
      .sort((a, b) => b.blockSize - a.blockSize)[0];
    const dispatch = {
      ...d,
      pioWorkloadExitsPerSec: pio ? pio.exitsPerIo * pio.iops.median : null,
      pioWorkloadExitsPerCpuSec: pioCpu,
    };

    // The explanations, measured now on this machine.
    tick("probes: alignment, system calls, floors");
    const probes: ProbeResult[] = [];
    const probe = async (f: () => ProbeResult | Promise<ProbeResult>) => {
      try {
        probes.push(await f());
      } catch (e) {
        unavailable.push({ path: "(probe)", reason: (e as Error).message });
      }
    };
    const probeRounds = budgetMs < 50 ? 1 : o.quick ? 5 : 9;
    await probe(() => probeAlignment(imagePath, workingSet, probeRounds));
    await probe(() => probeSyscallTlb(128, probeRounds));
    await probe(() => probeSyscallInPv(probeRounds));
    probes.push(...floorProbes(rows, interleaved, currentLibuv()));
    let startup: BenchResult["startup"] = null;
    if (startupOn) {
      tick("start-up: a fresh process to its first request");
      startup = await runStartupProbe(o.cli, imagePath, workingSet);
    }

    let rss: Awaited<ReturnType<typeof runRssProbe>> | null = null;
    if (o.rss !== false) {
      tick("streaming 4 GiB through PV");
      rss = await runRssProbe(4 * 2 ** 30, o.cli);
    }
    let rssQcow2: Awaited<ReturnType<typeof runRssProbe>> | null = null;
    if (o.rss !== false) {
      tick("streaming 4 GiB of qcow2 through PV");
      rssQcow2 = await runRssProbe(4 * 2 ** 30, o.cli, "qcow2");
    }
    let qtest: Awaited<ReturnType<typeof measureQtest>> | null = null;
    if (o.qtest !== false) {
      tick("qtest: xenide vs QEMU");
      qtest = await measureQtest(o.cli, o.quick ? 1 : 3);
    }

    let formats: BenchResult["formats"] = null;
    if (formatsOn) {
      tick("raw, qcow2 and NBD against qemu-img bench");
      formats = await measureFormats({
        image: imagePath,
        workingSet,
        direct,
        repeats,
        // A smoke run's budget (under 50 ms) is kept; otherwise each side runs long enough to be steady.
        budgetMs: budgetMs < 50 ? budgetMs : Math.max(budgetMs, o.quick ? 200 : 400),
      });
    }
    let cd: BenchResult["cd"] = null;
    if (cdOn) {
      tick("CD-ROM reads by PIO and DMA beside the disk's");
      cd = await measureCd();
    }
    let ideTest: BenchResult["ideTest"] = null;
    if (ideTestOn) {
      tick("QEMU's ide-test: the launcher vs QEMU");
      // A full run takes each case's median of three rounds: one case's time swings with the machine's load.
      ideTest = await measureIdeTest(o.quick ? 1 : 3);
    }

    // A path that failed may still be draining (async storage completions land later): the handler stays
    // until here, and whatever it caught between cells is reported.
    await new Promise((r) => setTimeout(r, 200));
    const strays = new Map<string, number>();
    for (const s of stopCatching()) strays.set(s, (strays.get(s) ?? 0) + 1);
    for (const [s, n] of strays) {
      unavailable.push({ path: "(between cells)", reason: `uncaught${n > 1 ? ` x${n}` : ""}: ${s}` });
    }
    const partial = { rows, dispatch, rss, rssQcow2, qtest, formats, ideTest, cd, interleaved };
    return {
      schema: BENCH_SCHEMA,
      startedAt,
      finishedAt: new Date().toISOString(),
      quick: o.quick,
      machine: machineInfo(loadAtStart),
      image: { path: imagePath, bytes: workingSet, workingSetBytes: workingSet, directSupported: direct },
      settings: { repeats, budgetMs },
      costs: COUNTER_KINDS.map((k) => ({
        kind: k,
        cycles: DEFAULT_COSTS[k].cycles,
        source: DEFAULT_COSTS[k].source,
      })),
      modelGHz: MODEL_GHZ,
      ...partial,
      targets: checkTargets(partial),
      probes,
      startup,
      unavailable,
      checks,
    };
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}
