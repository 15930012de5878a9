/**
 * A backend wrapper that fails or delays chosen requests, to drive a device model's error paths the way a
 * failing disk would (ATA ERR/ABRT with the LBA of the bad sector in the task file, BLKIF_RSP_ERROR).
 *
 * A rule matches requests of its `op` that touch sectors [from, to) (from inclusive, to exclusive; defaults
 * 0 and the end of the disk; flush has no range and ignores them). What a match does:
 * - fail with `code` (EIO if not given) — unless the rule only has `latencyMs`, which makes it a pure delay;
 * - a failing read/write/discard first performs the sectors before the first failing one (max(request start,
 *   from)) and then fails with `sector` = that sector, as a disk that transferred up to a bad block would;
 * - `latencyMs` delays the request. On the async path this is a timer; on the sync path the calling thread is
 *   blocked for that long (a slow synchronous disk stalls the vCPU that is waiting on it);
 * - `times`: the rule fires that many times, then disarms (removes itself). Unlimited when absent.
 * When several fault rules match, the one failing at the lowest sector fires; the longest matching latency
 * applies. A scatter-gather request is one request: its buffers are consecutive sectors.
 *
 * The wrapper has the async capability (`startIo`) whatever it wraps, so that the async engine's latency is a
 * timer rather than a blocked event loop; the request then goes on to the wrapped medium's `startIo` when it
 * has one, else to its sync methods (from the event loop, never inside `startIo`).
 */
import { performSync } from "./engine.ts";
import { WrappedMedium } from "./wrapped.ts";
import {
  type BlockBackend,
  type IoCallback,
  IoError,
  type IoErrorCode,
  type IoOp,
  type MediumRequest,
} from "./types.ts";

export interface FaultRule {
  op: IoOp;
  /** First sector of the faulty range (inclusive). Default 0. */
  from?: number;
  /** End of the faulty range (exclusive). Default: end of the disk. */
  to?: number;
  /** Error to report. Default EIO, or no error at all when the rule only has `latencyMs`. */
  code?: IoErrorCode;
  /** Fire this many times, then disarm. */
  times?: number;
  /** Delay before the request is performed (or fails). */
  latencyMs?: number;
}

/** A rule in force, with how often it has fired. */
export interface ArmedRule extends FaultRule {
  readonly id: number;
  fired: number;
}

export type FaultCounts = Record<IoOp, number>;

interface Decision {
  /** Latency to apply, ms (0 for none). */
  latencyMs: number;
  /** The failure, if any: first failing sector and code. */
  fail?: { sector: number; code: IoErrorCode };
}

export class FaultInjectingBackend extends WrappedMedium implements BlockBackend {
  private armed: ArmedRule[] = [];
  private nextId = 1;
  /** Injected failures per op (delays are counted in `delayed`). */
  readonly injected: FaultCounts = { read: 0, write: 0, flush: 0, discard: 0 };
  delayed = 0;
  private sleeper: Int32Array | null = null;

  constructor(inner: BlockBackend, rules: FaultRule[] = []) {
    super(inner);
    for (const r of rules) this.addRule(r);
  }

  get describe(): string {
    return `fault(${this.inner.describe})`;
  }

  /** Total injected failures, all ops. */
  get injectedTotal(): number {
    return this.injected.read + this.injected.write + this.injected.flush + this.injected.discard;
  }

  get rules(): readonly ArmedRule[] {
    return this.armed;
  }

  addRule(rule: FaultRule): ArmedRule {
    if (rule.times !== undefined && !(Number.isSafeInteger(rule.times) && rule.times > 0)) {
      throw new RangeError(`fault rule times must be a positive integer, got ${rule.times}`);
    }
    const armed: ArmedRule = { ...rule, id: this.nextId++, fired: 0 };
    this.armed.push(armed);
    return armed;
  }

  removeRule(rule: ArmedRule): void {
    this.armed = this.armed.filter((r) => r.id !== rule.id);
  }

  clearRules(): void {
    this.armed = [];
  }

  // ---- sync I/O ----

  override read(sector: number, bufs: readonly Uint8Array[]): void {
    this.syncIo({ op: "read", sector, count: 0, bufs });
  }

  override write(sector: number, bufs: readonly Uint8Array[]): void {
    this.syncIo({ op: "write", sector, count: 0, bufs });
  }

