/**
 * The thread that owns an NBD connection's socket. It knows nothing of NBD: it connects, moves the bytes the
 * main thread put in the outgoing ring onto the socket, and the bytes the socket delivers into the incoming
 * ring, and says so through shared words. The protocol runs on the main thread (connection.ts), which can
 * wait for bytes with `Atomics.wait` inside a synchronous medium call (a socket on the main thread could not make
 * progress while that thread waits) and, for the async engine, be told by a message instead.
 *
 * Shared state (all Int32 words, sequentially consistent Atomics; ring positions are byte counts modulo 2^32,
 * the rings' sizes powers of two):
 *
 *   STATE       CONNECTING -> OPEN -> CLOSED, or CONNECTING -> FAILED; the reason is in the error bytes
 *   SEQ         bumped (and notified) at every change the main thread may be waiting for
 *   IN_HEAD     bytes the worker has put in the incoming ring     IN_TAIL   bytes the main thread consumed
 *   OUT_HEAD    bytes the main thread put in the outgoing ring    OUT_TAIL  bytes the socket has taken
 *   OUT_KICK    1 while a "send" message is on its way to the worker (so one message covers many requests)
 *   IN_BLOCKED  1 while the worker holds received bytes it has no room for (the socket is paused)
 *   WANT        1 when the main thread wants a message at the next change (async requests outstanding)
 *   ALIVE       1 once the worker runs (starting a thread can take long on a loaded host: not part of a timeout)
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
  WANT: 8,
  ERR_LEN: 9,
  ALIVE: 10,
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

export interface SocketWorkerData {
  ctl: SharedArrayBuffer;
  inRing: SharedArrayBuffer;
  outRing: SharedArrayBuffer;
  err: SharedArrayBuffer;
  layout: typeof CTL;
  states: { open: number; closed: number; failed: number };
  msgs: { send: number; space: number; close: number };
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
    if (Atomics.exchange(ctl, L.WANT, 0) === 1) port.postMessage(0);
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

  /** Move held bytes into the incoming ring, as far as there is room. */
  const fill = (): void => {
    let moved = false;
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
      const n = Math.min(free, chunk.length);
      const at = head & inMask;
      const first = Math.min(n, inRing.length - at);
      inRing.set(chunk.subarray(0, first), at);
      if (n > first) inRing.set(chunk.subarray(first, n), 0);
      if (n === chunk.length) held.shift();
      else held[0] = chunk.subarray(n);
      Atomics.store(ctl, L.IN_HEAD, (head + n) | 0);
      moved = true;
    }
    if (held.length === 0 && !ended) socket.resume();
    if (moved) progress();
    if (held.length === 0 && endReason !== null) finish(d.states.closed, endReason);
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
        // Write callbacks come in order: the ring space is free again up to here.
        Atomics.store(ctl, L.OUT_TAIL, (Atomics.load(ctl, L.OUT_TAIL) + len) | 0);
        progress();
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
  const socket = t.transport === "unix" ? net.connect(t.path) : net.connect({ host: t.host, port: t.port });
  socket.on("connect", () => {
    connected = true;
    if (t.transport === "tcp") socket.setNoDelay(true);
    Atomics.store(ctl, L.STATE, d.states.open);
    progress();
    send();
  });
  socket.on("data", (chunk: Buffer) => {
    held.push(chunk);
    fill();
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
