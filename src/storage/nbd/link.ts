/**
 * The main thread's end of a connection whose socket lives in a worker (socket-worker.ts): two byte rings in
 * shared memory and a few Atomics words. Bytes are copied once each way on this side (caller buffer -> outgoing
 * ring, incoming ring -> caller buffer); the worker hands ring memory to the socket as is. Memory is bounded by
 * the rings whatever the size of a transfer: a large request streams through them.
 *
 * Two ways to wait: `waitSync` blocks this thread with `Atomics.wait` until the worker reports a change (or a
 * timeout), for the medium's synchronous methods; `arm` asks for one `onProgress` call from the event loop at
 * the worker's next change (`Atomics.waitAsync`), for requests started with `startIo`.
 */
import type { Worker } from "node:worker_threads";

import { workerThreads } from "../builtins.ts";
import {
  CTL,
  CTL_WORDS,
  ERR_BYTES,
  MSG_CLOSE,
  MSG_SEND,
  MSG_SPACE,
  LINGER_MS,
  READ_BYTES,
  SOCKET_WORKER_SOURCE,
  STATE_CLOSED,
  STATE_CONNECTING,
  STATE_FAILED,
  STATE_OPEN,
  type SocketWorkerData,
} from "./socket-worker.ts";
import type { NbdTarget } from "./url.ts";

/** `Atomics.waitAsync` (ES2024, in every Node this package supports; the project's TypeScript lib predates it). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
    ):
      | { async: false; value: "not-equal" | "timed-out" }
      | { async: true; value: Promise<"ok" | "timed-out"> };
  }
).waitAsync;

/** Default ring sizes: enough for a 4 MiB request to be in flight each way without waiting for room. */
export const RING_BYTES = 4 * 1024 * 1024;

export type LinkState = "connecting" | "open" | "closed" | "failed";

export class SocketLink {
  private readonly ctl: Int32Array;
  private readonly inRing: Uint8Array;
  private readonly outRing: Uint8Array;
  private readonly errBytes: Uint8Array;
  private readonly worker: Worker;
  /** Bytes consumed from / produced into the rings (this side's positions; the shared words follow). */
  private inTail = 0;
  private outHead = 0;
  private refs = 0;
  private terminated = false;
  /** Called from the event loop after `arm`, when the worker reports a change. */
  onProgress: (() => void) | null = null;

  constructor(target: NbdTarget, ringBytes = RING_BYTES) {
    if ((ringBytes & (ringBytes - 1)) !== 0 || ringBytes < 4096)
      throw new RangeError("ring size must be a power of two >= 4096");
    const ctl = new SharedArrayBuffer(CTL_WORDS * 4);
    const inRing = new SharedArrayBuffer(ringBytes);
    const outRing = new SharedArrayBuffer(ringBytes);
    const err = new SharedArrayBuffer(ERR_BYTES);
    this.ctl = new Int32Array(ctl);
    this.inRing = new Uint8Array(inRing);
    this.outRing = new Uint8Array(outRing);
    this.errBytes = new Uint8Array(err);
    const data: SocketWorkerData = {
      ctl,
      inRing,
      outRing,
      err,
      layout: CTL,
      states: { open: STATE_OPEN, closed: STATE_CLOSED, failed: STATE_FAILED },
      msgs: { send: MSG_SEND, space: MSG_SPACE, close: MSG_CLOSE },
      lingerMs: LINGER_MS,
      readBytes: READ_BYTES,
      target: { ...target },
    };
    this.worker = new (workerThreads().Worker)(SOCKET_WORKER_SOURCE, {
      eval: true,
      workerData: data,
      stdout: false,
      stderr: false,
    });
    // An open medium does not keep the process alive by itself (as an open file does not); requests do (`ref`).
    this.worker.unref();
    this.worker.on("error", () => {
      // A crash of the worker is a lost connection: report it through the shared state like any other.
      if (Atomics.load(this.ctl, CTL.STATE) <= STATE_OPEN) {
        const text = new TextEncoder().encode("the connection's worker thread failed");
        this.errBytes.set(text);
        Atomics.store(this.ctl, CTL.ERR_LEN, text.length);
        Atomics.store(this.ctl, CTL.STATE, STATE_CLOSED);
        Atomics.add(this.ctl, CTL.SEQ, 1);
        Atomics.notify(this.ctl, CTL.SEQ);
        this.onProgress?.();
      }
    });
  }

  get state(): LinkState {
    switch (Atomics.load(this.ctl, CTL.STATE)) {
      case STATE_CONNECTING:
        return "connecting";
      case STATE_OPEN:
        return "open";
      case STATE_FAILED:
        return "failed";
      default:
        return "closed";
    }
  }

  /** Why the connection failed or closed (the socket's error, or the peer's end of stream). */
  get reason(): string {
    const n = Atomics.load(this.ctl, CTL.ERR_LEN);
    return new TextDecoder().decode(this.errBytes.slice(0, n));
  }

  /** Whether the worker thread has started running. */
  get alive(): boolean {
    return Atomics.load(this.ctl, CTL.ALIVE) === 1;
  }

  /** A counter of the worker's changes: pass it to `waitSync` to sleep until the next one. */
  seq(): number {
    return Atomics.load(this.ctl, CTL.SEQ);
  }

