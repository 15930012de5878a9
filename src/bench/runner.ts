/**
 * Running one cell: open the path, run a short unmeasured warm-up (so the JIT has compiled the path), re-read
 * the image (page cache warm, folio state recorded), then time `repeats` runs of `budgetMs` each, counting
 * every exit, notification and interrupt on the path's hypervisor.
 */
import { COUNTER_KINDS, type Counts, exitsOf, zeroCounts } from "../hypervisor/accounting.ts";
import { warmImage } from "./image.ts";
import { offsets, type OffsetSource, SECTOR } from "./offsets.ts";
import { type ImageRef, openSession, type Session } from "./paths.ts";
import { spread } from "./stats.ts";
import type { CellSpec, Row, WarmInfo, Workload } from "./types.ts";

export interface RunOptions {
  image: ImageRef;
  /** Bytes of the image the workloads touch (and the warming read covers). */
  workingSet: number;
  repeats: number;
  budgetMs: number;
  warmupMs: number;
  /** I/Os the warm-up must reach before measuring (V8 tiers a path up only after thousands of calls). */
  warmupOps?: number;
  /** Give up warming after this long (a 1 MiB 16-bit PIO read takes a good fraction of a second). */
  warmupMaxMs?: number;
}

/** Keep `w.qd` I/Os outstanding until `deadline`; returns how many completed. */
export async function drive(s: Session, w: Workload, next: OffsetSource, deadline: number): Promise<number> {
  const sectors = w.blockSize / SECTOR;
  if (s.loop) return s.loop(w.op, sectors, next, deadline);
  let ops = 0;
  let stop = false;
  const isRead = w.op === "read";
  const worker = async (slot: number): Promise<void> => {
    const data = s.bufs[slot]!;
    while (!stop) {
      const lba = next();
      const r = isRead ? s.read(lba, sectors, slot) : s.write(lba, data, slot);
      if (r instanceof Promise) await r;
      ops++;
      if (performance.now() >= deadline) stop = true;
    }
  };
  const workers: Promise<void>[] = [];
  for (let i = 0; i < w.qd; i++) workers.push(worker(i));
  await Promise.all(workers);
  return ops;
}

function addCounts(into: Counts, d: Counts): void {
  for (const k of COUNTER_KINDS) into[k] += d[k];
}

export function emptyRow(cell: CellSpec, status: Row["status"], note: string): Row {
  const { path, workload: w } = cell;
  const nan = { median: NaN, min: NaN, max: NaN };
  return {
    path: path.id,
    family: path.family,
    variant: path.variant,
    engine: path.engine,
    backend: path.backend,
    label: path.label,
    cache: cell.cache,
    op: w.op,
    pattern: w.pattern,
    blockSize: w.blockSize,
    qd: w.qd,
    status,
    note,
    repeats: 0,
    opsPerRepeat: [],
    iops: nan,
    mbps: nan,
    baseline: null,
    ratio: null,
    perIo: zeroCounts(),
    exitsPerIo: NaN,
    exitsPerMiB: NaN,
    notifyPerIo: NaN,
    irqPerIo: NaN,
    cyclesPerIo: NaN,
    storagePerIo: null,
    wallSeconds: 0,
    warm: null,
    ramAligned: null,
  };
}

/** A cell that did not finish: an exception escaped the path's own code, or it stopped making progress. */
export class CellFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CellFailure";
  }
}

/**
 * Exceptions thrown from event-loop callbacks inside a path (an event-channel upcall, a storage completion)
 * would otherwise end the whole run. While `catchStray` is active they are routed to the cell being measured,
 * which then fails; one arriving between cells (a broken path still draining) is kept for the run's notes.
 */
let strayTarget: ((e: unknown) => void) | null = null;
const stray: string[] = [];
/** Signatures (message and throw site) of errors already blamed on a cell: later copies come from that cell. */
const blamed = new Set<string>();
const onStray = (e: unknown): void => {
  const sig = describeError(e);
  if (strayTarget && !blamed.has(sig)) {
    blamed.add(sig);
    strayTarget(e);
  } else stray.push(sig);
};

function describeError(e: unknown): string {
  return (e as Error)?.stack?.split("\n").slice(0, 3).join(" | ") ?? String(e);
}

/**
 * Start routing uncaught exceptions to cells; returns a function that stops it and gives the stray ones. A
 * path that failed this way cannot be stopped (its storage completions keep arriving), so the same error
 * arriving again is not blamed on whatever cell runs next: it is kept with the stray ones.
 */