  override flush(): void {
    this.syncIo({ op: "flush", sector: 0, count: 0, bufs: NO_BUFFERS });
  }

  override discard(sector: number, count: number): void {
    this.syncIo({ op: "discard", sector, count, bufs: NO_BUFFERS });
  }

  private syncIo(req: MediumRequest): void {
    const d = this.decide(req);
    this.sleepSync(d.latencyMs);
    const part = this.passed(req, d);
    const err = part && performSync(this.inner, part);
    if (err) throw err;
    if (d.fail) throw this.failure(req.op, d.fail.sector, d.fail.code);
  }

  // ---- asynchronous submission ----

  startIo(req: MediumRequest, done: IoCallback): void {
    const d = this.decide(req);
    const part = this.passed(req, d);
    const failure = d.fail && this.failure(req.op, d.fail.sector, d.fail.code);
    const inner = this.inner;
    const go = (): void => {
      if (part && inner.startIo) inner.startIo(part, (err) => done(err ?? failure));
      else done((part && performSync(inner, part)) || failure);
    };
    if (d.latencyMs > 0) setTimeout(go, d.latencyMs);
    else if (part && inner.startIo) go();
    else void RESOLVED.then(go);
  }

  // ---- rules ----

  /** Which rules fire for `req`; consumes their `times`. */
  private decide(req: MediumRequest): Decision {
    const d: Decision = { latencyMs: 0 };
    if (this.armed.length === 0) return d;
    const { op, sector } = req;
    const count = op === "discard" ? req.count : sectorsOf(req.bufs, this.sectorSize);
    let failRule: ArmedRule | undefined;
    const fired: ArmedRule[] = [];
    for (const r of this.armed) {
      if (r.op !== op) continue;
      let first = sector;
      if (op !== "flush") {
        const from = r.from ?? 0;
        const to = r.to ?? Number.POSITIVE_INFINITY;
        first = Math.max(sector, from);
        if (first >= Math.min(sector + count, to)) continue; // no overlap
      }
      const fails = r.code !== undefined || r.latencyMs === undefined;
      if (fails) {
        if (!d.fail || first < d.fail.sector) {
          d.fail = { sector: first, code: r.code ?? "EIO" };
          failRule = r;
        }
      } else {
        fired.push(r);
      }
      if (r.latencyMs !== undefined) d.latencyMs = Math.max(d.latencyMs, r.latencyMs);
    }
    if (failRule) fired.push(failRule);
    if (fired.length > 0) {
      for (const r of fired) r.fired++;
      this.armed = this.armed.filter((r) => r.times === undefined || r.fired < r.times);
    }
    if (d.fail) this.injected[op]++;
    if (d.latencyMs > 0) this.delayed++;
    return d;
  }

  /**
   * What of `req` reaches the wrapped medium: all of it, or for a failing read/write/discard the sectors before
   * the first failing one (null when there are none, and for a failing flush).
   */
  private passed(req: MediumRequest, d: Decision): MediumRequest | null {
    if (!d.fail) return req;
    const n = d.fail.sector - req.sector;
    if (req.op === "flush" || n <= 0) return null;
    if (req.op === "discard") return { op: req.op, sector: req.sector, count: n, bufs: NO_BUFFERS };
    const bufs: Uint8Array[] = [];
    let left = n * this.sectorSize;
    for (const buf of req.bufs) {
      if (left <= 0) break;
      bufs.push(buf.length <= left ? buf : buf.subarray(0, left));
      left -= buf.length;
    }
    return { op: req.op, sector: req.sector, count: 0, bufs };
  }

  private failure(op: IoOp, sector: number, code: IoErrorCode): IoError {
    return new IoError(code, `injected ${code} on ${op} at sector ${sector} of ${this.describe}`, sector);
  }

  private sleepSync(ms: number): void {
    if (ms <= 0) return;
    this.sleeper ??= new Int32Array(new SharedArrayBuffer(4));
    Atomics.wait(this.sleeper, 0, 0, ms);
  }
}

const RESOLVED = Promise.resolve();
const NO_BUFFERS: readonly Uint8Array[] = [];

function sectorsOf(bufs: readonly Uint8Array[], sectorSize: number): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n / sectorSize;
}
