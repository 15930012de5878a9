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
 *
 * Per-request bookkeeping is kept off the allocator and out of Node's async machinery, because at queue depth
 * 32 it competes with the I/O itself for the main thread: completions wait in a reused array, notifications
 * are plain promise reactions (Node wraps every `queueMicrotask` callback in an async resource), and the async
 * engine runs each request on a pooled slot whose completion handlers are bound once.
 */
import { checkDiscard, checkVec } from "./check.ts";
import {
  type BlockBackend,
  type CallbackIo,
  type IoCallback,
  type IoCompletion,
  IoError,
  type IoEngine,
  type IoOp,
  type IoRequest,
} from "./types.ts";

const RESOLVED = Promise.resolve();

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

/**
 * A FIFO of completions, emptied as a whole by `reap`. The array is reused: truncating it (`length = 0`) is a
 * runtime call that also drops its backing store, which the next push must allocate again.
 */
class CompletionQueue {
  private readonly items: IoCompletion[] = [];
  private count = 0;
  get length(): number {
    return this.count;
  }
  push(c: IoCompletion): void {
    if (this.count < this.items.length) this.items[this.count] = c;
    else this.items.push(c);
    this.count++;
  }
  drainInto(out: IoCompletion[]): number {
    const items = this.items;
    const n = this.count;
    for (let i = 0; i < n; i++) {
      out.push(items[i]!);
      items[i] = REAPED; // holds no reference to an error the device has taken
    }
    this.count = 0;
    return n;
  }
}

const REAPED: IoCompletion = Object.freeze({ tag: -1 });

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
      void RESOLVED.then(this.notify);
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

/**
 * One request owned by the async engine, from `submit` until it completes: a copy of the caller's request
 * (callers reuse theirs) and the completion handlers, bound once per slot rather than once per request.
 */
class Slot {
  op: IoOp = "read";
  tag = 0;
  sector = 0;
  count = 0;
  readonly bufs: Uint8Array[] = [];
  readonly onDone: IoCallback;
  readonly onResolved: () => void;
  readonly onRejected: (e: unknown) => void;

  constructor(engine: AsyncEngine) {
    this.onDone = (err) => engine.finish(this, err, true);
    this.onResolved = () => engine.finish(this, undefined, false);
    this.onRejected = (e) => engine.finish(this, asIoError(e, this.sector), false);
  }

  load(req: IoRequest): void {
    this.op = req.op;
    this.tag = req.tag;
    this.sector = req.sector;
    this.count = req.count ?? 0;
    const src = req.bufs;
    const dst = this.bufs;
    const n = src ? src.length : 0;
    for (let i = 0; i < n; i++) dst[i] = src![i]!;
    while (dst.length > n) dst.pop(); // (assigning `length` would be a runtime call)
  }
}

/**
 * The backend's `CallbackIo`, when it is the backend's own: `startIo` must live on the same object as `read`
 * and `write` (the same class), so a wrapper or subclass that replaces read/write but inherits `startIo` still
 * has its own read/write called.
 */
function callbackIoOf(b: BlockBackend): CallbackIo | null {
  if (typeof (b as Partial<CallbackIo>).startIo !== "function") return null;
  const home = (key: string): object | null => {
    let o: object | null = b;
    while (o !== null && !Object.prototype.hasOwnProperty.call(o, key))
      o = Object.getPrototypeOf(o) as object | null;
    return o;
  };
  const at = home("startIo");
  return at === home("read") && at === home("write") ? (b as BlockBackend & CallbackIo) : null;
}

