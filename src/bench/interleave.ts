/**
 * The speed targets and their floors measured in interleaved rounds. A machine's speed drifts over minutes
 * (a 64 KiB `readSync` took 5.1 us in one window and 11 us in another on the machine of the README), so a ratio
 * taken from two rows measured minutes apart swings between runs. Here every round runs the baseline, the path
 * and the path on the null disk for the same slice, one after another (in alternating order, so a drift within
 * a round weighs on both ends alike), and each figure is the median of its per-round values: the ratio, the
 * floor (the baseline plus the protocol alone) and the gap to it all come from the same rounds.
 *
 * The sides are opened with the same builders as the rows (src/bench/paths.ts: the package's public API, the
 * default guest RAM, page-aligned baselines) and driven by the same loops (src/bench/runner.ts `drive`).
 */
import fs from "node:fs";
import os from "node:os";

import { allocAligned } from "../storage/aligned.ts";
import { warmImage } from "./image.ts";
import { offsets, SECTOR } from "./offsets.ts";
import { type ImageRef, openSession, pathSpec } from "./paths.ts";
import { drive } from "./runner.ts";
import { spread } from "./stats.ts";
import type {
  CacheState,
  InterleavedResult,
  InterleavedSide,
  PathSpec,
  RoundSpread,
  Workload,
} from "./types.ts";

/** One side of a comparison: runs its workload until `deadline` (a `now()` time) and returns the I/Os done. */
export interface Contender {
  run(deadline: number): number | Promise<number>;
  /** Called after each slice, outside its time (a data check). */
  after?(): void;
}

export interface RoundOptions {
  /** Measured rounds, after `warmupRounds` unmeasured ones (the JIT and the page cache settle in those). */
  rounds: number;
  warmupRounds: number;
  sliceMs: number;
  /** Milliseconds clock (default `performance.now`). */
  now?: () => number;
}

/**
 * Microseconds per I/O of each contender in each measured round: `out[i][r]`. Every round runs each contender
 * for one slice, forwards in even rounds and backwards in odd ones.
 */
export async function runRounds(cs: readonly Contender[], o: RoundOptions): Promise<number[][]> {
  const now = o.now ?? (() => performance.now());
  const us = cs.map(() => [] as number[]);
  for (let r = 0; r < o.warmupRounds + o.rounds; r++) {
    for (let k = 0; k < cs.length; k++) {
      const i = r % 2 === 0 ? k : cs.length - 1 - k;
      const t0 = now();
      const n = await cs[i]!.run(t0 + o.sliceMs);
      const ms = now() - t0;
      cs[i]!.after?.();
      // Every driver completes at least one I/O before it looks at the deadline.
      if (r >= o.warmupRounds) us[i]!.push(n > 0 ? (ms * 1000) / n : NaN);
    }
  }
  return us;
}

export function roundSpread(perRound: number[]): RoundSpread {
  return { ...spread(perRound), perRound };
}

const each = (a: number[], b: number[], f: (x: number, y: number) => number): number[] =>
  a.map((x, i) => f(x, b[i]!));

/**
 * A QD1 target from the per-round times of the baseline, the path and the path on the null disk: the ratio
 * (baseline time over path time: the path's speed against the baseline's), the floor (the baseline's time over
 * the baseline's plus the protocol's own: the best ratio the protocol leaves) and the gap (what the path spends
 * above the floor), each per round.
 *
 * With `seqUs`, the per-round times of the null-disk path with the baseline's own read run between its I/Os
 * (the same two pieces of work, one after the other, in one loop): the floor in sequence and the gap to it.
 * The first floor adds times measured in separate loops; a system call that flushes the TLB (kernel page-table
 * isolation without PCID) makes the protocol that runs after it slower than in a loop of its own, and this
 * floor includes that, as the path itself does.
 *
 * With `inPlaceUs`, the per-round times of the path over a disk whose read is the baseline's own call (the
 * same `readSync` into a buffer of its own, made where the device model makes its storage request, which is
 * between the protocol's steps, not before them): the floor in place and the gap to it, which is all the
 * medium itself costs the path beyond the baseline's call (reading into guest memory, its bookkeeping).
 */
export function floorFigures(
  baseUs: number[],
  pathUs: number[],
  nullUs: number[],
  seqUs?: number[],
  inPlaceUs?: number[],
): Pick<
  InterleavedResult,
  "ratio" | "floor" | "gapUs" | "floorSeq" | "gapSeqUs" | "floorInPlace" | "gapInPlaceUs"
