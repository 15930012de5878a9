/**
 * Probes that explain the benchmark's figures on the machine it runs on, instead of quoting an older machine:
 * each measures one effect in interleaved rounds in this process and states a verdict from what it measured.
 *
 * - alignment: `readSync` into page-aligned memory against memory 16 bytes past a page boundary (where a large
 *   malloc'd buffer starts), so it is visible why guest RAM and the baselines are page-aligned;
 * - syscall-tlb: what one system call costs alone, and what touching distinct pages right after one costs
 *   beyond touching them without it (a TLB flush per system call: kernel page-table isolation on a CPU
 *   without PCID; on a paravirtual or shadow-paged VM each refill costs more);
 * - syscall-in-pv: one extra system call inside a PV round trip on the null disk, against the same call alone:
 *   what a storage request costs the emulated path beyond what it costs a tight `readSync` loop;
 * - floor: per target, the same work with the protocol removed (baseline time + the protocol's own time on
 *   the null disk) and the ratio that leaves, next to the measured one.
 */
import fs from "node:fs";

import type { Blkfront } from "../xenblk/blkfront.ts";
import { buildMachine } from "../machine/builder.ts";
import { openPvPath } from "../machine/disk-path.ts";
import { allocAligned } from "../storage/aligned.ts";
import { NullBackend } from "../storage/index.ts";
import { fmtAbove, fmtNum } from "./format.ts";
import { median } from "./stats.ts";
import { findRow, interleavedFor, rangeText } from "./targets.ts";
import type { InterleavedResult, InterleavedSide, ProbeResult, Row } from "./types.ts";

/** xorshift32 offsets, as the cells use. */
function randomBlocks(blocks: number, seed = 0x2545f491): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % blocks;
  };
}

/** Microseconds per call of `fn`, as the median over `rounds` of the per-round times (interleave the callers). */
function usPer(fn: () => void, n: number): number {
  const t = performance.now();
  for (let i = 0; i < n; i++) fn();
  return ((performance.now() - t) * 1000) / n;
}

/** readSync into page-aligned memory against memory 16 bytes past a page boundary, 4 KiB and 64 KiB. */
export function probeAlignment(image: string, imageBytes: number, rounds = 7): ProbeResult {
  const fd = fs.openSync(image, "r");
  try {
    const mem = allocAligned(65536 + 4096, false);
    const out: Record<string, number> = {};
    const parts: string[] = [];
    for (const bs of [4096, 65536]) {
      const next = randomBlocks(Math.floor(imageBytes / bs));
      const aligned = mem.subarray(0, bs);
      const off16 = mem.subarray(16, 16 + bs);
      const a: number[] = [];
      const m: number[] = [];
      const n = bs === 4096 ? 3000 : 600;
      for (let r = 0; r < rounds + 1; r++) {
        const ta = usPer(() => fs.readSync(fd, aligned, 0, bs, next() * bs), n);
        const tm = usPer(() => fs.readSync(fd, off16, 0, bs, next() * bs), n);
        if (r > 0) (a.push(ta), m.push(tm)); // the first round warms the page cache and the JIT
      }
      const ratio = median(m.map((x, i) => x / a[i]!));
      out[`aligned_us_${bs}`] = median(a);
      out[`plus16_us_${bs}`] = median(m);
      out[`slowdown_${bs}`] = ratio;
      parts.push(
        `${bs / 1024} KiB ${median(a).toFixed(2)} vs ${median(m).toFixed(2)} us (${ratio.toFixed(2)}x)`,
      );
    }
    const worst = Math.max(out.slowdown_4096!, out.slowdown_65536!);
    return {
      id: "alignment",
      question: "Does the alignment of the memory a read lands in matter here?",
      measured: out,
      verdict:
        `readSync into page-aligned memory vs 16 bytes past a page boundary: ${parts.join(", ")}. ` +
        (worst >= 1.15
          ? `Misaligned memory is slower here, so guest RAM and every baseline buffer are page-aligned.`
          : `Alignment makes little difference here; guest RAM and the baselines are page-aligned anyway.`),
    };
  } finally {
    fs.closeSync(fd);
  }
}