  /** Block until the worker reports a change after `seen`; false on timeout. */
  waitSync(seen: number, timeoutMs: number): boolean {
    return Atomics.wait(this.ctl, CTL.SEQ, seen, Math.max(0, timeoutMs)) !== "timed-out";
  }

  /**
   * Ask for one `onProgress` call, from the event loop, at the worker's next change (a change since the last
   * `seq()` the caller acted on counts: arm before looking). The wake-up is the worker's `Atomics.notify`
   * itself, through `Atomics.waitAsync`: no message is built, cloned or dispatched (a worker's postMessage
   * costs tens of microseconds of CPU on each side, measured with --cpu-prof, at every reply at QD1).
   */
  arm(): void {
    if (this.armed || this.terminated) return;
    this.armed = true;
    const r = waitAsync(this.ctl, CTL.SEQ, this.seq());
    if (r.async) void r.value.then(this.fire);
    else queueMicrotask(this.fire);
  }

  private armed = false;
  private readonly fire = (): void => {
    this.armed = false;
    this.onProgress?.();
  };

  /** Keep the process alive while asynchronous requests are outstanding (counted). */
  ref(): void {
    if (this.refs++ === 0 && !this.terminated) this.worker.ref();
  }
  unref(): void {
    if (--this.refs === 0 && !this.terminated) this.worker.unref();
  }

  // ---- incoming ----

  /** Received bytes not yet consumed. */
  available(): number {
    return (Atomics.load(this.ctl, CTL.IN_HEAD) - this.inTail) >>> 0;
  }

  /** Move the next `dst.length` received bytes (no more than `available()`) into `dst`. */
  take(dst: Uint8Array): void {
    const n = dst.length;
    const size = this.inRing.length;
    const at = this.inTail & (size - 1);
    const first = Math.min(n, size - at);
    dst.set(this.inRing.subarray(at, at + first));
    if (n > first) dst.set(this.inRing.subarray(0, n - first), first);
    this.consumed(n);
  }

  /** Drop the next `n` received bytes (no more than `available()`). */
  skip(n: number): void {
    this.consumed(n);
  }

  private consumed(n: number): void {
    if (n === 0) return;
    this.inTail = (this.inTail + n) | 0;
    Atomics.store(this.ctl, CTL.IN_TAIL, this.inTail);
    // The worker sets IN_BLOCKED before it looks at IN_TAIL a last time (see socket-worker.ts).
    if (Atomics.load(this.ctl, CTL.IN_BLOCKED) !== 0 && Atomics.exchange(this.ctl, CTL.IN_BLOCKED, 0) === 1)
      this.worker.postMessage(MSG_SPACE);
  }

  // ---- outgoing ----

  /** Room in the outgoing ring. */
  room(): number {
    return this.outRing.length - ((this.outHead - Atomics.load(this.ctl, CTL.OUT_TAIL)) >>> 0);
  }

  /**
   * Ask to be told (a change for `waitSync` and `arm`) when the socket next takes bytes from the
   * outgoing ring. Call it before a last look at `room()` or `sent()`, then wait only if that look shows no change.
   */
  watchRoom(): void {
    Atomics.store(this.ctl, CTL.OUT_WAIT, 1);
  }

  /** Whether every byte `put` so far has been published to the worker by `flush`. */
  published(): boolean {
    return Atomics.load(this.ctl, CTL.OUT_HEAD) === this.outHead;
  }

  /** Whether every byte queued so far has been taken by the socket. */
  sent(): boolean {
    return Atomics.load(this.ctl, CTL.OUT_TAIL) === this.outHead;
  }

  /** Copy all of `src` (no more than `room()`) into the outgoing ring; `flush` sends it. */
  put(src: Uint8Array): void {
    const n = src.length;
    const size = this.outRing.length;
    const at = this.outHead & (size - 1);
    const first = Math.min(n, size - at);
    this.outRing.set(first === n ? src : src.subarray(0, first), at);
    if (n > first) this.outRing.set(src.subarray(first), 0);
    this.outHead = (this.outHead + n) | 0;
  }

  /**
   * Publish what `put` queued and tell the worker: wake it when it is waiting for this (see LINGER in
   * socket-worker.ts), else a message, unless one is already on its way.
   */
  flush(): void {
    if (Atomics.load(this.ctl, CTL.OUT_HEAD) === this.outHead) return;
    Atomics.store(this.ctl, CTL.OUT_HEAD, this.outHead);
    // A worker that has set LINGER but not yet slept sees the new OUT_HEAD and does not sleep; one that woke
    // from a time-out looks at OUT_HEAD after: either way no message is needed when this wakes nobody.
    if (Atomics.load(this.ctl, CTL.LINGER) === 1 && Atomics.notify(this.ctl, CTL.OUT_HEAD, 1) === 1) return;
    if (Atomics.exchange(this.ctl, CTL.OUT_KICK, 1) === 0) this.worker.postMessage(MSG_SEND);
  }

  /** Close the socket and end the worker (idempotent). */
  close(): void {
    if (this.terminated) return;
    this.terminated = true;
    this.onProgress = null;
    // Settles a pending `arm` (waitAsync does not keep the process alive, but it would stay pending).
    Atomics.notify(this.ctl, CTL.SEQ);
    this.worker.postMessage(MSG_CLOSE);
    // The worker also ends by itself once its socket and port are closed; terminate makes sure it does.
    void this.worker.terminate().catch(() => undefined);
  }
}
