/**
 * The two ways a device model's requests reach a `BlockBackend`, behind one `IoEngine` interface (the split
 * Firecracker and cloud-hypervisor make between their sync and io_uring block engines):
 *
 * - `SyncEngine` performs each request inside `submit` with the backend's sync methods. On a warm page cache
 *   this is the fastest path Node has (a positional read straight into guest memory), and it makes a device's
 *   completion deterministic: the task file / ring response is ready when the exit returns.
 * - `AsyncEngine` starts each request with the backend's async methods and completes it later from the event
 *   loop, in whatever order the backend finishes, like a disk with a queue (NCQ, a blkif ring with many
 *   requests outstanding). At most `maxInflight` run at once; more are queued in submission order.
 *
 * Both validate every request first (op, buffer sizes, range, read-only) and report a bad one as an error
 * completion, never a throw: bad guest input must end as an ATA ABRT or a BLKIF_RSP_ERROR, not a crash.
 * Scatter-gather requests use the backend's vectored methods (one preadv/pwritev) when it has them.
 */
import { checkDiscard, checkVec } from "./check.ts";
import { type BlockBackend, type IoCompletion, IoError, type IoEngine, type IoRequest } from "./types.ts";

/** The error for a request `backend` must not run, or undefined when it is well-formed and in range. */
export function validateRequest(backend: BlockBackend, req: IoRequest): IoError | undefined {
  const { op, sector } = req;
  switch (op) {
    case "read":
    case "write":
      return checkVec(backend, op === "write", sector, req.bufs ?? []);
    case "flush":
      return undefined;
    case "discard":
      return checkDiscard(backend, sector, req.count ?? 0);
    default:
      return new IoError("EINVAL", `unknown request op ${String(op)}`, sector);
  }
}

/** Any failure as an `IoError` (a backend bug or a non-I/O exception still becomes an error completion). */
function asIoError(e: unknown, sector: number): IoError {
  return e instanceof IoError
    ? e
    : new IoError("EIO", `backend failure: ${(e as Error)?.message ?? String(e)}`, sector);
}

/** A FIFO of completions, emptied as a whole by `reap`. */
class CompletionQueue {
  private items: IoCompletion[] = [];
  get length(): number {
    return this.items.length;
  }
  push(c: IoCompletion): void {
    this.items.push(c);
  }
  drainInto(out: IoCompletion[]): number {
    const items = this.items;
    const n = items.length;
    for (let i = 0; i < n; i++) out.push(items[i]!);
    items.length = 0;
    return n;
  }
}

export class SyncEngine implements IoEngine {
  readonly kind = "sync" as const;
  onReady: (() => void) | null = null;
  private readonly done = new CompletionQueue();
  private notifyPending = false;

  constructor(readonly backend: BlockBackend) {}

  /** Completed and not yet reaped (the sync engine has nothing else in flight). */
  get inflight(): number {
    return this.done.length;
  }

  submit(req: IoRequest): void {
    const error = validateRequest(this.backend, req) ?? this.perform(req);
    this.done.push(error ? { tag: req.tag, error } : { tag: req.tag });
    // The completion is ready now; a caller that reaps right after submit never sees onReady. One driven by
    // onReady alone is told once, after the current exit, if something is still unreaped then.
    if (this.onReady && !this.notifyPending) {
      this.notifyPending = true;
      queueMicrotask(this.notify);
    }
  }

  private readonly notify = (): void => {
    this.notifyPending = false;
    if (this.done.length > 0) this.onReady?.();
  };

  private perform(req: IoRequest): IoError | undefined {
    const b = this.backend;
    let sector = req.sector;
    try {
      switch (req.op) {
        case "read": {
          const bufs = req.bufs!;
          if (bufs.length > 1 && b.readvSync) b.readvSync(sector, bufs);
          else
            for (const buf of bufs) {
              b.readSync(sector, buf);
              sector += buf.length / b.sectorSize;
            }
          break;
        }
        case "write": {
          const bufs = req.bufs!;
          if (bufs.length > 1 && b.writevSync) b.writevSync(sector, bufs);
          else
            for (const buf of bufs) {
              b.writeSync(sector, buf);
              sector += buf.length / b.sectorSize;
            }
          break;
        }
        case "flush":
          b.flushSync();
          break;
        case "discard":
          b.discardSync(sector, req.count ?? 0);
          break;
      }
    } catch (e) {
      return asIoError(e, sector);
    }
    return undefined;
  }

