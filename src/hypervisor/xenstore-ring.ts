/**
 * The guest's xenstore ring page (xs_wire.h `struct xenstore_domain_interface`) and xenstored's side of it.
 *
 * Layout, little-endian: `req[1024]` at 0 (guest -> xenstored), `rsp[1024]` at 1024 (replies and watch events),
 * then the free-running indices `req_cons` 2048, `req_prod` 2052, `rsp_cons` 2056, `rsp_prod` 2060, and
 * `server_features` 2064, `connection` 2068, `error` 2072. A ring is a byte stream: position `idx & 1023`,
 * `prod - cons` bytes used, never more than 1024. The toolstack gives the guest the page and an unbound event
 * channel (start_info `store_mfn` / `store_evtchn`, HVM_PARAM_STORE_PFN / _EVTCHN) and introduces the domain to
 * xenstored (XS_INTRODUCE domid mfn port), which maps the page and binds the channel.
 *
 * xenstored's side (xenstored_domain.c readchn/writechn) reads the indices once per pass (the guest may rewrite
 * them at any time), takes what the request ring holds, frames messages, answers them into the response ring as
 * space allows, and kicks the guest. A guest that breaks the ring (indices more than a ring apart) or the
 * protocol (a message longer than XENSTORE_PAYLOAD_MAX) gets `error` set (XENSTORE_ERROR_RINGIDX /
 * XENSTORE_ERROR_PROTO) and is ignored from then on, as xenstored's `corrupt()` does; every other domain's
 * xenstore goes on.
 */

import type { EventChannels } from "./event-channel.ts";
import type { GuestMemory } from "./memory.ts";
import type { Xenstored, XenstoredConnection } from "./xenstored.ts";
import { XsMessageReader, XsProtocolError } from "./xs-wire.ts";

/** xs_wire.h XENSTORE_RING_SIZE. */
export const XENSTORE_RING_SIZE = 1024;
export const XS_RING_REQ = 0;
export const XS_RING_RSP = 1024;
export const XS_RING_REQ_CONS = 2048;
export const XS_RING_REQ_PROD = 2052;
export const XS_RING_RSP_CONS = 2056;
export const XS_RING_RSP_PROD = 2060;
export const XS_RING_SERVER_FEATURES = 2064;
export const XS_RING_CONNECTION = 2068;
export const XS_RING_ERROR = 2072;

/**
 * Replies waiting for room in the response ring before xenstored stops taking requests (its default
 * `outstanding` quota, 20), and messages (mostly watch events) it keeps for a guest that reads none before
 * it gives up on the guest.
 */
export const XS_RING_OUTSTANDING = 20;
export const XS_RING_MAX_QUEUED = 1024;

/** xs_wire.h server features, connection and error values. */
export const XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
export const XENSTORE_SERVER_FEATURE_ERROR = 2;
export const XENSTORE_CONNECTED = 0;
export const XENSTORE_RECONNECT = 1;
export const XENSTORE_ERROR_NONE = 0;
export const XENSTORE_ERROR_COMM = 1;
export const XENSTORE_ERROR_RINGIDX = 2;
export const XENSTORE_ERROR_PROTO = 3;

/** One end's access to a mapped xenstore page: the two byte rings and their indices. */
export class XenstoreRingPage {
  readonly dv: DataView;
  constructor(readonly page: Uint8Array) {
    if (page.length < 4096) throw new RangeError("a xenstore ring page is 4096 bytes");
    this.dv = new DataView(page.buffer, page.byteOffset, 4096);
  }

  u32(off: number): number {
    return this.dv.getUint32(off, true);
  }
  setU32(off: number, v: number): void {
    this.dv.setUint32(off, v >>> 0, true);
  }

  /**
   * Copy up to `max` bytes out of the ring at `base` between `cons` and `prod` (already validated:
   * 0 <= prod - cons <= ring size).
   */
  take(base: number, cons: number, prod: number, max = Infinity): Uint8Array {
    const n = Math.min((prod - cons) >>> 0, max);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.page[base + ((cons + i) & (XENSTORE_RING_SIZE - 1))]!;
    return out;
  }

  /** Copy as much of `src` as fits into the ring at `base` after `prod`; returns the byte count. */
  put(base: number, cons: number, prod: number, src: Uint8Array): number {
    const room = XENSTORE_RING_SIZE - ((prod - cons) >>> 0);
    const n = Math.min(room, src.length);
    for (let i = 0; i < n; i++) this.page[base + ((prod + i) & (XENSTORE_RING_SIZE - 1))] = src[i]!;
    return n;
  }
}

/** xenstored check_indexes: the producer is at most one ring ahead of the consumer. */
export function xsIndexesValid(cons: number, prod: number): boolean {
  return (prod - cons) >>> 0 <= XENSTORE_RING_SIZE;
}

/** xenstored's connection to one guest over its ring page. */
export class XenstoreRingServer {
  readonly conn: XenstoredConnection;
  private readonly ring: XenstoreRingPage;
  private readonly reader = new XsMessageReader();
  private readonly out: Uint8Array[] = [];
  private outOff = 0;
  private localPort: number;
  private broken: string | null = null;
  private stopped = false;

