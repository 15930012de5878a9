/**
 * Event channels (xen/include/public/event_channel.h, xen/common/event_channel.c), 2-level ABI.
 *
 * Per domain: a port table (state, remote domain, remote port) and the `evtchn_pending` / `evtchn_mask`
 * bitmaps of shared_info plus vcpu_info's `evtchn_upcall_pending`, all in a SharedArrayBuffer, so a backend
 * or frontend on another thread can send and see the same bits (`EventChannels.attach`).
 *
 * Delivery: `send` only sets the remote port's pending bit (if already pending, nothing more happens: sends
 * coalesce as on Xen). If the port is unmasked and the domain had no upcall pending, an upcall is scheduled:
 * asynchronous, so a backend answering inside a frontend's push does not recurse into the frontend, and several
 * sends before the receiver runs cost one upcall. Scheduled upcalls run from one microtask that delivers
 * domain after domain until none is left: an upcall raised by a handler (the backend's answer to the
 * frontend, the frontend's next request to the backend) runs in the same microtask after the handler returns,
 * as a second CPU would take it, instead of costing a microtask of its own. The upcall scans the pending words the
 * selector (evtchn_pending_sel) names, clears each pending&~mask bit and calls the port's handler
 * (evtchn_do_upcall). A waiter on another thread is woken with Atomics.notify on the upcall word, once the
 * domain's state has been shared with another thread (before that, no thread can be waiting).
 *
 * Costs: every EVTCHNOP is a hypercall (`hv.hypercall`); `send` also counts `evtchnNotify`.
 */

import { DOMID_SELF } from "./domain.ts";
import type { HypercallSink } from "./grant-table.ts";

/** 2-level ABI on a 32-bit guest: 32 x 32 ports (a 64-bit guest has 4096; 1024 is plenty for a few devices). */
export const EVTCHN_MAX_PORTS = 1024;

export const ECS_FREE = 0;
export const ECS_UNBOUND = 1;
export const ECS_INTERDOMAIN = 2;

const W_LOCK = 0;
const W_UPCALL = 1; // vcpu_info.evtchn_upcall_pending
const W_PENDING_SEL = 2; // vcpu_info.evtchn_pending_sel: which pending words may have bits set
const W_PENDING = 8;
const W_MASK = W_PENDING + EVTCHN_MAX_PORTS / 32;
const W_PORTS = W_MASK + EVTCHN_MAX_PORTS / 32;
const P_STATE = 0;
const P_REMOTE_DOM = 1;
const P_REMOTE_PORT = 2;
const P_WORDS = 3;
const WORDS = W_PORTS + EVTCHN_MAX_PORTS * P_WORDS;

export type EvtchnErrno = "EINVAL" | "ESRCH" | "ENOSPC" | "EPERM";

export class EventChannelError extends Error {
  constructor(
    readonly code: EvtchnErrno,
    message: string,
  ) {
    super(message);
    this.name = "EventChannelError";
  }
}

/** One domain's event-channel state, in shared memory. */
export class EventChannelDomain {
  readonly w: Int32Array;
  /**
   * Another thread may sleep on the upcall word (the state was handed out with `sharedBuffers`, attached from
   * another thread, or is being listened to). Until then no one can be waiting, and raising an upcall skips
   * the Atomics.notify, which costs about as much as the rest of the send.
   */
  crossThread: boolean;
  /** An upcall of this domain is scheduled on this thread (in-process bookkeeping, not shared state). */
  scheduled = false;
  constructor(
    readonly domid: number,
    readonly shared: SharedArrayBuffer = new SharedArrayBuffer(WORDS * 4),
    crossThread = true,
  ) {
    this.w = new Int32Array(shared);
    this.crossThread = crossThread;
  }

  // While no other thread holds the buffer (`crossThread` false), the words are read and written as plain
  // typed-array elements: one thread's accesses are already in program order, and V8 does not inline Atomics
  // (each one is a builtin call, about 10 ns against 1 ns). A send costs a dozen such accesses.

  state(port: number): number {
    const i = W_PORTS + port * P_WORDS + P_STATE;
    return this.crossThread ? Atomics.load(this.w, i) : this.w[i]!;
  }
  remote(port: number): { dom: number; port: number } {
    return { dom: this.remoteDom(port), port: this.remotePort(port) };
  }
  /** The remote domain of `port` (hot path: no object). */
  remoteDom(port: number): number {
    const i = W_PORTS + port * P_WORDS + P_REMOTE_DOM;
    return this.crossThread ? Atomics.load(this.w, i) : this.w[i]!;
  }
  /** The remote port of `port` (hot path: no object). */
  remotePort(port: number): number {
    const i = W_PORTS + port * P_WORDS + P_REMOTE_PORT;
    return this.crossThread ? Atomics.load(this.w, i) : this.w[i]!;
  }
  setPort(port: number, state: number, remoteDom: number, remotePort: number): void {
    const b = W_PORTS + port * P_WORDS;
    Atomics.store(this.w, b + P_REMOTE_DOM, remoteDom);
    Atomics.store(this.w, b + P_REMOTE_PORT, remotePort);
    Atomics.store(this.w, b + P_STATE, state);
  }