/** What the kernel and CPU say about page-table isolation and PCID. */
function ptiFacts(): { pti: string; pcid: boolean | null } {
  const read = (p: string) => {
    try {
      return fs.readFileSync(p, "utf8").trim();
    } catch {
      return null;
    }
  };
  const meltdown = read("/sys/devices/system/cpu/vulnerabilities/meltdown");
  const cmdline = read("/proc/cmdline") ?? "";
  const cpuinfo = read("/proc/cpuinfo");
  const pcid = cpuinfo === null ? null : /^flags\s*:.*\bpcid\b/m.test(cpuinfo);
  const pti =
    meltdown === null
      ? "unknown"
      : /PTI/.test(meltdown)
        ? `on (${meltdown}${/\bpti=on\b/.test(cmdline) ? "; pti=on on the kernel command line" : ""})`
        : `off (${meltdown})`;
  return { pti, pcid };
}

/**
 * A system call alone (getuid), `pages` distinct small buffers touched alone, and both together: what the
 * system call adds to the touches beyond its own cost is the price of refilling the TLB it flushed.
 */
export function probeSyscallTlb(pages = 128, rounds = 7): ProbeResult {
  // Separate ArrayBuffers: each its own allocation, so the touches land on distinct pages.
  const bufs: Uint8Array[] = [];
  for (let i = 0; i < pages; i++) bufs.push(new Uint8Array(new ArrayBuffer(8192)).fill(1));
  let sink = 0;
  const touch = () => {
    for (let k = 0; k < pages; k++) sink += bufs[k]![64]!;
  };
  const sys = () => (sink += process.getuid?.() ?? 0);
  const n = 20000;
  const s: number[] = [];
  const t: number[] = [];
  const st: number[] = [];
  for (let r = 0; r < rounds + 1; r++) {
    const a = usPer(sys, n);
    const b = usPer(touch, n);
    const c = usPer(() => (sys(), touch()), n);
    if (r > 0) (s.push(a), t.push(b), st.push(c));
  }
  if (sink === -1) console.log(""); // keep the loads alive
  const sysUs = median(s);
  const touchUs = median(t);
  const bothUs = median(st);
  const extraNsPerPage = ((bothUs - sysUs - touchUs) * 1000) / pages;
  const f = ptiFacts();
  const flushes = extraNsPerPage >= 5;
  return {
    id: "syscall-tlb",
    question: "Does a system call make the memory touched after it slower (a TLB flush per call)?",
    measured: { syscallUs: sysUs, touchUs, syscallThenTouchUs: bothUs, extraNsPerPage, pages },
    verdict:
      `getuid() alone ${sysUs.toFixed(2)} us; touching ${pages} distinct pages ${touchUs.toFixed(2)} us alone, ` +
      `${(bothUs - sysUs).toFixed(2)} us right after a system call: ${extraNsPerPage.toFixed(1)} ns more per page. ` +
      `Kernel page-table isolation: ${f.pti}; CPU PCID: ${f.pcid === null ? "unknown" : f.pcid ? "yes" : "no"}. ` +
      (flushes
        ? `Each system call flushes the TLB here, so a path that touches more memory between its system calls ` +
          `than the readSync loop does pays for it on every request.`
        : `No TLB flush per system call is visible here.`),
  };
}

/** One PV 4 KiB round trip on the null disk, with and without an extra getuid() in it, and getuid alone. */
export async function probeSyscallInPv(rounds = 7): Promise<ProbeResult> {
  const m = buildMachine({ pc: false, pv: [{ medium: { backend: new NullBackend(65536) } }] });
  const path = await openPvPath(m);
  const front: Blkfront = path.front;
  const buf = front.allocBuffer(4096);
  const next = randomBlocks(65536 / 8);
  let sink = 0;
  const loop = (n: number, extra: boolean) =>
    new Promise<number>((resolve, reject) => {
      let i = 0;
      const t = performance.now();
      const done = (e: Error | null): void => {
        if (e) return reject(e);
        if (extra) sink += process.getuid?.() ?? 0;
        if (++i < n) front.submitRead(next() * 8, buf, done);
        else resolve(((performance.now() - t) * 1000) / n);
      };
      front.submitRead(next() * 8, buf, done);
    });
  try {
    const plain: number[] = [];
    const withCall: number[] = [];
    const alone: number[] = [];
    for (let r = 0; r < rounds + 1; r++) {
      const a = await loop(5000, false);
      const b = await loop(5000, true);
      const c = usPer(() => (sink += process.getuid?.() ?? 0), 5000);
      if (r > 0) (plain.push(a), withCall.push(b), alone.push(c));
    }
    if (sink === -1) console.log("");
    const pvUs = median(plain);
    const pvCallUs = median(withCall);
    const callUs = median(alone);
    const extra = pvCallUs - pvUs - callUs;
    return {
      id: "syscall-in-pv",
      question: "What does one system call cost inside a PV round trip, against the same call alone?",
      measured: { pvNullUs: pvUs, pvNullWithSyscallUs: pvCallUs, syscallAloneUs: callUs, extraUs: extra },
      verdict:
        `A 4 KiB PV read on the null disk takes ${pvUs.toFixed(2)} us, ${pvCallUs.toFixed(2)} us with one getuid() ` +
        `in it; getuid() alone takes ${callUs.toFixed(2)} us. ` +
        (extra > 0.3
          ? `So a system call costs the PV path ${extra.toFixed(2)} us more than it costs a tight loop: the ` +
            `storage request of every PV and DMA I/O pays this on top of the protocol's own time.`
          : `A system call costs the PV path no more than it costs a tight loop (${extra.toFixed(2)} us).`),
    };
  } finally {
    await path.close();
    await m.close();
  }
}