  /**
   * Map `page` (the guest's xenstore page, as xenstored maps it through the reserved grant or the frame) and
   * bind to the guest's unbound port `guestPort` from `backDom`.
   */
  constructor(
    daemon: Xenstored,
    private readonly evtchn: EventChannels,
    readonly dom: number,
    page: Uint8Array,
    guestPort: number,
    private readonly backDom = 0,
  ) {
    this.ring = new XenstoreRingPage(page);
    this.ring.setU32(XS_RING_SERVER_FEATURES, XENSTORE_SERVER_FEATURE_ERROR);
    this.ring.setU32(XS_RING_CONNECTION, XENSTORE_CONNECTED);
    this.conn = daemon.connect(dom, (bytes) => this.queue(bytes));
    this.localPort = evtchn.bindInterdomain(backDom, dom, guestPort);
    evtchn.bindHandler(backDom, this.localPort, () => this.service());
  }

  /** Why the guest's connection was cut off (null while it works). */
  get failure(): string | null {
    return this.broken;
  }

  get port(): number {
    return this.localPort;
  }

  private queue(bytes: Uint8Array): void {
    if (this.broken || this.stopped) return;
    this.out.push(bytes);
    this.flush();
    // A guest that never reads its responses must not make xenstored hold events without bound.
    if (this.out.length > XS_RING_MAX_QUEUED) this.corrupt(XENSTORE_ERROR_COMM, "response ring not read");
  }

  private corrupt(error: number, why: string): void {
    this.broken = why;
    this.ring.setU32(XS_RING_ERROR, error);
    this.out.length = 0;
    this.conn.close();
    this.evtchn.send(this.backDom, this.localPort);
  }

  /** Write queued replies and events into the response ring as space allows; kick the guest if any went in. */
  private flush(): void {
    if (this.broken || this.stopped || this.out.length === 0) return;
    const r = this.ring;
    const cons = r.u32(XS_RING_RSP_CONS);
    let prod = r.u32(XS_RING_RSP_PROD);
    if (!xsIndexesValid(cons, prod)) return this.corrupt(XENSTORE_ERROR_RINGIDX, "response ring indices");
    let wrote = 0;
    while (this.out.length) {
      const msg = this.out[0]!;
      const n = r.put(XS_RING_RSP, cons, prod, msg.subarray(this.outOff));
      if (n === 0) break;
      prod = (prod + n) >>> 0;
      wrote += n;
      this.outOff += n;
      if (this.outOff === msg.length) {
        this.out.shift();
        this.outOff = 0;
      }
    }
    if (wrote === 0) return;
    // The bytes before the index (the wmb of xenstored's writechn).
    r.setU32(XS_RING_RSP_PROD, prod);
    this.evtchn.send(this.backDom, this.localPort);
  }

  /** The event-channel handler: take requests, answer them, and write what is waiting. */
  service(): void {
    if (this.broken || this.stopped) return;
    const r = this.ring;
    // Room may have opened in the response ring.
    this.flush();
    for (let pass = 0; pass < 64 && !this.broken && this.out.length < XS_RING_OUTSTANDING; pass++) {
      const cons = r.u32(XS_RING_REQ_CONS);
      const prod = r.u32(XS_RING_REQ_PROD);
      if (!xsIndexesValid(cons, prod)) return this.corrupt(XENSTORE_ERROR_RINGIDX, "request ring indices");
      if (cons === prod) return;
      const bytes = r.take(XS_RING_REQ, cons, prod);
      r.setU32(XS_RING_REQ_CONS, (cons + bytes.length) >>> 0);
      // The guest may be waiting for room to write the rest of a long message.
      this.evtchn.send(this.backDom, this.localPort);
      let msgs;
      try {
        msgs = this.reader.push(bytes);
      } catch (e) {
        if (!(e instanceof XsProtocolError)) throw e;
        return this.corrupt(XENSTORE_ERROR_PROTO, e.message);
      }
      for (const m of msgs) this.conn.handle(m);
    }
  }

  /** XS_RELEASE or domain death: stop serving the ring and close the channel. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.conn.close();
    this.evtchn.unbindHandler(this.backDom, this.localPort);
    this.evtchn.close(this.backDom, this.localPort);
  }
}

/** The toolstack's part for a guest's xenstore: the page in guest memory and the unbound port, as start_info has them. */
export interface XenstoreRingParams {
  /** Guest frame of the page (HVM_PARAM_STORE_PFN). */
  gfn: number;
  /** The guest's port (HVM_PARAM_STORE_EVTCHN), unbound towards dom0 until xenstored binds it. */
  port: number;
}

/** Map a guest frame for xenstored (a foreign map of the page the domain was built with). */
export function mapXenstorePage(mem: GuestMemory, gfn: number): Uint8Array {
  const v = mem.view(gfn * 4096, 4096);
  if (!(v instanceof Uint8Array))
    throw new RangeError(`xenstore page frame ${gfn} is outside the domain's memory`);
  return v;
}