  isPending(port: number): boolean {
    const i = W_PENDING + (port >>> 5);
    return ((this.crossThread ? Atomics.load(this.w, i) : this.w[i]!) & (1 << (port & 31))) !== 0;
  }
  isMasked(port: number): boolean {
    const i = W_MASK + (port >>> 5);
    return ((this.crossThread ? Atomics.load(this.w, i) : this.w[i]!) & (1 << (port & 31))) !== 0;
  }
  /** Set the pending bit (and its word's selector bit, as Xen's 2-level ABI); true if it was already set. */
  setPending(port: number): boolean {
    const bit = 1 << (port & 31);
    const i = W_PENDING + (port >>> 5);
    const w = this.w;
    if (this.crossThread) {
      if ((Atomics.or(w, i, bit) & bit) !== 0) return true;
      Atomics.or(w, W_PENDING_SEL, 1 << (port >>> 5));
      return false;
    }
    const old = w[i]!;
    if ((old & bit) !== 0) return true;
    w[i] = old | bit;
    w[W_PENDING_SEL] = w[W_PENDING_SEL]! | (1 << (port >>> 5));
    return false;
  }
  clearPending(port: number): void {
    const i = W_PENDING + (port >>> 5);
    if (this.crossThread) Atomics.and(this.w, i, ~(1 << (port & 31)));
    else this.w[i] = this.w[i]! & ~(1 << (port & 31));
  }
  setMask(port: number, masked: boolean): void {
    const bit = 1 << (port & 31);
    if (masked) Atomics.or(this.w, W_MASK + (port >>> 5), bit);
    else Atomics.and(this.w, W_MASK + (port >>> 5), ~bit);
  }
  /** Raise evtchn_upcall_pending; true if it was 0 (an upcall must be delivered). */
  raiseUpcall(): boolean {
    if (!this.crossThread) {
      const was = this.w[W_UPCALL] === 0;
      this.w[W_UPCALL] = 1;
      return was;
    }
    const was = Atomics.exchange(this.w, W_UPCALL, 1) === 0;
    if (was) Atomics.notify(this.w, W_UPCALL);
    return was;
  }
  /** Take the upcall (clear evtchn_upcall_pending before scanning, as evtchn_do_upcall does). */
  takeUpcall(): void {
    if (this.crossThread) Atomics.store(this.w, W_UPCALL, 0);
    else this.w[W_UPCALL] = 0;
  }
  /**
   * Ports pending and not masked, lowest first, each cleared as it is returned. Only the words the selector
   * names are scanned (evtchn_do_upcall's xchg of evtchn_pending_sel); a word that keeps masked pending bits
   * keeps its selector bit, so unmasking finds them.
   */
  takePending(out: number[]): number {
    const w = this.w;
    const atomic = this.crossThread;
    let n = 0;
    let sel: number;
    if (atomic) sel = Atomics.exchange(w, W_PENDING_SEL, 0);
    else {
      sel = w[W_PENDING_SEL]!;
      w[W_PENDING_SEL] = 0;
    }
    while (sel) {
      const i = 31 - Math.clz32(sel & -sel);
      sel &= ~(1 << i);
      const pending = atomic ? Atomics.load(w, W_PENDING + i) : w[W_PENDING + i]!;
      const mask = atomic ? Atomics.load(w, W_MASK + i) : w[W_MASK + i]!;
      if (pending & mask) {
        if (atomic) Atomics.or(w, W_PENDING_SEL, 1 << i);
        else w[W_PENDING_SEL] = w[W_PENDING_SEL]! | (1 << i);
      }
      let bits = pending & ~mask;
      while (bits) {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= ~(1 << b);
        const port = i * 32 + b;
        this.clearPending(port);
        out.push(port);
        n++;
      }
    }
    return n;
  }
  /** The word a thread waits on (Atomics.wait / waitAsync) for an upcall. */
  static readonly UPCALL_WORD = W_UPCALL;

