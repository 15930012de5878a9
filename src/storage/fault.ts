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
 * applies.
 */
import { checkDiscard, checkIo } from "./check.ts";
import { type BlockBackend, IoError, type IoErrorCode, type IoOp } from "./types.ts";

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

export class FaultInjectingBackend implements BlockBackend {
  private armed: ArmedRule[] = [];
  private nextId = 1;
  /** Injected failures per op (delays are counted in `delayed`). */
  readonly injected: FaultCounts = { read: 0, write: 0, flush: 0, discard: 0 };
  delayed = 0;
  private sleeper: Int32Array | null = null;

  constructor(
    readonly inner: BlockBackend,
    rules: FaultRule[] = [],
  ) {
    for (const r of rules) this.addRule(r);
  }

  get sectorSize(): number {
    return this.inner.sectorSize;
  }
  get sectorCount(): number {
    return this.inner.sectorCount;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
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

  // ---- sync path ----

  readSync(sector: number, buf: Uint8Array): void {
    throwIf(checkIo(this, false, sector, buf));
    const d = this.decide("read", sector, buf.length / this.sectorSize);
    this.sleepSync(d.latencyMs);
    if (!d.fail) return this.inner.readSync(sector, buf);
    if (d.fail.sector > sector) this.inner.readSync(sector, this.head(buf, sector, d.fail.sector));
    throw this.failure("read", d.fail.sector, d.fail.code);
  }

  writeSync(sector: number, buf: Uint8Array): void {
    throwIf(checkIo(this, true, sector, buf));
    const d = this.decide("write", sector, buf.length / this.sectorSize);
    this.sleepSync(d.latencyMs);
    if (!d.fail) return this.inner.writeSync(sector, buf);
    if (d.fail.sector > sector) this.inner.writeSync(sector, this.head(buf, sector, d.fail.sector));
    throw this.failure("write", d.fail.sector, d.fail.code);
  }

  flushSync(): void {
    const d = this.decide("flush", 0, 0);
    this.sleepSync(d.latencyMs);
    if (!d.fail) return this.inner.flushSync();
    throw this.failure("flush", d.fail.sector, d.fail.code);
  }

  discardSync(sector: number, count: number): void {
    throwIf(checkDiscard(this, sector, count));
    const d = this.decide("discard", sector, count);
    this.sleepSync(d.latencyMs);
    if (!d.fail) return this.inner.discardSync(sector, count);
    if (d.fail.sector > sector) this.inner.discardSync(sector, d.fail.sector - sector);
    throw this.failure("discard", d.fail.sector, d.fail.code);
  }

  // ---- async path ----

  async read(sector: number, buf: Uint8Array): Promise<void> {
    throwIf(checkIo(this, false, sector, buf));
    const d = this.decide("read", sector, buf.length / this.sectorSize);
    if (d.latencyMs > 0) await sleep(d.latencyMs);
    if (!d.fail) return this.inner.read(sector, buf);
    if (d.fail.sector > sector) await this.inner.read(sector, this.head(buf, sector, d.fail.sector));
    throw this.failure("read", d.fail.sector, d.fail.code);
  }

  async write(sector: number, buf: Uint8Array): Promise<void> {
    throwIf(checkIo(this, true, sector, buf));
    const d = this.decide("write", sector, buf.length / this.sectorSize);
    if (d.latencyMs > 0) await sleep(d.latencyMs);
    if (!d.fail) return this.inner.write(sector, buf);
    if (d.fail.sector > sector) await this.inner.write(sector, this.head(buf, sector, d.fail.sector));
    throw this.failure("write", d.fail.sector, d.fail.code);
  }

  async flush(): Promise<void> {
    const d = this.decide("flush", 0, 0);
    if (d.latencyMs > 0) await sleep(d.latencyMs);
    if (!d.fail) return this.inner.flush();
    throw this.failure("flush", d.fail.sector, d.fail.code);
  }

  async discard(sector: number, count: number): Promise<void> {
    throwIf(checkDiscard(this, sector, count));
    const d = this.decide("discard", sector, count);
    if (d.latencyMs > 0) await sleep(d.latencyMs);
    if (!d.fail) return this.inner.discard(sector, count);
    if (d.fail.sector > sector) await this.inner.discard(sector, d.fail.sector - sector);
    throw this.failure("discard", d.fail.sector, d.fail.code);
  }

  close(): void {
    this.inner.close();
  }

  // ---- rules ----

  /** Which rules fire for a request of `count` sectors at `sector`; consumes their `times`. */
  private decide(op: IoOp, sector: number, count: number): Decision {
    const d: Decision = { latencyMs: 0 };
    if (this.armed.length === 0) return d;
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

  private head(buf: Uint8Array, sector: number, failSector: number): Uint8Array {
    return buf.subarray(0, (failSector - sector) * this.sectorSize);
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

function throwIf(err: IoError | undefined): void {
  if (err) throw err;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
