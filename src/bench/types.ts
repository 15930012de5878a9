/**
 * The benchmark's data model: what a cell is (one path, one workload, one cache state), what a measured row
 * holds, and the JSON document `xenide bench --json` writes and `xenide report` reads.
 */

import type { Counts, CounterKind } from "../hypervisor/accounting.ts";

export const BENCH_SCHEMA = "xenide-bench/1";

export type PathFamily = "baseline" | "ide" | "pv";
export type EngineKind = "sync" | "async";
/**
 * What a path's storage engine runs on: the image, the null disk (no storage work), or the baseline's own call
 * (`readSync` of the same bytes into a page-aligned buffer of the medium's own: the floor in place).
 */
export type BackendKind = "raw" | "null" | "readsync";
export type IoOpKind = "read" | "write";
export type AccessPattern = "seq" | "rand";
/** warm: page cache re-read just before the cell; cold: the image opened with O_DIRECT. */
export type CacheState = "warm" | "cold";

export const BLOCK_SIZES = [512, 4096, 65536, 1048576] as const;
export const QUEUE_DEPTHS = [1, 4, 16, 32, 64] as const;

export interface Workload {
  op: IoOpKind;
  pattern: AccessPattern;
  /** Bytes per I/O (a whole number of 512-byte sectors). */
  blockSize: number;
  /** I/Os kept outstanding by the guest (or the baseline program). */
  qd: number;
}

/** IDE transfer method (the guest driver's `via`) or PV variant or baseline program. */
export type PathVariant =
  | "fs-sync"
  | "fs-libuv"
  | "pio16"
  | "pio32"
  | "rep"
  | "dma"
  | "pv"
  | "pv-ring16"
  | "pv-noindirect"
  | "pv-nopersistent"
  | "pv-merge";

export interface PvSettings {
  ringPages: number;
  /** Indirect segments per request (0 = no indirect descriptors). */
  indirect: number;
  persistent: boolean;
  merge: boolean;
}

export interface PathSpec {
  /** Stable identifier, e.g. "pv/async/raw", "ide-dma/sync/null", "fs-libuv". */
  id: string;
  family: PathFamily;
  variant: PathVariant;
  /** Storage engine behind the device model (null for the baselines, which call node:fs themselves). */
  engine: EngineKind | null;
  backend: BackendKind;
  /** Deepest queue the path can keep (IDE: one command per channel; PV: the ring's slots). */
  maxQd: number;
  label: string;
  pv?: PvSettings;
}

