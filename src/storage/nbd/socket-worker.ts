/**
 * The thread that owns an NBD connection's socket. It knows nothing of NBD: it connects, moves the bytes the
 * main thread put in the outgoing ring onto the socket, and the bytes the socket delivers into the incoming
 * ring, and says so through shared words. The protocol runs on the main thread (connection.ts), which can
 * wait for bytes with `Atomics.wait` inside a synchronous medium call (a socket on the main thread could not make
 * progress while that thread waits) and, for the async engine, with `Atomics.waitAsync` from its event loop.
 *
 * Shared state (all Int32 words, sequentially consistent Atomics; ring positions are byte counts modulo 2^32,
 * the rings' sizes powers of two):
 *
 *   STATE       CONNECTING -> OPEN -> CLOSED, or CONNECTING -> FAILED; the reason is in the error bytes
 *   SEQ         bumped (and notified) at every change the main thread may be waiting for, with `Atomics.wait`
 *               (a synchronous call) or `Atomics.waitAsync` (requests driven from its event loop)
 *   IN_HEAD     bytes the worker has put in the incoming ring     IN_TAIL   bytes the main thread consumed
 *   OUT_HEAD    bytes the main thread put in the outgoing ring    OUT_TAIL  bytes the socket has taken
 *   OUT_KICK    1 while a "send" message is on its way to the worker (so one message covers many requests)
 *   IN_BLOCKED  1 while the worker holds received bytes it has no room for (the socket is paused)
 *   ALIVE       1 once the worker runs (starting a thread can take long on a loaded host: not part of a timeout)
 *   OUT_WAIT    1 when the main thread waits for room in the outgoing ring (or for it to drain): only then is
 *               the socket taking bytes a change worth waking it for (each wake-up costs a thread switch)
 *   LINGER      1 while the worker sleeps in `Atomics.wait` on OUT_HEAD for the next request (see `linger`)
 *
 * The worker is started from this function's source text (`new Worker(code, { eval: true })`), which is the
 * same whether xenide runs from its TypeScript sources or from the bundle: the function must not refer to
 * anything outside itself. Transpilers may wrap local functions in a `__name` helper; the prelude defines one.
 */

/** Indices of the control words. */
export const CTL = {
  STATE: 0,
  SEQ: 1,
  IN_HEAD: 2,
  IN_TAIL: 3,
  OUT_HEAD: 4,
  OUT_TAIL: 5,
  OUT_KICK: 6,
  IN_BLOCKED: 7,
  ERR_LEN: 9,
  ALIVE: 10,
  OUT_WAIT: 11,
  LINGER: 12,
} as const;
export const CTL_WORDS = 16;
/** Room for the reason a connection failed or closed (UTF-8). */
export const ERR_BYTES = 512;

export const STATE_CONNECTING = 0;
export const STATE_OPEN = 1;
export const STATE_CLOSED = 2;
export const STATE_FAILED = 3;

/** Messages from the main thread. */
export const MSG_SEND = 1;
export const MSG_SPACE = 2;
export const MSG_CLOSE = 3;

/**
 * How long the worker waits, blocked, for the next request after it has handed replies to the main thread.
 * Replies usually make the caller submit more at once; a futex wake-up of a blocked thread takes a few
 * microseconds where a message into an idle event loop takes tens (measured: a postMessage round trip between
 * two threads is 60-90 us on a loaded 2-core host). The wait is cut short when a wait times out (see `linger`).
 */
export const LINGER_MS = 0.25;

/** The buffer every socket read goes into: room for the replies to 32 requests of 4 KiB and more in one read. */
export const READ_BYTES = 256 * 1024;

export interface SocketWorkerData {
  ctl: SharedArrayBuffer;
  inRing: SharedArrayBuffer;
  outRing: SharedArrayBuffer;
  err: SharedArrayBuffer;
  layout: typeof CTL;
  states: { open: number; closed: number; failed: number };
  msgs: { send: number; space: number; close: number };
  lingerMs: number;
  /** Size of the buffer each socket read lands in. */
  readBytes: number;
  target: { transport: "tcp"; host: string; port: number } | { transport: "unix"; path: string };
}