  lock(): void {
    while (Atomics.compareExchange(this.w, W_LOCK, 0, 1) !== 0) Atomics.wait(this.w, W_LOCK, 1, 1);
  }
  unlock(): void {
    Atomics.store(this.w, W_LOCK, 0);
    Atomics.notify(this.w, W_LOCK, 1);
  }
}

export type EventHandler = (port: number) => void;

const RESOLVED = Promise.resolve();

/** Atomics.waitAsync (Node 16+, V8), typed here because the ES2023 library declarations lack it. */
type WaitAsyncResult =
  { async: false; value: "not-equal" | "timed-out" } | { async: true; value: Promise<"ok" | "timed-out"> };
const waitAsync = (
  Atomics as unknown as { waitAsync: (a: Int32Array, i: number, v: number) => WaitAsyncResult }
).waitAsync;

/** Domain ids looked up by array (below) rather than by map: dom0 and the guests a host here runs. */
const FAST_DOMIDS = 64;

/**
 * The event-channel hypercalls for all domains of one host, and in-process upcall delivery to handlers.
 * `attach` builds the same view on another thread from the domains' shared buffers.
 */
export class EventChannels {
  private readonly doms = new Map<number, EventChannelDomain>();
  private readonly handlers = new Map<number, Map<number, EventHandler>>();
  /**
   * The same domains and handler maps by domid below FAST_DOMIDS (every domain of a host here), so a send and
   * an upcall load them from an array instead of hashing into the maps several times per ring round trip.
   */
  private readonly domAt = new Array<EventChannelDomain | null>(FAST_DOMIDS).fill(null);
  private readonly handlersAt = new Array<Map<number, EventHandler> | null>(FAST_DOMIDS).fill(null);
  /** Domains with an upcall scheduled, in order (`runHead` is the next to deliver). */
  private readonly runQueue: EventChannelDomain[] = [];
  private runHead = 0;
  /** The microtask that delivers `runQueue` is queued or running. */
  private draining = false;
  /** Ports taken by `deliver` (reused: an upcall allocates no array). */
  private readonly portScratch: number[] = [];
  /** Upcalls delivered (one per scan of a domain's pending ports). */
  upcalls = 0;

  constructor(private readonly hv: HypercallSink) {}

  static attach(hv: HypercallSink, shared: ReadonlyMap<number, SharedArrayBuffer>): EventChannels {
    const ev = new EventChannels(hv);
    for (const [d, sab] of shared) ev.putDomain(d, new EventChannelDomain(d, sab));
    return ev;
  }

  private putDomain(domid: number, d: EventChannelDomain): void {
    this.doms.set(domid, d);
    if (domid >= 0 && domid < FAST_DOMIDS) this.domAt[domid] = d;
  }

  /** The domain `domid`, or undefined. */
  private find(domid: number): EventChannelDomain | undefined {
    return domid >= 0 && domid < FAST_DOMIDS ? (this.domAt[domid] ?? undefined) : this.doms.get(domid);
  }

  private handlersOf(domid: number): Map<number, EventHandler> | undefined {
    return domid >= 0 && domid < FAST_DOMIDS
      ? (this.handlersAt[domid] ?? undefined)
      : this.handlers.get(domid);
  }

  addDomain(domid: number): EventChannelDomain {
    let d = this.doms.get(domid);
    if (!d) {
      d = new EventChannelDomain(domid, undefined, false); // this thread's own until shared
      this.putDomain(domid, d);
    }
    return d;
  }

  domain(domid: number): EventChannelDomain {
    const d = this.find(domid);
    if (!d) throw new EventChannelError("ESRCH", `no domain ${domid}`);
    return d;
  }

  /** Shared buffers by domain, to hand to a worker thread. */
  sharedBuffers(): Map<number, SharedArrayBuffer> {
    for (const d of this.doms.values()) d.crossThread = true;
    return new Map([...this.doms].map(([k, v]) => [k, v.shared]));
  }

  private validPort(d: EventChannelDomain, port: number): void {
    if (!(Number.isInteger(port) && port > 0 && port < EVTCHN_MAX_PORTS) || d.state(port) === ECS_FREE) {
      throw new EventChannelError("EINVAL", `domain ${d.domid}: port ${port} is not allocated`);
    }
  }

  private allocPort(d: EventChannelDomain): number {
    // Port 0 is never handed out (Xen reserves it).
    for (let p = 1; p < EVTCHN_MAX_PORTS; p++) if (d.state(p) === ECS_FREE) return p;
    throw new EventChannelError("ENOSPC", `domain ${d.domid}: no free event-channel port`);
  }