/** The floor probes' ids and the targets (and their interleaved measurements) they explain. */
const FLOOR_CASES: [string, string, string, string, "rand" | "seq", number, number][] = [
  ["pv-4k", "pv-4k-random", "pv/sync/raw", "pv/sync/null", "rand", 4096, 0.9],
  ["pv-64k", "pv-64k-seq", "pv/sync/raw", "pv/sync/null", "seq", 65536, 0.9],
  ["dma-64k", "ide-dma-64k", "ide-dma/sync/raw", "ide-dma/sync/null", "seq", 65536, 0.8],
];

/** How libuv ran the run's file I/O, as its machine line records it (`MachineInfo`). */
export interface LibuvConfig {
  /** Threads in libuv's pool (UV_THREADPOOL_SIZE when the process started). */
  pool: number;
  /** File requests on io_uring (UV_USE_IO_URING when the process started). */
  ioUring: boolean;
}

/** This process's libuv configuration (what the machine line records for a run made here). */
export function currentLibuv(env: NodeJS.ProcessEnv = process.env): LibuvConfig {
  return { pool: threadpoolSize(env.UV_THREADPOOL_SIZE), ioUring: usesIoUring(env) };
}

/** libuv's reading of UV_THREADPOOL_SIZE (threadpool.c init_threads): 4 unset, else atoi, 0 -> 1, at most 1024. */
function threadpoolSize(v: string | undefined): number {
  if (v === undefined) return 4;
  const n = Number.parseInt(v, 10) || 0; // atoi: leading digits, 0 for none
  if (n === 0) return 1;
  return n < 0 || n > 1024 ? 1024 : n; // an unsigned int in libuv: a negative count is huge, then capped
}

/**
 * The floor of each speed target: the baseline's time per I/O plus the protocol's own time on the null disk
 * (the same work with the storage removed, and the storage with the protocol removed), as a ratio. Taken from
 * the interleaved rounds when the run has them (the baseline, the path and the null disk timed in the same
 * rounds), else from the rows.
 */