  reap(out: IoCompletion[]): number {
    return this.done.drainInto(out);
  }

  drain(): Promise<void> {
    return Promise.resolve();
  }
}

export interface AsyncEngineOptions {
  /** Requests running on the backend at once (default 32); more wait in submission order. */
  maxInflight?: number;
}

export class AsyncEngine implements IoEngine {
  readonly kind = "async" as const;
  onReady: (() => void) | null = null;
  readonly maxInflight: number;
  private readonly done = new CompletionQueue();
  private readonly waiting: IoRequest[] = [];
  private waitingHead = 0;
  private running = 0;
  /** Submitted and not yet completed (running or waiting). */
  private outstanding = 0;
  private notifyPending = false;
  private drainers: (() => void)[] = [];

  constructor(
    readonly backend: BlockBackend,
    options: AsyncEngineOptions = {},
  ) {
    const max = options.maxInflight ?? 32;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`maxInflight must be >= 1, got ${max}`);
    this.maxInflight = max;
  }

  /** Submitted and not yet reaped (running, waiting for a slot, or completed awaiting `reap`). */
  get inflight(): number {
    return this.outstanding + this.done.length;
  }

  submit(req: IoRequest): void {
    // Copy: callers may reuse one request object (and its bufs array) for the next submission.
    const own: IoRequest = {
      op: req.op,
      tag: req.tag,
      sector: req.sector,
      count: req.count,
      bufs: req.bufs?.slice(),
    };
    this.outstanding++;
    const error = validateRequest(this.backend, own);
    if (error) {
      // Still completed from the event loop, never inside submit.
      queueMicrotask(() => this.complete(own.tag, error));
      return;
    }
    if (this.running < this.maxInflight) this.start(own);
    else this.waiting.push(own);
  }

  reap(out: IoCompletion[]): number {
    return this.done.drainInto(out);
  }

  drain(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainers.push(resolve));
  }

  private start(req: IoRequest): void {
    this.running++;
    let p: Promise<void>;
    try {
      p = this.perform(req);
    } catch (e) {
      p = Promise.reject(e); // a backend that throws instead of rejecting still yields a completion
    }
    p.then(
      () => this.finish(req.tag, undefined),
      (e: unknown) => this.finish(req.tag, asIoError(e, req.sector)),
    );
  }

  private perform(req: IoRequest): Promise<void> {
    const b = this.backend;
    switch (req.op) {
      case "read": {
        const bufs = req.bufs!;
        if (bufs.length === 1) return b.read(req.sector, bufs[0]!);
        return b.readv ? b.readv(req.sector, bufs) : this.eachBuffer(false, req.sector, bufs);
      }
      case "write": {
        const bufs = req.bufs!;
        if (bufs.length === 1) return b.write(req.sector, bufs[0]!);
        return b.writev ? b.writev(req.sector, bufs) : this.eachBuffer(true, req.sector, bufs);
      }
      case "flush":
        return b.flush();
      case "discard":
        return b.discard(req.sector, req.count ?? 0);
    }
  }

  /** Scatter-gather on a backend without vectored I/O: one buffer after the other, stopping at a failure. */
  private async eachBuffer(write: boolean, sector: number, bufs: Uint8Array[]): Promise<void> {
    const b = this.backend;
    for (const buf of bufs) {
      await (write ? b.write(sector, buf) : b.read(sector, buf));
      sector += buf.length / b.sectorSize;
    }
  }

  private finish(tag: number, error: IoError | undefined): void {
    this.running--;
    if (this.waitingHead < this.waiting.length) {
      const next = this.waiting[this.waitingHead++]!;
      if (this.waitingHead === this.waiting.length) {
        this.waiting.length = 0;
        this.waitingHead = 0;
      }
      this.start(next);
    }
    this.complete(tag, error);
  }

  private complete(tag: number, error: IoError | undefined): void {
    this.outstanding--;
    this.done.push(error ? { tag, error } : { tag });
    if (!this.notifyPending) {
      this.notifyPending = true;
      queueMicrotask(this.notify);
    }
    if (this.outstanding === 0 && this.drainers.length > 0) {
      const ds = this.drainers;
      this.drainers = [];
      for (const d of ds) d();
    }
  }

  /** One onReady per batch of completions that land in the same turn of the event loop. */
  private readonly notify = (): void => {
    this.notifyPending = false;
    if (this.done.length > 0) this.onReady?.();
  };
}