  /** EVTCHNOP_alloc_unbound: a port of `dom` that `remoteDom` may bind to. */
  allocUnbound(dom: number, remoteDom: number): number {
    this.hv.hypercall(dom, "evtchn_alloc_unbound");
    const d = this.domain(dom);
    if (remoteDom === DOMID_SELF) remoteDom = dom;
    this.domain(remoteDom);
    d.lock();
    try {
      const port = this.allocPort(d);
      d.setMask(port, false);
      d.clearPending(port);
      d.setPort(port, ECS_UNBOUND, remoteDom, 0);
      return port;
    } finally {
      d.unlock();
    }
  }

  /** EVTCHNOP_bind_interdomain: connect a new port of `dom` to `remoteDom`'s unbound `remotePort`. */
  bindInterdomain(dom: number, remoteDom: number, remotePort: number): number {
    this.hv.hypercall(dom, "evtchn_bind_interdomain");
    const l = this.domain(dom);
    if (remoteDom === DOMID_SELF) remoteDom = dom;
    const r = this.doms.get(remoteDom);
    if (!r) throw new EventChannelError("ESRCH", `no domain ${remoteDom}`);
    if (!(Number.isInteger(remotePort) && remotePort > 0 && remotePort < EVTCHN_MAX_PORTS)) {
      throw new EventChannelError("EINVAL", `port ${remotePort} out of range`);
    }
    r.lock();
    try {
      // The remote port must be unbound and reserved for us (Xen: -EINVAL otherwise).
      if (r.state(remotePort) !== ECS_UNBOUND || r.remote(remotePort).dom !== dom) {
        throw new EventChannelError(
          "EINVAL",
          `domain ${remoteDom} port ${remotePort} is not unbound for domain ${dom}`,
        );
      }
      if (l !== r) l.lock();
      try {
        const port = this.allocPort(l);
        l.setMask(port, false);
        l.clearPending(port);
        l.setPort(port, ECS_INTERDOMAIN, remoteDom, remotePort);
        r.setPort(remotePort, ECS_INTERDOMAIN, dom, port);
        // Xen marks the new local port pending so no event sent before the bind is lost (evtchn_port_set_pending).
        this.raise(l, port);
        return port;
      } finally {
        if (l !== r) l.unlock();
      }
    } finally {
      r.unlock();
    }
  }

  /** EVTCHNOP_send: raise the remote end of an interdomain port. Sends on an unbound port are dropped. */
  send(dom: number, port: number): void {
    this.hv.acct.counts.evtchnNotify++;
    this.hv.hypercall(dom, "evtchn_send");
    const d = this.domain(dom);
    this.validPort(d, port);
    if (d.state(port) !== ECS_INTERDOMAIN) return;
    const remDom = d.remoteDom(port);
    this.hv.tracer?.emit({ ev: "evtchn", from: dom, port, to: remDom });
    const r = this.find(remDom);
    if (r) this.raise(r, d.remotePort(port));
  }

  private raise(r: EventChannelDomain, port: number): void {
    if (r.setPending(port)) return; // already pending: coalesced
    if (r.isMasked(port)) return;
    if (r.raiseUpcall()) this.schedule(r);
  }

  /** EVTCHNOP_close: free the port; an interdomain peer goes back to unbound (towards us). */
  close(dom: number, port: number): void {
    this.hv.hypercall(dom, "evtchn_close");
    const d = this.domain(dom);
    this.validPort(d, port);
    const st = d.state(port);
    if (st === ECS_INTERDOMAIN) {
      const rem = d.remote(port);
      const r = this.doms.get(rem.dom);
      if (r && r.state(rem.port) === ECS_INTERDOMAIN && r.remote(rem.port).port === port) {
        r.setPort(rem.port, ECS_UNBOUND, dom, 0);
      }
    }
    d.setPort(port, ECS_FREE, 0, 0);
    d.clearPending(port);
    this.handlers.get(dom)?.delete(port);
  }

  /** Mask a port: a bit in shared_info the guest sets itself, no hypercall. */
  mask(dom: number, port: number): void {
    this.domain(dom).setMask(port, true);
  }

  /**
   * Unmask a port. The guest clears the bit itself; only when the port is pending must it ask Xen
   * (EVTCHNOP_unmask) to re-deliver the event, which is then a hypercall.
   */
  unmask(dom: number, port: number): void {
    const d = this.domain(dom);
    d.setMask(port, false);
    if (d.isPending(port)) {
      this.hv.hypercall(dom, "evtchn_unmask");
      if (d.raiseUpcall()) this.schedule(d);
    }
  }