export function floorProbes(
  rows: readonly Row[],
  interleaved: readonly InterleavedResult[] = [],
  libuv: LibuvConfig = currentLibuv(),
): ProbeResult[] {
  const out: ProbeResult[] = [];
  for (const [id, target, raw, nul, pattern, bs, goal] of FLOOR_CASES) {
    const x = interleavedFor(interleaved, target);
    if (x) {
      out.push(floorFromRounds(`floor-${id}`, x, goal));
      continue;
    }
    const k = { op: "read" as const, pattern, blockSize: bs, qd: 1, cache: "warm" as const };
    const base = findRow(rows, { path: "fs-sync", ...k });
    const r = findRow(rows, { path: raw, ...k });
    // The null disk does no storage work, so its pattern changes nothing: a full run measures it sequentially only.
    const n =
      findRow(rows, { path: nul, ...k }) ??
      findRow(rows, { path: nul, ...k, pattern: pattern === "rand" ? "seq" : "rand" });
    if (!base || !r || !n) continue;
    const baseUs = 1e6 / base.iops.median;
    const rawUs = 1e6 / r.iops.median;
    const nullUs = 1e6 / n.iops.median;
    const floorUs = baseUs + nullUs;
    const floorRatio = baseUs / floorUs;
    const rest = rawUs - floorUs;
    out.push({
      id: `floor-${id}`,
      question: `${raw} ${bs / 1024} KiB ${pattern} reads: how close to the floor?`,
      measured: { baselineUs: baseUs, pathUs: rawUs, protocolUs: nullUs, floorUs, floorRatio, restUs: rest },
      verdict:
        `From rows measured apart: readSync ${baseUs.toFixed(2)} us + the protocol alone (null disk) ` +
        `${nullUs.toFixed(2)} us = ${floorUs.toFixed(2)} us, a floor of ${floorRatio.toFixed(2)}x` +
        (floorRatio < goal ? ` (below the ${goal}x target: the protocol's own time alone misses it)` : "") +
        `; measured ${rawUs.toFixed(2)} us (${(baseUs / rawUs).toFixed(2)}x), ` +
        restText(rest),
    });
  }
  const xa = interleavedFor(interleaved, "pv-async-vs-sync");
  const asyncFloor = xa ? asyncFloorFromRounds(xa, libuv) : asyncFloorProbe(rows, libuv);
  if (asyncFloor) out.push(asyncFloor);
  return out;
}

function restText(rest: number): string {
  return rest > 0
    ? `${fmtNum(rest)} us above the floor: the storage request costs this path more than it costs readSync.`
    : `at the floor.`;
}

/** A QD1 floor from interleaved rounds: every figure the median of its per-round values, with their range. */
function floorFromRounds(id: string, x: InterleavedResult, goal: number): ProbeResult {
  const [base, path, nul] = x.sides as [InterleavedSide, InterleavedSide, InterleavedSide];
  const baseUs = median(base.usPerIo);
  const pathUs = median(path.usPerIo);
  const nullUs = median(nul.usPerIo);
  const floorUs = median(base.usPerIo.map((b, i) => b + nul.usPerIo[i]!));
  const floor = x.floor;
  const rest = x.gapUs?.median ?? NaN;
  const seq = x.sides[3];
  const seqUs = seq ? median(seq.usPerIo) : NaN;
  const inPlace = x.sides[4];
  const inPlaceUs = inPlace ? median(inPlace.usPerIo) : NaN;
  return {
    id,
    question: `${path.path} ${x.blockSize / 1024} KiB ${x.pattern} reads: how close to the floor?`,
    measured: {
      baselineUs: baseUs,
      pathUs,
      protocolUs: nullUs,
      floorUs,
      floorRatio: floor.median,
      floorRatioMin: floor.min,
      floorRatioMax: floor.max,
      restUs: rest,
      ratio: x.ratio.median,
      ratioMin: x.ratio.min,
      ratioMax: x.ratio.max,
      rounds: x.rounds,
      sliceMs: x.sliceMs,
      ...(x.floorSeq
        ? {
            sequenceUs: seqUs,
            floorSeqRatio: x.floorSeq.median,
            floorSeqRatioMin: x.floorSeq.min,
            floorSeqRatioMax: x.floorSeq.max,
            restSeqUs: x.gapSeqUs?.median ?? NaN,
          }
        : {}),
      ...(x.floorInPlace
        ? {
            inPlaceUs,
            floorInPlaceRatio: x.floorInPlace.median,
            floorInPlaceRatioMin: x.floorInPlace.min,
            floorInPlaceRatioMax: x.floorInPlace.max,
            restInPlaceUs: x.gapInPlaceUs?.median ?? NaN,
          }
        : {}),
    },
    verdict:
      `In ${x.rounds} interleaved rounds of ${x.sliceMs} ms (medians of the per-round figures): readSync ` +
      `${baseUs.toFixed(2)} us + the protocol alone (null disk) ${nullUs.toFixed(2)} us = ${floorUs.toFixed(2)} us, ` +
      `a floor of ${floor.median.toFixed(2)}x (${rangeText(floor)})` +
      (floor.median < goal ? ` (below the ${goal}x target: the protocol's own time alone misses it)` : "") +
      `; measured ${pathUs.toFixed(2)} us, ${x.ratio.median.toFixed(2)}x (${rangeText(x.ratio)}), ` +
      restText(rest) +
      (x.floorSeq ? seqText(x, seqUs, nullUs, baseUs, goal) : "") +
      (x.floorInPlace ? inPlaceText(x, inPlaceUs, seqUs, goal) : "") +
      (x.dataMismatch ? ` DATA CHECK FAILED: ${x.dataMismatch}.` : ""),
  };
}