> {
  const floorUs = each(baseUs, nullUs, (b, n) => b + n);
  return {
    ratio: roundSpread(each(baseUs, pathUs, (b, p) => b / p)),
    floor: roundSpread(each(baseUs, floorUs, (b, f) => b / f)),
    gapUs: roundSpread(each(pathUs, floorUs, (p, f) => p - f)),
    ...(seqUs
      ? {
          floorSeq: roundSpread(each(baseUs, seqUs, (b, q) => b / q)),
          gapSeqUs: roundSpread(each(pathUs, seqUs, (p, q) => p - q)),
        }
      : {}),
    ...(inPlaceUs
      ? {
          floorInPlace: roundSpread(each(baseUs, inPlaceUs, (b, q) => b / q)),
          gapInPlaceUs: roundSpread(each(pathUs, inPlaceUs, (p, q) => p - q)),
        }
      : {}),
  };
}

/**
 * The async target from the per-round times per I/O of readSync at QD1, libuv callbacks at QD32 and PV on the
 * sync and async engines at QD32: async over sync (the target), libuv over readSync (its floor: what the queue
 * gives with no protocol), async over libuv and sync over readSync (where the engines stand against it).
 */
export function asyncFigures(
  readSyncUs: number[],
  libuvUs: number[],
  pvSyncUs: number[],
  pvAsyncUs: number[],
): Pick<InterleavedResult, "ratio" | "floor" | "asyncOfLibuv" | "syncOfReadSync"> {
  return {
    ratio: roundSpread(each(pvSyncUs, pvAsyncUs, (s, a) => s / a)),
    floor: roundSpread(each(readSyncUs, libuvUs, (b, u) => b / u)),
    asyncOfLibuv: roundSpread(each(libuvUs, pvAsyncUs, (u, a) => u / a)),
    syncOfReadSync: roundSpread(each(readSyncUs, pvSyncUs, (b, s) => b / s)),
  };
}

/** Rounds and slices: a full run ~40 s in all, `--quick` ~10 s, a smoke run (budget under 50 ms) a moment. */
export interface InterleaveSettings {
  rounds: number;
  warmupRounds: number;
  sliceMs: number;
  /** The async target's slice: a queue of 32 O_DIRECT reads swings with the disk from moment to moment. */
  asyncSliceMs: number;
}

export function interleaveSettings(quick: boolean, budgetMs: number): InterleaveSettings {
  if (budgetMs < 50) return { rounds: 3, warmupRounds: 1, sliceMs: budgetMs, asyncSliceMs: budgetMs };
  return quick
    ? { rounds: 9, warmupRounds: 2, sliceMs: 50, asyncSliceMs: 100 }
    : { rounds: 21, warmupRounds: 3, sliceMs: 100, asyncSliceMs: 200 };
}

interface SideSpec {
  spec: PathSpec;
  workload: Workload;
  /**
   * Before each of its I/Os, read the same bytes of the image into a page-aligned buffer of its own with
   * `readSync`, as the baseline does (the floor in sequence: the null-disk path and the baseline's storage
   * call in one loop). QD1 only.
   */
  withBaselineRead?: boolean;
}

/** One target's interleaved measurement: its sides, in the order `floorFigures` / `asyncFigures` take them. */
export interface ComparisonSpec {
  id: string;
  what: string;
  kind: "floor" | "async";
  cache: CacheState;
  sides: SideSpec[];
}

const read = (pattern: "seq" | "rand", blockSize: number, qd: number): Workload => ({
  op: "read",
  pattern,
  blockSize,
  qd,
});

/**
 * The comparisons a run makes: the three QD1 targets, and the async one where the image takes O_DIRECT. With
 * `only` (substrings of path ids, as `--only`), those whose measured path matches one of them.
 */
export function comparisons(direct: boolean, only?: readonly string[]): ComparisonSpec[] {
  const fsSync = pathSpec("fs-sync", null);
  const qd1 = (id: string, what: string, variant: "pv" | "dma", pattern: "seq" | "rand", bs: number) => {
    const w = read(pattern, bs, 1);
    return {
      id,
      what,
      kind: "floor" as const,
      cache: "warm" as const,
      sides: [
        { spec: fsSync, workload: w },
        { spec: pathSpec(variant, "sync"), workload: w },
        { spec: pathSpec(variant, "sync", "null"), workload: w },
        { spec: pathSpec(variant, "sync", "null"), workload: w, withBaselineRead: true },
        { spec: pathSpec(variant, "sync", "readsync"), workload: w },
      ],
    };
  };
  const list: ComparisonSpec[] = [
    qd1("pv-4k-random", "PV 4 KiB random reads, QD1, sync engine, warm", "pv", "rand", 4096),
    qd1("pv-64k-seq", "PV 64 KiB sequential reads, QD1, sync engine, warm", "pv", "seq", 65536),
    qd1("ide-dma-64k", "IDE DMA 64 KiB sequential reads, sync engine, warm", "dma", "seq", 65536),
  ];
  if (direct) {
    list.push({
      id: "pv-async-vs-sync",
      what: "PV 4 KiB random reads, O_DIRECT, QD32: async engine against sync engine",
      kind: "async",
      cache: "cold",
      sides: [
        { spec: fsSync, workload: read("rand", 4096, 1) },
        { spec: pathSpec("fs-libuv", null), workload: read("rand", 4096, 32) },
        { spec: pathSpec("pv", "sync"), workload: read("rand", 4096, 32) },
        { spec: pathSpec("pv", "async"), workload: read("rand", 4096, 32) },
      ],
    });
  }
  if (!only || only.length === 0) return list;
  return list.filter((c) =>
    c.sides.some(
      (s) =>
        s.spec.backend === "raw" && s.spec.family !== "baseline" && only.some((o) => s.spec.id.includes(o)),
    ),
  );
}