export function catchStray(): () => string[] {
  blamed.clear();
  process.on("uncaughtException", onStray);
  process.on("unhandledRejection", onStray);
  return () => {
    process.off("uncaughtException", onStray);
    process.off("unhandledRejection", onStray);
    return stray.splice(0);
  };
}

/** Run one cell; it fails on an exception escaping the path (see `catchStray`) or after `timeoutMs`. */
export async function runCellGuarded(cell: CellSpec, o: RunOptions, timeoutMs = 60_000): Promise<Row> {
  let timer: NodeJS.Timeout | undefined;
  const fatal = new Promise<never>((_, reject) => {
    strayTarget = (e: unknown) => reject(new CellFailure(`uncaught in the path: ${describeError(e)}`));
    timer = setTimeout(() => reject(new CellFailure(`no result after ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    return await Promise.race([runCell(cell, o), fatal]);
  } finally {
    clearTimeout(timer);
    strayTarget = null;
  }
}

export async function runCell(cell: CellSpec, o: RunOptions): Promise<Row> {
  const { workload: w } = cell;
  const session = await openSession(cell.path, w, cell.cache, o.image);
  try {
    // JIT warm-up on its own offsets: at least `warmupMs` and `warmupOps` I/Os, then 50 ms slices until two
    // slices in a row agree within 5% (V8 keeps tiering a long path up for half a second or more), at most
    // `warmupMaxMs` in all.
    const warmNext = offsets(w.pattern, w.blockSize, o.workingSet, 0x1234567);
    const w0 = performance.now();
    const minOps = o.warmupOps ?? 3000;
    const maxEnd = w0 + Math.max(o.warmupMs, o.warmupMaxMs ?? 1000);
    let warmOps = await drive(session, w, warmNext, w0 + o.warmupMs);
    let lastRate = 0;
    while (performance.now() < maxEnd) {
      const t = performance.now();
      const n = await drive(session, w, warmNext, Math.min(maxEnd, t + 50));
      warmOps += n;
      const rate = n / (performance.now() - t);
      const stable = lastRate > 0 && Math.abs(rate - lastRate) <= 0.05 * lastRate;
      lastRate = rate;
      if (warmOps >= minOps && stable) break;
    }
    let warm: WarmInfo | null = null;
    if (cell.cache === "warm" && cell.path.backend === "raw") warm = warmImage(o.image.path, o.workingSet);

    const next = offsets(w.pattern, w.blockSize, o.workingSet);
    const hv = session.hv;
    const total = zeroCounts();
    const opsPerRepeat: number[] = [];
    const iops: number[] = [];
    let storage = 0;
    let wall = 0;
    for (let r = 0; r < o.repeats; r++) {
      const before = hv?.acct.snapshot();
      const s0 = session.storageRequests();
      const t0 = performance.now();
      const ops = await drive(session, w, next, t0 + o.budgetMs);
      const seconds = (performance.now() - t0) / 1000;
      if (hv && before) addCounts(total, hv.acct.since(before));
      const s1 = session.storageRequests();
      if (s0 !== null && s1 !== null) storage += s1 - s0;
      opsPerRepeat.push(ops);
      iops.push(ops / seconds);
      wall += seconds;
    }
    const allOps = opsPerRepeat.reduce((a, b) => a + b, 0);
    const perIo = zeroCounts();
    for (const k of COUNTER_KINDS) perIo[k] = total[k] / allOps;
    const exitsPerIo = exitsOf(perIo);
    const iopsS = spread(iops);
    const toMb = (x: number) => (x * w.blockSize) / 1e6;
    return {
      ...emptyRow(cell, "ok", ""),
      note: undefined,
      repeats: o.repeats,
      opsPerRepeat,
      iops: iopsS,
      mbps: { median: toMb(iopsS.median), min: toMb(iopsS.min), max: toMb(iopsS.max) },
      perIo,
      exitsPerIo,
      exitsPerMiB: exitsPerIo * ((1 << 20) / w.blockSize),
      notifyPerIo: perIo.evtchnNotify,
      irqPerIo: perIo.irqInject,
      cyclesPerIo: hv ? hv.acct.model.cycles(perIo) : 0,
      storagePerIo: session.storageRequests() === null ? null : storage / allOps,
      wallSeconds: wall,
      warm,
      ramAligned: session.ramAligned,
    };
  } finally {
    // A path left broken by a failure may never drain: do not wait for it forever.
    await Promise.race([session.close(), new Promise((r) => setTimeout(r, 5000).unref())]);
  }
}