/**
 * The floor in sequence: the null-disk path with the baseline's readSync before each I/O in one loop. What it
 * costs beyond the two measured apart is what the system call does to the protocol's own time (its TLB and
 * caches), which the path pays too.
 */
function seqText(x: InterleavedResult, seqUs: number, nullUs: number, baseUs: number, goal: number): string {
  const f = x.floorSeq!;
  const rest = x.gapSeqUs?.median ?? NaN;
  const slower = seqUs - baseUs - nullUs;
  return (
    ` In sequence (the null-disk path with the baseline's readSync before each I/O, one loop) the same two ` +
    `pieces of work take ${seqUs.toFixed(2)} us, ${slower.toFixed(2)} us more than apart: a floor of ` +
    `${f.median.toFixed(2)}x (${rangeText(f)})` +
    (f.median < goal ? `, below the ${goal}x target` : "") +
    `; the path is ${fmtAbove(rest)} it.`
  );
}

/**
 * The floor in place: the path over a disk whose read is the baseline's own readSync, made where the device model
 * makes its storage request. Beyond the floor in sequence it holds what the request's place costs (protocol steps
 * on both sides of the system call); the path above it is what the medium itself adds to the baseline's call.
 */
function inPlaceText(x: InterleavedResult, inPlaceUs: number, seqUs: number, goal: number): string {
  const f = x.floorInPlace!;
  const rest = x.gapInPlaceUs?.median ?? NaN;
  const placed = inPlaceUs - seqUs;
  return (
    ` In place (the path over a disk whose read is the baseline's readSync, made where the device model makes ` +
    `its storage request) ${inPlaceUs.toFixed(2)} us` +
    (Number.isFinite(placed) ? `, ${fmtAbove(placed)} the floor in sequence` : "") +
    `: a floor of ${f.median.toFixed(2)}x (${rangeText(f)})` +
    (f.median < goal ? `, below the ${goal}x target` : "") +
    (rest > 0
      ? `; the path is ${fmtAbove(rest)} it: what its medium adds to the baseline's call.`
      : `; the path is ${fmtAbove(rest)} it: its medium adds nothing to the baseline's call.`)
  );
}

interface AsyncFloorFigures {
  readSyncIops: number;
  libuvQd32Iops: number;
  floorRatio: number;
  pv?: {
    pvSyncIops: number;
    pvAsyncIops: number;
    ratio: number;
    asyncOfLibuv: number;
    syncOfReadSync: number;
  };
}

/**
 * The floor of the async target (PV async >= 3x the sync engine, 4 KiB random O_DIRECT reads at QD32): what
 * plain `node:fs` gains from the same queue depth on the same file, libuv callbacks at QD32 against `readSync`
 * at QD1, with no protocol at all. That is what the disk behind the file and libuv's thread pool give a queue
 * of 32 on this machine; the PV engines are then compared with it (async against libuv, sync against readSync).
 */
function asyncFloorProbe(rows: readonly Row[], libuv: LibuvConfig): ProbeResult | null {
  const k = { op: "read" as const, pattern: "rand" as const, blockSize: 4096, cache: "cold" as const };
  const sync1 = findRow(rows, { path: "fs-sync", qd: 1, ...k });
  const uv32 = findRow(rows, { path: "fs-libuv", qd: 32, ...k });
  const pvS = findRow(rows, { path: "pv/sync/raw", qd: 32, ...k });
  const pvA = findRow(rows, { path: "pv/async/raw", qd: 32, ...k });
  if (!sync1 || !uv32) return null;
  const f: AsyncFloorFigures = {
    readSyncIops: sync1.iops.median,
    libuvQd32Iops: uv32.iops.median,
    floorRatio: uv32.iops.median / sync1.iops.median,
  };
  if (pvS && pvA) {
    f.pv = {
      pvSyncIops: pvS.iops.median,
      pvAsyncIops: pvA.iops.median,
      ratio: pvA.iops.median / pvS.iops.median,
      asyncOfLibuv: pvA.iops.median / uv32.iops.median,
      syncOfReadSync: pvS.iops.median / sync1.iops.median,
    };
  }
  return asyncFloorResult(f, libuv, "", {});
}

