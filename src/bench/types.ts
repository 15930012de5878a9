/**
 * The benchmark's data model: what a cell is (one path, one workload, one cache state), what a measured row
 * holds, and the JSON document `xenide bench --json` writes and `xenide report` reads.
 */

import type { Counts, CounterKind } from "../hypervisor/accounting.ts";

export const BENCH_SCHEMA = "xenide-bench/1";

export type PathFamily = "baseline" | "ide" | "pv";
export type EngineKind = "sync" | "async";
export type BackendKind = "raw" | "null";
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
}

export interface RssResult {
  status: "ok" | "error";
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
  qtest: QtestResult | null;
  targets: TargetResult[];
  /** Paths that could not run at all, with the reason. */
  unavailable: { path: string; reason: string }[];
  /** Data checks made on every path before it was measured. */
  checks: { path: string; ok: boolean; note: string }[];
}
