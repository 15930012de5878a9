/**
 * The two ways a device model's requests reach a `BlockBackend`, behind one `IoEngine` interface (the split
 * Firecracker and cloud-hypervisor make between their sync and io_uring block engines). The engines own that
 * split, so a medium implements its I/O once (types.ts):
 *
 * - `SyncEngine` performs each request inside `submit` with the medium's sync methods. On a warm page cache
 *   this is the fastest path Node has (a positional read straight into guest memory), and it makes a device's
 *   completion deterministic: the task file / ring response is ready when the exit returns.
 * - `AsyncEngine` completes each request later from the event loop, in whatever order the medium finishes,
 *   like a disk with a queue (NCQ, a blkif ring with many requests outstanding). A medium with the `startIo`
 *   capability runs the request itself (a raw image's libuv requests); for one without, the engine runs its sync
 *   methods from a microtask after `submit` returns. At most `maxInflight` run at once; more are queued in
 *   submission order.
 *
 * Both validate every request first and only there (op, buffer sizes, range, read-only: the media's
 * precondition), and report a bad one as an error completion, never a throw: bad guest input must end as an
 * ATA ABRT or a BLKIF_RSP_ERROR, not a crash.
 *
 * Per-request bookkeeping is kept off the allocator and out of Node's async machinery, because at queue depth
 * 32 it competes with the I/O itself for the main thread: completions wait in a reused array, notifications
 * are plain promise reactions (Node wraps every `queueMicrotask` callback in an async resource), and the async
 * engine runs each request on a pooled slot whose completion handler is bound once.
 */
import { checkDiscard, checkVec } from "./check.ts";
import {
  type BlockBackend,
  type IoCallback,
  type IoCompletion,
  IoError,
  type IoEngine,
  type IoOp,
  type IoRequest,
  type MediumRequest,
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

const NO_BUFFERS: readonly Uint8Array[] = [];

/**
 * Run a validated request on `backend` with its sync methods; the error it failed with, or undefined. Wrappers
 * that hand a request on to the medium they wrap use it too.
 */
export function performSync(backend: BlockBackend, req: IoRequest | MediumRequest): IoError | undefined {
  try {
    switch (req.op) {
      case "read":
        backend.read(req.sector, req.bufs ?? NO_BUFFERS);
        break;
      case "write":
        backend.write(req.sector, req.bufs ?? NO_BUFFERS);
        break;
      case "flush":
        backend.flush();
        break;
      case "discard":
        backend.discard(req.sector, req.count ?? 0);
        break;
    }
  } catch (e) {
    return asIoError(e, req.sector);
  }
  return undefined;
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
    const error = validateRequest(this.backend, req) ?? performSync(this.backend, req);
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
 * (callers reuse theirs), handed to the medium's `startIo` as is, and its completion handler, bound once per
 * slot rather than once per request.
 */
class Slot implements MediumRequest {
  op: IoOp = "read";
  tag = 0;
  sector = 0;
  count = 0;
  readonly bufs: Uint8Array[] = [];
  readonly onDone: IoCallback;

  constructor(engine: AsyncEngine) {
    this.onDone = (err) => engine.finish(this, err, true);
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

export class AsyncEngine implements IoEngine {
  readonly kind = "async" as const;
  onReady: (() => void) | null = null;
  readonly maxInflight: number;
  /** Whether the medium runs requests itself (`startIo`), or the engine runs its sync methods. */
  readonly usesStartIo: boolean;
  private readonly done = new CompletionQueue();
  private readonly freeSlots: Slot[] = [];
  private readonly waiting: Slot[] = [];
  private waitingHead = 0;
  /** Started requests the engine runs itself with the sync methods, at the next microtask. */
  private readonly deferred: Slot[] = [];
  private deferredPending = false;
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
    this.usesStartIo = typeof backend.startIo === "function";
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
    if (!this.usesStartIo) {
      this.deferred.push(slot);
      if (!this.deferredPending) {
        this.deferredPending = true;
        void RESOLVED.then(this.runDeferred);
      }
      return;
    }
    try {
      this.backend.startIo!(slot, slot.onDone);
    } catch (e) {
      // A medium that throws instead of reporting the failure still yields a completion (from the event loop).
      const error = asIoError(e, slot.sector);
      void RESOLVED.then(() => this.finish(slot, error, false));
    }
  }

  /**
   * Run the deferred requests with the medium's sync methods, in the order they were started; requests that
   * take a freed place meanwhile run in the same pass.
   */
  private readonly runDeferred = (): void => {
    const q = this.deferred;
    for (let i = 0; i < q.length; i++) {
      const slot = q[i]!;
      this.finish(slot, performSync(this.backend, slot), false);
    }
    while (q.length > 0) q.pop();
    this.deferredPending = false;
  };

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
   * io_uring completion queue once per wakeup). Completions that need no event loop (requests the engine ran
   * with the sync methods, refused requests) are announced in a microtask, which costs no extra turn of the loop.
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