export interface CellSpec {
  path: PathSpec;
  workload: Workload;
  cache: CacheState;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

/** How the image was warmed right before a cell (the read rate hints at the page-cache folio state). */
export interface WarmInfo {
  bytes: number;
  seconds: number;
  /** GB/s of the warming read (1 MiB reads); about 8 GB/s small-folio, 13+ GB/s large-folio on this kind of VM. */
  gbps: number;
}

export interface Row {
  path: string;
  family: PathFamily;
  variant: PathVariant;
  engine: EngineKind | null;
  backend: BackendKind;
  label: string;
  cache: CacheState;
  op: IoOpKind;
  pattern: AccessPattern;
  blockSize: number;
  qd: number;
  status: "ok" | "unavailable" | "error";
  /** Why the row has no figures (status unavailable/error). */
  note?: string;
  repeats: number;
  /** I/Os in each repeat. */
  opsPerRepeat: number[];
  iops: Spread;
  mbps: Spread;
  /** Id of the baseline row this one is compared with (same op, pattern, block size, depth, cache state). */
  baseline: string | null;
  /** Median IOPS over the baseline's median IOPS (the same as the MB/s ratio: same bytes per I/O). */
  ratio: number | null;
  /** Counters per I/O (exact: the protocol is deterministic), over all repeats. */
  perIo: Counts;
  exitsPerIo: number;
  exitsPerMiB: number;
  notifyPerIo: number;
  irqPerIo: number;
  cyclesPerIo: number;
  /** Storage requests per guest I/O (PV: after the backend's merging; IDE: per command). */
  storagePerIo: number | null;
  /** Total seconds the measured repeats took. */
  wallSeconds: number;
  warm: WarmInfo | null;
  /**
   * Whether the memory the data lands in (guest RAM for the emulated paths, the buffers of the baselines)
   * starts on a page boundary; null when the row did not run.
   */
  ramAligned?: boolean | null;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  memGiB: number;
  os: string;
  kernel: string;
  node: string;
  v8: string;
  uvThreadpool: number;
  /** libuv ran file requests on io_uring (UV_USE_IO_URING=1) rather than its thread pool; absent in older results. */
  uvIoUring?: boolean;
  hostname: string;
  /** 1-minute load average when the run started and ended: other work on the machine shares its cores. */
  loadAvg: { start: number; end: number };
}

export interface DispatchResult {
  /** Port reads per second through Vcpu → ioreq slot → ioreq server → bus → device → response. */
  ioreqExitsPerSec: Spread;
  /** The same reads straight into the bus (no ioreq encoding), same device. */
  bareDispatchPerSec: Spread;
  /** The ioreq-path rate per second of this process's CPU time (wall time includes time other processes ran). */
  ioreqExitsPerCpuSec: Spread;
  /** Exits per second inside a real PIO data-in workload (16-bit, null disk), guest driver included. */
  pioWorkloadExitsPerSec: number | null;
  /**
   * Exits per second of this process's CPU time inside a real 16-bit PIO READ workload (the guest ATA driver
   * reading 64 KiB commands from the null disk), measured on its own; absent in older results.
   */
  pioWorkloadExitsPerCpuSec?: Spread | null;
}

export interface RssResult {
  status: "ok" | "error";
  /** The streamed image's format (absent in older results: raw). */
  format?: "raw" | "qcow2";
  note?: string;
  bytesStreamed: number;
  seconds: number;
  /** Peak resident set of the streaming process. */
  maxRssMiB: number;
  /** Resident set before streaming started (Node itself plus guest RAM). */
  startRssMiB: number;
}

export interface QtestResult {
  status: "ok" | "unavailable" | "error";
  note?: string;
  /** The client's workload (what it did, in words). */
  workload: string;
  commands: number;
  xenideSeconds: Spread | null;
  qemuSeconds: Spread | null;
  qemuVersion: string | null;
  /** QEMU's time over xenide's. */
  speedup: number | null;
  /** The first pass after each server started (cold: JIT, page cache, first-touch), in seconds. */
  firstPass?: { xenide: number; qemu: number | null };
}

/** A figure taken in every round of an interleaved measurement: each round's value, and their median and range. */
export interface RoundSpread extends Spread {
  perRound: number[];
}

/** One path of an interleaved measurement (src/bench/interleave.ts), as a row's path and workload. */
export interface InterleavedSide {
  /** Path id, as in the rows ("fs-sync", "pv/sync/raw", "pv/sync/null", ...). */
  path: string;
  label: string;
  qd: number;
  /** Microseconds per I/O in each measured round. */
  usPerIo: number[];
  /** Whether the memory the data lands in starts on a page boundary. */
  ramAligned: boolean | null;
}

/**
 * A speed target measured in interleaved rounds: every round runs each side for the same slice, one after
 * another (in alternating order), so a machine whose speed drifts over minutes weighs on all sides alike; each
 * figure is the median of its per-round values.
 */
export interface InterleavedResult {
  /** The target it measures (TargetResult.id): "pv-4k-random", "pv-64k-seq", "ide-dma-64k", "pv-async-vs-sync". */
  id: string;
  /** What is compared with what, in words. */
  what: string;
  cache: CacheState;
  op: IoOpKind;
  pattern: AccessPattern;
  blockSize: number;
  /** Measured rounds (after `warmupRounds` unmeasured ones) and the milliseconds each side runs per round. */
  rounds: number;
  warmupRounds: number;
  sliceMs: number;
  /**
   * QD1 targets: the baseline, the path on the raw image, the path on the null disk, and (newer results) the
   * path on the null disk with the baseline's read before each I/O. The async target:
   * readSync at QD1, libuv callbacks at QD32, PV sync and PV async at QD32.
   */
  sides: InterleavedSide[];
  /** The target's figure: the path against its reference (QD1: baseline us / path us; async: sync us / async us). */
  ratio: RoundSpread;
  /**
   * The same work with the protocol removed. QD1: baseline us / (baseline us + null-disk us); async: readSync
   * QD1 us / libuv QD32 us (what a queue of 32 gives with no protocol).
   */
  floor: RoundSpread;
  /** QD1 targets: microseconds per I/O the path spends above its floor, per round. */
  gapUs?: RoundSpread;
  /**
   * QD1 targets: the floor in sequence, baseline us / us of the null-disk path with the baseline's read before
   * each I/O (both in one loop, so the protocol runs after a system call as in the path), and the path's
   * microseconds per I/O above it (absent in older results).
   */
  floorSeq?: RoundSpread;
  gapSeqUs?: RoundSpread;
  /**
   * QD1 targets: the floor in place, baseline us / us of the path over a disk whose read is the baseline's own
   * `readSync` (made where the device model makes its storage request), and the path's microseconds per I/O
   * above it: what the medium itself costs beyond the baseline's call (absent in older results).
   */
  floorInPlace?: RoundSpread;
  gapInPlaceUs?: RoundSpread;
  /** The async target: PV async against libuv at QD32, and PV sync at QD32 against readSync at QD1. */
  asyncOfLibuv?: RoundSpread;
  syncOfReadSync?: RoundSpread;
  /** Slices whose last block was compared with the image file (QD1 raw paths), and the first mismatch. */
  dataChecks: number;
  dataMismatch?: string;
  loadAvg: { start: number; end: number };
  /** Wall time of the whole measurement (opening the sides, warm-up and measured rounds), in seconds. */
  seconds: number;
}

/** One explanation measured in the run (src/bench/probes.ts): what was asked, the figures, the verdict. */
export interface ProbeResult {
  id: string;
  question: string;
  measured: Record<string, number>;
  verdict: string;
}

/** A fresh process importing the package's entry point and reading 64 KiB through PV (src/bench/startup.ts). */
export interface StartupResult {
  status: "ok" | "error";
  note?: string;
  /** The entry point the child imported. */
  entry: string | null;
  /** From process start to the first completed request. */
  firstRequestMs: number;
  /** Requests completed in the first second after the first one. */
  firstSecondPerSec: number;
  /** Requests per second over a second starting two seconds after the first one. */
  steadyPerSec: number;
  importMs?: number;
}

export interface TargetResult {
  id: string;
  text: string;
  /** Measured figure and the threshold it is compared with, in the unit of `unit`. */
  measured: number | null;
  threshold: number;
  unit: string;
  met: boolean | null;
  /** How the figure was obtained, and by how much it is missed. */
  detail: string;
}

export interface CostRow {
  kind: CounterKind;
  cycles: number;
  source: string;
}

/** A medium of the format comparison (src/bench/formats.ts): the raw image, its qcow2 copy, an NBD export of it. */
export type FormatMedium = "raw" | "qcow2" | "nbd";

/** One medium at one queue depth: xenide's medium on the async engine next to `qemu-img bench` on the same bytes. */
export interface FormatRow {
  medium: FormatMedium;
  qd: number;
  blockSize: number;
  /** Whether xenide opened the file with O_DIRECT (never for NBD: the server owns the file). */
  direct: boolean;
  status: "ok" | "unavailable" | "error";
  note?: string;
  /** xenide, random reads (the pattern the targets read). */
  xenideRandIops: Spread | null;
  /** xenide, sequential reads from offset 0 (the only pattern `qemu-img bench` has). */
  xenideSeqIops: Spread | null;
  qemuImgIops: Spread | null;
  /** xenide random over qemu-img bench (median IOPS). */
  ratio: number | null;
  /** xenide sequential over qemu-img bench: like with like. */
  seqRatio: number | null;
  /** The qemu-img command line of the last repeat. */
  qemuImg: string;
}

export interface FormatsResult {
  status: "ok" | "unavailable" | "error";
  note?: string;
  qemuImgVersion: string | null;
  qemuNbdVersion?: string;
  /** Bytes the workloads address. */
  imageBytes: number;
  repeats: number;
  budgetMs: number;
  rows: FormatRow[];
  /** Media whose bytes were read back and compared with the image before they were measured. */
  checked?: FormatMedium[];
  /**
   * qcow2 against raw at QD32, 4 KiB random reads, O_DIRECT: rounds alternating between the two files so a
   * disk whose speed drifts during the run weighs on both alike; absent when either medium was not measured.
   */
  qcow2OfRaw?: { raw: Spread; qcow2: Spread; ratio: number };
}

/** One case of QEMU's ide-test run against one program. */
export interface IdeTestCase {
  name: string;
  ok: boolean;
  /** Wall time of the case's process (the median round's when it ran more than once). */
  seconds: number;
  /** Each round's seconds, when it ran more than once. */
  rounds?: number[];
  /** The last line of its output when it failed. */
  note?: string;
}

/** QEMU 7.2's tests/qtest/ide-test against xenide's launcher and against QEMU, case by case, interleaved. */
export interface IdeTestResult {
  status: "ok" | "unavailable" | "error";
  note?: string;
  /** Cases listed by the binary (each run in its own process). */
  cases: number;
  /** Times each case ran against each program (absent: once). */
  rounds?: number;
  launcher: { passed: number; seconds: number; cases: IdeTestCase[] };
  /** null: QEMU was not measured (the reason is `qemuNote`). */
  qemu: { version: string; passed: number; seconds: number; cases: IdeTestCase[] } | null;
  qemuNote?: string;
  /** Cases both programs passed: the ones the ratio compares. */
  compared: number;
  /** The launcher's wall time over QEMU's, over the cases both passed (lower is better). */
  ratio: number | null;
}

/** CD-ROM reads (READ(10) by PACKET) through PIO and DMA, with the disk's figures beside them. */
export interface CdRow {
  device: "cd" | "disk";
  via: "pio" | "dma";
  /** Bytes per command. */
  bytesPerCommand: number;
  /** Port and MMIO exits per command, per 2 KiB of data, per MiB. */
  exitsPerCommand: number;
  exitsPer2KiB: number;
  exitsPerMiB: number;
  irqPerCommand: number;
}

export interface CdResult {
  status: "ok" | "unavailable" | "error";
  note?: string;
  rows: CdRow[];
}

export interface BenchResult {
  schema: typeof BENCH_SCHEMA;
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  machine: MachineInfo;
  image: { path: string; bytes: number; workingSetBytes: number; directSupported: boolean };
  settings: { repeats: number; budgetMs: number };
  costs: CostRow[];
  /** Clock assumed to turn modelled cycles into time (GHz). */
  modelGHz: number;
  rows: Row[];
  dispatch: DispatchResult | null;
  rss: RssResult | null;
  /** The same stream from an empty qcow2 image (absent in older results; null: not run). */
  rssQcow2?: RssResult | null;
  qtest: QtestResult | null;
  targets: TargetResult[];
  /** The explanations, each measured in this run (absent in results of older versions). */
  probes?: ProbeResult[];
  startup?: StartupResult | null;
  /** QEMU's ide-test against the launcher and against QEMU (absent in older results; null: not run). */
  ideTest?: IdeTestResult | null;
  /** raw, qcow2 and NBD media against `qemu-img bench` (absent in older results; null: not run). */
  formats?: FormatsResult | null;
  /** CD-ROM reads by PIO and DMA beside the disk's (absent in older results; null: not run). */
  cd?: CdResult | null;
  /**
   * The speed targets and their floors measured in interleaved rounds (absent in older results; empty when the
   * run measured none of them, e.g. `--only` left their paths out).
   */
  interleaved?: InterleavedResult[];
  /** Paths that could not run at all, with the reason. */
  unavailable: { path: string; reason: string }[];
  /** Data checks made on every path before it was measured. */
  checks: { path: string; ok: boolean; note: string }[];
}
