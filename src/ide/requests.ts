/**
 * The storage requests of one drive. A command has at most one batch of requests outstanding (one read, one
 * write, one flush, or all the discards of a TRIM); its continuation runs when the whole batch is done. A reset
 * abandons the batch: completions that arrive for it later carry tags outside the current batch and are dropped.
 * With the sync engine every completion is ready when `submit` returns, so a continuation runs inside the exit;
 * with the async engine it runs from the event loop, when the engine calls `onReady`.
 *
 * Continuations receive the owner (the drive's ATA core) back, as QEMU's completion callbacks receive their
 * opaque pointer, so that a protocol can pass a module-level function instead of allocating a closure per command.
 */

import type { IoCompletion, IoEngine, IoError, IoRequest } from "../storage/types.ts";

export type IoContinuation<O> = (owner: O, err: IoError | undefined) => void;

/** What a drive does with a failed batch (QEMU's BlockErrorAction, as blk_get_error_action resolves rerror/werror). */
export type IoErrorAction = "report" | "ignore" | "stop";

/**
 * A drive's error policy (QEMU's rerror/werror). Without one, every failure is reported to the command (the
 * drive's ATA error). With "ignore" the command goes on as if the request had succeeded; with "stop" the batch
 * is held, the command stays where it was (BSY for a flush or PIO, DRQ for DMA), and `retry` submits the same
 * batch again, as QEMU's ide_restart_cb re-runs the request when the VM continues, or, for a batch submitted
 * with a `restart`, lets the protocol start its command over (DMA: QEMU's ide_restart_dma).
 */
export interface IoErrorPolicy {
  /** What to do with `err`, which failed a batch of `op` requests (told once per failed batch). */
  action(op: IoRequest["op"], err: IoError): IoErrorAction;
  /** The batch was held ("stop"); `retry()` submits it again (a no-op if a reset abandoned it meanwhile). */
  held(retry: () => void): void;
}

export class StorageRequests<O> {
  private tagSeq = 0;
  /** Completions with tags in [batchFirst, batchLast] belong to `cont`. */
  private batchFirst = 1;
  private batchLast = 0;
  private batchLeft = 0;
  private batchError: IoError | undefined = undefined;
  private cont: IoContinuation<O> | null = null;
  private readonly comps: IoCompletion[] = [];
  /** One request object, refilled for each submit (engines copy what they keep). */
  private readonly req: IoRequest = { op: "read", tag: 0, sector: 0 };
  /** The outstanding batch's op, and its ranges when it is a TRIM (kept for a retry under the error policy). */
  private batchOp: IoRequest["op"] = "read";
  private batchRanges: readonly number[] = [];
  /** How a held batch is retried from the device's protocol instead of as it was (see `submit`). */
  private batchRestart: ((owner: O) => void) | null = null;

  constructor(
    readonly engine: IoEngine,
    private readonly owner: O,
    /** rerror/werror; null: every failure is reported to the command. */
    readonly errorPolicy: IoErrorPolicy | null = null,
  ) {
    // Every submit is followed by a reap, which is all a sync engine needs (its completions are ready when
    // submit returns); only the async engine must call back from the event loop.
    if (engine.kind !== "sync") engine.onReady = () => this.reap();
  }

  /** A batch is outstanding. */
  get pending(): boolean {
    return this.cont !== null;
  }

  /**
   * One request as a batch of its own. `restart`: what a retry under the error policy runs instead of submitting
   * the batch again (the DMA protocol re-runs its command, as QEMU's ide_restart_dma does).
   */
  submit(
    op: IoRequest["op"],
    sector: number,
    bufs: Uint8Array[] | undefined,
    cont: IoContinuation<O>,
    count?: number,
    restart: ((owner: O) => void) | null = null,
  ): void {
    const tag = ++this.tagSeq;
    this.batchRestart = restart;
    this.batchFirst = tag;
    this.batchLast = tag;
    this.batchLeft = 1;
    this.batchError = undefined;
    this.cont = cont;
    this.batchOp = op;
    const r = this.req;
    r.op = op;
    r.tag = tag;
    r.sector = sector;
    r.bufs = bufs;
    r.count = count;
    this.engine.submit(r);
    this.reap();
  }

  /** Discards of `ranges` (pairs of sector, count) as one batch; `cont` runs when the last one is done. */
  discard(
    ranges: readonly number[],
    cont: IoContinuation<O>,
    restart: ((owner: O) => void) | null = null,
  ): void {
    const n = ranges.length / 2;
    this.batchRestart = restart;
    const first = this.tagSeq + 1;
    this.tagSeq += n;
    this.batchFirst = first;
    this.batchLast = this.tagSeq;
    this.batchLeft = n;
    this.batchError = undefined;
    this.cont = cont;
    this.batchOp = "discard";
    this.batchRanges = ranges;
    for (let i = 0; i < ranges.length; i += 2) {
      this.engine.submit({ op: "discard", tag: first + i / 2, sector: ranges[i]!, count: ranges[i + 1]! });
    }
    this.reap();
  }

  /** A write nobody waits for (blocks a reset must not drop): its tag lies outside any batch. */
  submitDetached(sector: number, bufs: Uint8Array[]): void {
    this.engine.submit({ op: "write", tag: ++this.tagSeq, sector, bufs });
    this.reap();
  }

  /** Forget the outstanding batch, if any; true when there was one (its requests may still touch their buffers). */
  abandon(): boolean {
    if (!this.cont) return false;
    this.cont = null;
    this.batchFirst = this.tagSeq + 1;
    this.batchLast = this.tagSeq;
    return true;
  }

  /** Take completions; run the continuation when its whole batch is done. */
  reap(): void {
    // The list is left empty after every reap (pop(): `length = 0` is a runtime call in V8, on every command).
    const list = this.comps;
    if (this.engine.reap(list) === 0) return;
    let done = false;
    for (const c of list) {
      if (c.tag < this.batchFirst || c.tag > this.batchLast || !this.cont) continue;
      if (c.error && !this.batchError) this.batchError = c.error;
      if (--this.batchLeft === 0) done = true;
    }
    while (list.length > 0) list.pop();
    if (done) {
      const cont = this.cont!;
      let err = this.batchError;
      this.batchError = undefined;
      if (err && this.errorPolicy) {
        const action = this.errorPolicy.action(this.batchOp, err);
        if (action === "ignore") err = undefined;
        else if (action === "stop") {
          // The continuation stays: the command is still in progress until the retry completes it.
          const batch = this.batchFirst;
          this.errorPolicy.held(() => this.retry(cont, batch));
          return;
        }
      }
      this.cont = null;
      cont(this.owner, err);
    }
  }

  /** Submit a held batch again (QEMU's ide_restart_cb), unless a reset abandoned it meanwhile. */
  private retry(cont: IoContinuation<O>, batch: number): void {
    if (this.cont !== cont || this.batchFirst !== batch) return;
    const restart = this.batchRestart;
    if (restart) {
      // The protocol starts its command over and submits a batch of its own.
      this.abandon();
      restart(this.owner);
    } else if (this.batchOp === "discard") this.discard(this.batchRanges, cont);
    else {
      const r = this.req;
      this.submit(r.op, r.sector, r.bufs, cont, r.count);
    }
  }
}
