/**
 * Cross-thread plumbing for running a frontend and a backend on different worker threads over one shared guest
 * memory: an event channel made of Atomics words, and a way to start a TypeScript worker.
 *
 * The event channel follows Xen's semantics (a send sets the port's pending bit; several sends before the
 * receiver looks coalesce into one event) and the cost lesson of this machine: waking a sleeping thread costs
 * ~27 µs, a busy poll ~0.4 µs. So a receiver spins a little before it sleeps, announces that it sleeps, and a
 * sender calls Atomics.notify only when the receiver announced it. Together with the ring's event indices
 * (the sender only sends when the peer asked), most requests and responses cost no wake-up at all.
 *
 * Per port, two Int32 words in a SharedArrayBuffer: `pending` and `sleeping`. Ordering argument (all accesses
 * are sequentially consistent Atomics): the sender stores pending=1 then loads sleeping; the receiver stores
 * sleeping=1 then Atomics.wait(pending, 0), which re-checks pending atomically before blocking. Whichever
 * store comes first in the total order, either the sender sees sleeping=1 and notifies, or the receiver sees
 * pending=1 and does not block: no lost wake-up.
 */

import { createRequire } from "node:module";
import type { Worker } from "node:worker_threads";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

import { workerThreads } from "../storage/builtins.ts";

const W_PENDING = 0;
const W_SLEEPING = 1;
/** Counters per port (not needed for correctness): sends, wake-ups (Atomics.notify), sleeps (Atomics.wait). */
const W_SENDS = 2;
const W_WAKEUPS = 3;
const W_SLEEPS = 4;
const W_SPIN_HITS = 5;
const WORDS_PER_PORT = 8;

export interface AtomicPortStats {
  /** Events sent (EVTCHNOP_send equivalents). */
  sends: number;
  /** Sends that found the receiver asleep and had to wake it (the expensive part). */
  wakeups: number;
  /** Times the receiver blocked in Atomics.wait. */
  sleeps: number;
  /** Waits satisfied while still spinning (no sleep needed). */
  spinHits: number;
}

/** Event channels between threads: `ports` ports in one SharedArrayBuffer (pass `.buffer` to the other thread). */
export class AtomicEventChannels {
  readonly w: Int32Array;
  readonly ports: number;

  constructor(portsOrBuffer: number | SharedArrayBuffer) {
    const buf =
      typeof portsOrBuffer === "number"
        ? new SharedArrayBuffer(portsOrBuffer * WORDS_PER_PORT * 4)
        : portsOrBuffer;
    this.w = new Int32Array(buf);
    this.ports = this.w.length / WORDS_PER_PORT;
  }

  get buffer(): SharedArrayBuffer {
    return this.w.buffer as SharedArrayBuffer;
  }

  private base(port: number): number {
    if (!(port >= 0 && port < this.ports)) throw new RangeError(`no event port ${port}`);
    return port * WORDS_PER_PORT;
  }

  /** Raise the port: set pending; wake the receiver only if it said it is asleep. */
  send(port: number): void {
    const b = this.base(port);
    const w = this.w;
    Atomics.add(w, b + W_SENDS, 1);
    Atomics.store(w, b + W_PENDING, 1);
    if (Atomics.load(w, b + W_SLEEPING) !== 0) {
      Atomics.add(w, b + W_WAKEUPS, 1);
      Atomics.notify(w, b + W_PENDING, 1);
    }
  }

  /** Take the pending event without blocking (clears it). */
  poll(port: number): boolean {
    return Atomics.exchange(this.w, this.base(port) + W_PENDING, 0) !== 0;
  }

  /**
   * Wait for an event on `port`: spin up to `spin` polls, then sleep up to `timeoutMs`. Returns true when an
   * event was taken, false on timeout.
   */
  wait(port: number, spin = 2000, timeoutMs = Infinity): boolean {
    const b = this.base(port);
    const w = this.w;
    for (let i = 0; i < spin; i++) {
      if (Atomics.load(w, b + W_PENDING) !== 0 && Atomics.exchange(w, b + W_PENDING, 0) !== 0) {
        Atomics.add(w, b + W_SPIN_HITS, 1);
        return true;
      }
    }
    Atomics.store(w, b + W_SLEEPING, 1);
    Atomics.add(w, b + W_SLEEPS, 1);
    Atomics.wait(w, b + W_PENDING, 0, timeoutMs);
    Atomics.store(w, b + W_SLEEPING, 0);
    return Atomics.exchange(w, b + W_PENDING, 0) !== 0;
  }

  stats(port: number): AtomicPortStats {
    const b = this.base(port);
    const w = this.w;
    return {
      sends: Atomics.load(w, b + W_SENDS),
      wakeups: Atomics.load(w, b + W_WAKEUPS),
      sleeps: Atomics.load(w, b + W_SLEEPS),
      spinHits: Atomics.load(w, b + W_SPIN_HITS),
    };
  }
}

/**
 * Start a worker from a module URL. A `.ts` module (running from source) is loaded through tsx's ESM loader,
 * registered inside the new thread first; a `.js` module (a built package) is started directly.
 */
export function spawnWorker(module: URL, workerData: unknown): Worker {
  const { Worker } = workerThreads();
  if (!module.pathname.endsWith(".ts")) return new Worker(module, { workerData });
  const req = createRequire(import.meta.url);
  const pkgPath = req.resolve("tsx/package.json");
  const pkg = req(pkgPath) as { exports: Record<string, { import: { default: string } }> };
  const api = pathToFileURL(join(dirname(pkgPath), pkg.exports["./esm/api"]!.import.default)).href;
  const code =
    `import(${JSON.stringify(api)})` +
    `.then((m) => { m.register(); return import(${JSON.stringify(module.href)}); })` +
    `.catch((e) => { setImmediate(() => { throw e; }); });`;
  return new Worker(code, { eval: true, workerData });
}

/** Resolve with the worker's first message; reject on an error or an exit before it. */
export function workerResult<T>(w: Worker): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    w.once("message", (m: T) => resolve(m));
    w.once("error", reject);
    w.once("exit", (code) => reject(new Error(`worker exited with code ${code} before reporting`)));
  });
}