/** The async floor from interleaved rounds: readSync, libuv and both engines timed in the same rounds. */
function asyncFloorFromRounds(x: InterleavedResult, libuv: LibuvConfig): ProbeResult {
  const iops = (i: number) => 1e6 / median(x.sides[i]!.usPerIo);
  const f: AsyncFloorFigures = { readSyncIops: iops(0), libuvQd32Iops: iops(1), floorRatio: x.floor.median };
  if (x.asyncOfLibuv && x.syncOfReadSync)
    f.pv = {
      pvSyncIops: iops(2),
      pvAsyncIops: iops(3),
      ratio: x.ratio.median,
      asyncOfLibuv: x.asyncOfLibuv.median,
      syncOfReadSync: x.syncOfReadSync.median,
    };
  return asyncFloorResult(
    f,
    libuv,
    `In ${x.rounds} interleaved rounds of ${x.sliceMs} ms (medians of the per-round figures, ranges in brackets): `,
    {
      floor: ` (${rangeText(x.floor)})`,
      ratio: ` (${rangeText(x.ratio)})`,
      ...(x.asyncOfLibuv ? { asyncOfLibuv: ` (${rangeText(x.asyncOfLibuv)})` } : {}),
    },
    {
      floorRatioMin: x.floor.min,
      floorRatioMax: x.floor.max,
      ratioMin: x.ratio.min,
      ratioMax: x.ratio.max,
      rounds: x.rounds,
      sliceMs: x.sliceMs,
    },
  );
}

function asyncFloorResult(
  f: AsyncFloorFigures,
  libuv: LibuvConfig,
  lead: string,
  ranges: { floor?: string; ratio?: string; asyncOfLibuv?: string },
  extra: Record<string, number> = {},
): ProbeResult {
  const goal = 3;
  const measured: Record<string, number> = {
    readSyncIops: f.readSyncIops,
    libuvQd32Iops: f.libuvQd32Iops,
    floorRatio: f.floorRatio,
    ...extra,
  };
  let tail = ".";
  if (f.pv) {
    const { ratio, asyncOfLibuv: ofLibuv, syncOfReadSync } = f.pv;
    Object.assign(measured, f.pv);
    tail =
      `; measured ${ratio.toFixed(2)}x${ranges.ratio ?? ""} (PV async ${ofLibuv.toFixed(2)}x libuv at QD32` +
      `${ranges.asyncOfLibuv ?? ""}, PV sync ${syncOfReadSync.toFixed(2)}x readSync): ` +
      (ofLibuv >= 0.9
        ? `the async engine is at the floor, and what the target misses beyond it is the disk's.`
        : `the async engine is ${((1 - ofLibuv) * 100).toFixed(0)}% below the floor, the protocol's own cost at this depth.`);
  }
  const pool = libuv.pool;
  // libuv 1.45+ can run fs requests on io_uring instead of its thread pool; Node 20 leaves it off unless the
  // process starts with UV_USE_IO_URING=1 (read once, before any JavaScript runs).
  const uring = libuv.ioUring ? "io_uring" : "thread pool, io_uring off";
  return {
    id: "floor-pv-async",
    question: "What does a queue of 32 give over QD1 on this file with O_DIRECT, with no protocol at all?",
    measured,
    verdict:
      lead +
      `O_DIRECT 4 KiB random reads: node:fs callbacks at QD32 (libuv: ${uring}; pool of ${pool} threads) ` +
      `${fmtNum(f.libuvQd32Iops)} IOPS against readSync at QD1 ${fmtNum(f.readSyncIops)} IOPS, a floor of ` +
      `${f.floorRatio.toFixed(2)}x${ranges.floor ?? ""}` +
      (f.floorRatio < goal
        ? ` (below the ${goal}x target: the disk and the thread pool alone do not give ${goal}x here)`
        : "") +
      tail,
  };
}

/**
 * Whether libuv runs this process's file requests on io_uring: libuv 1.45+ can, Node 20 leaves it off unless the
 * process starts with UV_USE_IO_URING=1 (read once, before any JavaScript runs; `xenide bench --io-uring`).
 */
export function usesIoUring(env: NodeJS.ProcessEnv = process.env): boolean {
  return /^[1-9]/.test(env.UV_USE_IO_URING ?? "");
}