export class AsyncEngine implements IoEngine {
  readonly kind = "async" as const;
  onReady: (() => void) | null = null;
  readonly maxInflight: number;
  private readonly done = new CompletionQueue();
  private readonly callbackIo: CallbackIo | null;
  private readonly freeSlots: Slot[] = [];
  private readonly waiting: Slot[] = [];
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
    this.callbackIo = callbackIoOf(backend);
  }

  /** Submitted and not yet reaped (running, waiting for a slot, or completed awaiting `reap`). */
  get inflight(): number {
    return this.outstanding + this.done.length;
  }

  submit(req: IoRequest): void {
    this.outstanding++;
    const error = validateRequest(this.backend, req);
    if (error) {
      // Still completed from the event loop, never inside submit.
      const tag = req.tag;
      void RESOLVED.then(() => this.complete(tag, error, false));
      return;
    }
    const slot = this.freeSlots.pop() ?? new Slot(this);
    slot.load(req);
    if (this.running < this.maxInflight) this.start(slot);
    else this.waiting.push(slot);
  }

  reap(out: IoCompletion[]): number {
    return this.done.drainInto(out);
  }

  drain(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainers.push(resolve));
  }

  private start(slot: Slot): void {
    this.running++;
    const cb = this.callbackIo;
    try {
      if (cb !== null && (slot.op === "read" || slot.op === "write")) {
        cb.startIo(slot.op === "write", slot.sector, slot.bufs, slot.onDone);
      } else {
        this.perform(slot).then(slot.onResolved, slot.onRejected);
      }
    } catch (e) {
      // A backend that throws instead of failing the request still yields a completion (from the event loop).
      const error = asIoError(e, slot.sector);
      void RESOLVED.then(() => this.finish(slot, error, false));
    }
  }

  private perform(req: Slot): Promise<void> {
    const b = this.backend;
    const bufs = req.bufs;
    switch (req.op) {
      case "read":
        if (bufs.length === 1) return b.read(req.sector, bufs[0]!);
        return b.readv ? b.readv(req.sector, bufs) : this.eachBuffer(false, req.sector, bufs);
      case "write":
        if (bufs.length === 1) return b.write(req.sector, bufs[0]!);
        return b.writev ? b.writev(req.sector, bufs) : this.eachBuffer(true, req.sector, bufs);
      case "flush":
        return b.flush();
      case "discard":
        return b.discard(req.sector, req.count);
    }
  }

  /** Scatter-gather on a backend without vectored I/O: one buffer after the other, stopping at a failure. */
  private async eachBuffer(write: boolean, sector: number, bufs: readonly Uint8Array[]): Promise<void> {
    const b = this.backend;
    for (const buf of bufs) {
      await (write ? b.write(sector, buf) : b.read(sector, buf));
      sector += buf.length / b.sectorSize;
    }
  }

  /** A running request ended: start the next waiting one in its place, then complete it. */
  finish(slot: Slot, error: IoError | undefined, fromHost: boolean): void {
    const tag = slot.tag;
    this.running--;
    this.freeSlots.push(slot);
    if (this.waitingHead < this.waiting.length) {
      const next = this.waiting[this.waitingHead++]!;
      if (this.waitingHead === this.waiting.length) {
        while (this.waiting.length > 0) this.waiting.pop();
        this.waitingHead = 0;
      }
      this.start(next);
    }
    this.complete(tag, error, fromHost);
  }

  /**
   * Queue a completion and make sure `onReady` follows. Completions of host I/O arrive one libuv callback
   * after the other in the poll phase, with microtasks run between them: they are announced once, in the
   * check phase of the same turn of the event loop, so a burst of them is one `onReady` (as a driver reaps an
   * io_uring completion queue once per wakeup). Completions that need no event loop (a memory medium's settled
   * promises, refused requests) are announced in a microtask, which costs no extra turn of the loop.
   */
  private complete(tag: number, error: IoError | undefined, fromHost: boolean): void {
    this.outstanding--;
    this.done.push(error ? { tag, error } : { tag });
    if (!this.notifyPending) {
      this.notifyPending = true;
      if (fromHost) setImmediate(this.notify);
      else void RESOLVED.then(this.notify);
    }
    if (this.outstanding === 0 && this.drainers.length > 0) {
      const ds = this.drainers;
      this.drainers = [];
      for (const d of ds) d();
    }
  }

  private readonly notify = (): void => {
    this.notifyPending = false;
    if (this.done.length > 0) this.onReady?.();
  };
}