/**
 * The worker's program. Self-contained (see the module comment); its modules come through `load`, the worker's
 * own `require`, passed in by the code that calls it (a bundler rewrites a bare `require` into its own shim).
 */
function socketWorkerMain(load: (id: string) => unknown): void {
  const net = load("node:net") as typeof import("node:net");
  const wt = load("node:worker_threads") as typeof import("node:worker_threads");
  const port = wt.parentPort!;
  const d = wt.workerData as SocketWorkerData;
  const L = d.layout;
  const ctl = new Int32Array(d.ctl);
  const inRing = new Uint8Array(d.inRing);
  const outRing = new Uint8Array(d.outRing);
  const errBytes = new Uint8Array(d.err);
  const inMask = inRing.length - 1;
  const outMask = outRing.length - 1;
  /** Received bytes not yet in the incoming ring (the socket is paused while there are any). */
  const held: Buffer[] = [];
  /** Bytes of the outgoing ring handed to the socket (OUT_TAIL follows as the socket takes them). */
  let outSent = Atomics.load(ctl, L.OUT_TAIL);
  let connected = false;
  let ended = false;
  /** Why the peer ended the stream; reported once every byte before the end has reached the ring. */
  let endReason: string | null = null;

  Atomics.store(ctl, L.ALIVE, 1);
  Atomics.add(ctl, L.SEQ, 1);
  Atomics.notify(ctl, L.SEQ);

  const progress = (): void => {
    Atomics.add(ctl, L.SEQ, 1);
    Atomics.notify(ctl, L.SEQ);
  };

  const finish = (state: number, reason: string): void => {
    if (ended) return;
    ended = true;
    const text = new TextEncoder().encode(reason).subarray(0, errBytes.length);
    errBytes.set(text);
    Atomics.store(ctl, L.ERR_LEN, text.length);
    Atomics.store(ctl, L.STATE, state);
    progress();
  };

  /** Copy as much of `chunk` as the incoming ring has room for into it; returns the bytes copied. */
  const toRing = (chunk: Uint8Array): number => {
    const head = Atomics.load(ctl, L.IN_HEAD);
    const free = inRing.length - ((head - Atomics.load(ctl, L.IN_TAIL)) >>> 0);
    const n = Math.min(free, chunk.length);
    if (n === 0) return 0;
    const at = head & inMask;
    const first = Math.min(n, inRing.length - at);
    inRing.set(first === chunk.length ? chunk : chunk.subarray(0, first), at);
    if (n > first) inRing.set(chunk.subarray(first, n), 0);
    Atomics.store(ctl, L.IN_HEAD, (head + n) | 0);
    return n;
  };

  /**
   * The socket read `n` bytes into the read buffer (net's `onread`: one buffer for every read, no allocation and no
   * stream machinery per read): straight into the ring when nothing is held before them. Returning false
   * pauses the socket (the ring is full; `fill` resumes it).
   */
  const onRead = (n: number, buf: Buffer): boolean => {
    let chunk = buf.subarray(0, n);
    let moved = false;
    if (held.length === 0) {
      const k = toRing(chunk);
      moved = k > 0;
      chunk = chunk.subarray(k);
    }
    if (chunk.length > 0) held.push(Buffer.from(chunk)); // the read buffer is reused by the next read
    fill(moved);
    return held.length === 0;
  };

  /** Move held bytes into the incoming ring, as far as there is room. */
  const fill = (movedBefore = false): void => {
    let moved = movedBefore;
    while (held.length > 0) {
      const head = Atomics.load(ctl, L.IN_HEAD);
      const free = inRing.length - ((head - Atomics.load(ctl, L.IN_TAIL)) >>> 0);
      if (free === 0) {
        Atomics.store(ctl, L.IN_BLOCKED, 1);
        // The main thread stores IN_TAIL before it looks at IN_BLOCKED: look again, or wait for its message.
        if (inRing.length - ((head - Atomics.load(ctl, L.IN_TAIL)) >>> 0) === 0) {
          socket.pause();
          break;
        }
        Atomics.store(ctl, L.IN_BLOCKED, 0);
        continue;
      }
      const chunk = held[0]!;
      const n = toRing(chunk);
      if (n === chunk.length) held.shift();
      else held[0] = chunk.subarray(n);
      moved = true;
    }
    if (held.length === 0 && !ended) socket.resume();
    if (moved) progress();
    if (held.length === 0 && endReason !== null) finish(d.states.closed, endReason);
    else if (moved && held.length === 0) linger();
  };

  /** Deliveries to skip before lingering again: grows while waits time out (the caller has nothing to send). */
  let lingerSkip = 0;
  let lingerMisses = 0;
  /**
   * After handing replies over, wait (blocked, briefly) for the requests they make the main thread submit, and
   * send them at once. Nothing else is lost meanwhile: bytes the server sends wait in the socket and are read
   * together after. When waits time out (a stream of replies to one long request, or a caller that is done)
   * the worker lingers ever more rarely, so such a stream is not slowed.
   */
  const linger = (): void => {
    if (!connected || ended || d.lingerMs <= 0) return;
    if (lingerSkip > 0) {
      lingerSkip--;
      return;
    }
    const head = Atomics.load(ctl, L.OUT_HEAD);
    if (head !== outSent) return send();
    Atomics.store(ctl, L.LINGER, 1);
    const r = Atomics.wait(ctl, L.OUT_HEAD, head, d.lingerMs);
    Atomics.store(ctl, L.LINGER, 0);
    if (r === "timed-out") {
      lingerMisses = Math.min(lingerMisses + 1, 10);
      lingerSkip = (1 << lingerMisses) - 1;
    } else lingerMisses = 0;
    send();
  };

  const peerEnded = (reason: string): void => {
    endReason ??= reason;
    fill();
  };

  /** Hand what the main thread queued in the outgoing ring to the socket, without copying it. */
  const send = (): void => {
    if (!connected || ended) return;
    for (;;) {
      const n = (Atomics.load(ctl, L.OUT_HEAD) - outSent) >>> 0;
      if (n === 0) return;
      const at = outSent & outMask;
      const len = Math.min(n, outRing.length - at);
      outSent = (outSent + len) | 0;
      socket.write(Buffer.from(d.outRing, at, len), () => {
        // Write callbacks come in order: the ring space is free again up to here. The main thread stores
        // OUT_WAIT before it looks at OUT_TAIL a last time, so one of the two sees the other.
        Atomics.store(ctl, L.OUT_TAIL, (Atomics.load(ctl, L.OUT_TAIL) + len) | 0);
        if (Atomics.load(ctl, L.OUT_WAIT) !== 0 && Atomics.exchange(ctl, L.OUT_WAIT, 0) === 1) progress();
      });
    }
  };

  // A failure in this thread must reach the main thread through the shared state: it may be blocked in
  // Atomics.wait, unable to see the worker's error event.
  process.on("uncaughtException", (e: Error) => {
    finish(connected ? d.states.closed : d.states.failed, `the connection's thread failed: ${e.message}`);
    try {
      socket.destroy();
    } catch {
      // not created yet
    }
  });
  const t = d.target;
  const onread = { buffer: Buffer.allocUnsafe(d.readBytes), callback: onRead };
  const socket =
    t.transport === "unix"
      ? net.connect({ path: t.path, onread })
      : net.connect({ host: t.host, port: t.port, onread });
  socket.on("connect", () => {
    connected = true;
    if (t.transport === "tcp") socket.setNoDelay(true);
    Atomics.store(ctl, L.STATE, d.states.open);
    progress();
    send();
  });
  socket.on("end", () => peerEnded("the server closed the connection"));
  socket.on("close", () => peerEnded("the connection was closed"));
  socket.on("error", (e: Error) => {
    if (connected) peerEnded(e.message);
    else finish(d.states.failed, e.message);
  });
  port.on("message", (m: number) => {
    if (m === d.msgs.send) {
      Atomics.store(ctl, L.OUT_KICK, 0);
      send();
    } else if (m === d.msgs.space) {
      fill();
    } else if (m === d.msgs.close) {
      ended = true;
      socket.destroy();
      port.close();
    }
  });
}

/** The code a worker is started with (see the module comment). */
export const SOCKET_WORKER_SOURCE = `"use strict";\nvar __name = (f) => f;\n(${socketWorkerMain.toString()})(require);\n`;