export interface MeasureOptions extends InterleaveSettings {
  image: ImageRef;
  /** Bytes of the image the workloads touch (as the rows'). */
  workingSet: number;
}

/**
 * Measure one comparison: open every side as the rows do, warm the page cache for warm comparisons, run the
 * rounds, check after each slice that the last block a QD1 raw path read is the image's, close every side.
 */
export async function measureComparison(c: ComparisonSpec, o: MeasureOptions): Promise<InterleavedResult> {
  const loadStart = os.loadavg()[0]!;
  const t0 = performance.now();
  const sliceMs = c.kind === "async" ? o.asyncSliceMs : o.sliceMs;
  const opened: { close(): Promise<void> }[] = [];
  const fd = fs.openSync(o.image.path, "r");
  let dataChecks = 0;
  let dataMismatch: string | undefined;
  try {
    const sides: { side: SideSpec; contender: Contender; ramAligned: boolean }[] = [];
    for (const side of c.sides) {
      const w = side.workload;
      const s = await openSession(side.spec, w, c.cache, o.image);
      opened.push(s);
      // Each side draws from the same seed: over the rounds they touch the same bytes in the same order.
      const source = offsets(w.pattern, w.blockSize, o.workingSet);
      let last = -1;
      let next = () => (last = source());
      if (side.withBaselineRead) {
        const own = allocAligned(w.blockSize, false);
        const bs = w.blockSize;
        next = () => {
          last = source();
          fs.readSync(fd, own, 0, bs, last * SECTOR);
          return last;
        };
      }
      const checked = w.qd === 1 && side.spec.family !== "baseline" && side.spec.backend === "raw";
      const file = checked ? new Uint8Array(w.blockSize) : null;
      const contender: Contender = {
        run: (deadline) => drive(s, w, next, deadline),
        after: () => {
          if (!file || dataMismatch) return;
          fs.readSync(fd, file, 0, w.blockSize, last * SECTOR);
          dataChecks++;
          const got = s.bufs[0]!.subarray(0, w.blockSize);
          if (Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.length), file) !== 0)
            dataMismatch = `${side.spec.id}: the block read at LBA ${last} is not the image's`;
        },
      };
      sides.push({ side, contender, ramAligned: s.ramAligned });
    }
    if (c.cache === "warm") warmImage(o.image.path, o.workingSet);
    const us = await runRounds(
      sides.map((s) => s.contender),
      { rounds: Math.max(1, o.rounds), warmupRounds: o.warmupRounds, sliceMs },
    );
    const figures =
      c.kind === "floor"
        ? floorFigures(us[0]!, us[1]!, us[2]!, us[3], us[4])
        : asyncFigures(us[0]!, us[1]!, us[2]!, us[3]!);
    const main = c.sides[1]!.workload;
    return {
      id: c.id,
      what: c.what,
      cache: c.cache,
      op: main.op,
      pattern: main.pattern,
      blockSize: main.blockSize,
      rounds: us[0]!.length,
      warmupRounds: o.warmupRounds,
      sliceMs,
      sides: sides.map((s, i): InterleavedSide => ({
        path: s.side.withBaselineRead ? `${s.side.spec.id}+readSync` : s.side.spec.id,
        label: s.side.withBaselineRead
          ? `${s.side.spec.label}, each I/O after a readSync of its block`
          : s.side.spec.label,
        qd: s.side.workload.qd,
        usPerIo: us[i]!,
        ramAligned: s.ramAligned,
      })),
      ...figures,
      dataChecks,
      ...(dataMismatch ? { dataMismatch } : {}),
      loadAvg: { start: loadStart, end: os.loadavg()[0]! },
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    fs.closeSync(fd);
    // A side left broken by a failure may never drain: do not wait for it forever.
    for (const s of opened) await Promise.race([s.close(), new Promise((r) => setTimeout(r, 5000).unref())]);
  }
}