  isPending(dom: number, port: number): boolean {
    return this.domain(dom).isPending(port);
  }
  isMasked(dom: number, port: number): boolean {
    return this.domain(dom).isMasked(port);
  }
  /** Port state and peer (EVTCHNOP_status, without a hypercall count: diagnostics and tests). */
  status(dom: number, port: number): { state: number; remoteDom: number; remotePort: number } {
    const d = this.domain(dom);
    const r = d.remote(port);
    return { state: d.state(port), remoteDom: r.dom, remotePort: r.port };
  }

  /** bind_evtchn_to_irqhandler: the in-process upcall handler of a port of `dom`. */
  bindHandler(dom: number, port: number, handler: EventHandler): void {
    let m = this.handlers.get(dom);
    if (!m) {
      this.handlers.set(dom, (m = new Map()));
      if (dom >= 0 && dom < FAST_DOMIDS) this.handlersAt[dom] = m;
    }
    m.set(port, handler);
    // An event may already be pending (bind_interdomain sets it): deliver it.
    const d = this.domain(dom);
    if (d.isPending(port) && !d.isMasked(port)) {
      d.raiseUpcall();
      this.schedule(d);
    }
  }

  unbindHandler(dom: number, port: number): void {
    this.handlers.get(dom)?.delete(port);
  }

  private schedule(d: EventChannelDomain): void {
    if (d.scheduled || !this.handlersOf(d.domid)) return;
    d.scheduled = true;
    this.runQueue.push(d);
    if (this.draining) return; // the running (or queued) drain takes it
    this.draining = true;
    // A microtask, as queueMicrotask would give, but without the async-context resource Node wraps around
    // every queueMicrotask callback: that wrapper cost more than the whole ring round trip it schedules.
    void RESOLVED.then(this.drain);
  }

  /** Deliver every scheduled domain, including those scheduled by the handlers meanwhile. */
  private readonly drain = (): void => {
    const q = this.runQueue;
    try {
      while (this.runHead < q.length) {
        const d = q[this.runHead++]!;
        // Everything queued is taken: start the queue over. A chain of requests, each issued from the previous
        // one's completion, runs inside this one drain for as long as it lasts; without this the queue would
        // grow by every upcall of the chain (reallocated again and again, new memory touched each time).
        if (this.runHead === q.length) {
          while (q.length > 0) q.pop();
          this.runHead = 0;
        }
        try {
          this.deliver(d.domid);
        } catch (e) {
          // A handler's exception stays an uncaught exception (as from queueMicrotask), not a rejection.
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    } finally {
      while (q.length > 0) q.pop();
      this.runHead = 0;
      this.draining = false;
    }
  };

  /** evtchn_do_upcall for `dom`: drain pending&~mask, calling each port's handler. */
  deliver(dom: number): void {
    const d = this.find(dom);
    if (d) d.scheduled = false;
    const hs = this.handlersOf(dom);
    if (!d || !hs) return;
    const ports = this.portScratch;
    const base = ports.length;
    d.takeUpcall();
    this.upcalls++;
    d.takePending(ports);
    const end = ports.length;
    try {
      for (let i = base; i < end; i++) {
        const p = ports[i]!;
        const h = hs.get(p);
        if (h) h(p);
        // A pending bit without a handler is consumed and lost, as an unbound Linux irq would drop it.
      }
    } finally {
      // A handler may deliver another domain re-entrantly: it appends past `end` and trims back itself.
      while (ports.length > base) ports.pop(); // (assigning `length` would be a runtime call)
    }
  }

  /**
   * Deliver upcalls of `dom` raised from OTHER threads (their sends set our pending bits and Atomics.notify the
   * upcall word): waits with Atomics.waitAsync, so this thread's event loop stays free. Call it on the thread
   * that owns `dom`'s handlers. Returns a function that stops listening.
   */
  listen(dom: number): () => void {
    const d = this.domain(dom);
    d.crossThread = true;
    const w = d.w;
    let stopped = false;
    const loop = (): void => {
      if (stopped) return;
      const r = waitAsync(w, EventChannelDomain.UPCALL_WORD, 0);
      const go = (): void => {
        if (stopped) return;
        if (this.handlers.has(dom)) this.deliver(dom);
        else d.takeUpcall();
        loop();
      };
      if (r.async) void r.value.then(go);
      else setImmediate(go);
    };
    loop();
    return () => {
      stopped = true;
      // Wake the pending waitAsync so it does not keep the thread alive.
      Atomics.store(w, EventChannelDomain.UPCALL_WORD, Atomics.load(w, EventChannelDomain.UPCALL_WORD));
      Atomics.notify(w, EventChannelDomain.UPCALL_WORD);
    };
  }
}
