/**
 * A guest's xenstore client over its ring page (Linux drivers/xen/xenbus/xenbus_comms.c and xenbus_xs.c in
 * spirit): requests go into the `req` ring of `struct xenstore_domain_interface`, an event-channel kick tells
 * xenstored, replies and watch events come back in the `rsp` ring. It offers the same calls as the in-process
 * handle (`XsClient`), so blkfront negotiates over it unchanged.
 *
 * The calls are synchronous, as xenbus_read and friends are to the driver calling them: the vCPU blocks until
 * the reply is in the ring. Blocking is modelled as what Xen does for a blocked vCPU: dom0 runs, so its
 * pending upcalls (xenstored's ring among them) are delivered before the guest looks again. Watch events
 * that arrive meanwhile, or later on the guest's own upcall, go to their callbacks asynchronously, keyed by
 * token as xenbus does.
 */

import { DOM0 } from "../hypervisor/domain.ts";
import type { XenHost } from "../hypervisor/xen-host.ts";
import {
  parseXsInt,
  runTransaction,
  type WatchCallback,
  type XsClient,
  XenStoreError,
  type XsErrno,
  XSD_ERRORS,
  type XsPerm,
  xsPermsFromStrings,
  xsPermsToString,
} from "../hypervisor/xenstore.ts";
import {
  XENSTORE_ERROR_NONE,
  XenstoreRingPage,
  type XenstoreRingParams,
  XS_RING_ERROR,
  XS_RING_REQ,
  XS_RING_REQ_CONS,
  XS_RING_REQ_PROD,
  XS_RING_RSP,
  XS_RING_RSP_CONS,
  XS_RING_RSP_PROD,
  xsIndexesValid,
} from "../hypervisor/xenstore-ring.ts";
import {
  decodeXsText,
  encodeXsMessage,
  splitXsPayload,
  xsBytes,
  type XsMessage,
  XsMessageReader,
  xsStrings,
  XsType,
} from "../hypervisor/xs-wire.ts";

/** How many times the guest blocks for xenstored before it gives up on a request (xenstored is gone). */
const MAX_BLOCKS = 64;

const clients = new WeakMap<XenHost, Map<number, XsRingClient>>();

export class XsRingClient implements XsClient {
  private readonly ring: XenstoreRingPage;
  private readonly reader = new XsMessageReader();
  private readonly replies = new Map<number, XsMessage>();
  private readonly watches = new Map<string, { path: string; cb: WatchCallback }>();
  private nextReq = 1;
  private closed = false;

  private constructor(
    private readonly host: XenHost,
    readonly dom: number,
    readonly port: number,
    page: Uint8Array,
  ) {
    this.ring = new XenstoreRingPage(page);
    // Watch events arriving while no request waits come with the guest's own upcall.
    host.evtchn.bindHandler(dom, port, () => this.pump());
  }

  /**
   * Connect domain `dom`'s xenbus to its ring (the page and port its start_info names). A domain has one
   * xenbus: every driver of the domain shares the client.
   */
  static connect(host: XenHost, dom: number, params: XenstoreRingParams): XsRingClient {
    const known = clients.get(host)?.get(dom);
    if (known && !known.closed && known.port === params.port) return known;
    const c = XsRingClient.open(host, dom, params);
    if (!clients.has(host)) clients.set(host, new Map());
    clients.get(host)!.set(dom, c);
    return c;
  }

  private static open(host: XenHost, dom: number, params: XenstoreRingParams): XsRingClient {
    const d = host.domain(dom);
    if (!d.mem) throw new RangeError(`domain ${dom} has no memory`);
    const page = d.mem.view(params.gfn * 4096, 4096);
    if (!(page instanceof Uint8Array))
      throw new RangeError(`xenstore page ${params.gfn} outside domain ${dom}'s memory`);
    return new XsRingClient(host, dom, params.port, page);
  }

  /** Stop taking events (the driver is going away); the ring stays for another client. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.host.evtchn.unbindHandler(this.dom, this.port);
  }

  private fail(why: string): never {
    throw new XenStoreError("EIO", "xenstore ring", `xenstore ring of domain ${this.dom}: ${why}`);
  }

  /** Read whatever the response ring holds: replies are kept for their requests, watch events dispatched. */
  private pump(): void {
    const r = this.ring;
    if (r.u32(XS_RING_ERROR) !== XENSTORE_ERROR_NONE) return;
    const cons = r.u32(XS_RING_RSP_CONS);
    const prod = r.u32(XS_RING_RSP_PROD);
    if (!xsIndexesValid(cons, prod) || cons === prod) return;
    const bytes = r.take(XS_RING_RSP, cons, prod);
    r.setU32(XS_RING_RSP_CONS, (cons + bytes.length) >>> 0);
    // xenstored may be waiting for room in the response ring.
    this.host.evtchn.send(this.dom, this.port);
    for (const m of this.reader.push(bytes)) {
      if (m.type === XsType.WATCH_EVENT) {
        const [path, token] = splitXsPayload(m.payload);
        const w = token === undefined ? undefined : this.watches.get(token);
        if (w && path !== undefined)
          queueMicrotask(() => this.watches.get(token!) === w && w.cb(path, token!));
      } else {
        this.replies.set(m.reqId, m);
      }
    }
  }

  /** Send one request and block until its reply. */
  private request(type: number, payload: Uint8Array, tx = 0): Uint8Array {
    if (this.closed) this.fail("closed");
    const reqId = this.nextReq;
    this.nextReq = (this.nextReq + 1) >>> 0 || 1;
    const msg = encodeXsMessage({ type, reqId, txId: tx, payload });
    const r = this.ring;
    let off = 0;
    for (let blocks = 0; ; blocks++) {
      if (r.u32(XS_RING_ERROR) !== XENSTORE_ERROR_NONE)
        this.fail(`xenstored reports error ${r.u32(XS_RING_ERROR)}`);
      if (off < msg.length) {
        const cons = r.u32(XS_RING_REQ_CONS);
        const prod = r.u32(XS_RING_REQ_PROD);
        if (!xsIndexesValid(cons, prod)) this.fail("request ring indices");
        const n = r.put(XS_RING_REQ, cons, prod, msg.subarray(off));
        if (n > 0) {
          off += n;
          r.setU32(XS_RING_REQ_PROD, (prod + n) >>> 0);
          this.host.evtchn.send(this.dom, this.port);
        }
      }
      this.pump();
      const reply = this.replies.get(reqId);
      if (reply) {
        this.replies.delete(reqId);
        if (reply.type === XsType.ERROR) {
          const name = splitXsPayload(reply.payload)[0] ?? "EINVAL";
          const code = (XSD_ERRORS as readonly string[]).includes(name) ? (name as XsErrno) : "EINVAL";
          throw new XenStoreError(code, decodeXsText(payload).split("\0")[0] ?? "");
        }
        return reply.payload;
      }
      if (blocks >= MAX_BLOCKS) this.fail("no reply from xenstored");
      // SCHEDOP_block: the vCPU waits; dom0 runs its pending upcalls (xenstored's ring among them).
      this.host.hv.hypercall(this.dom, "sched_block");
      this.host.evtchn.deliver(DOM0);
    }
  }

  read(path: string, tx?: number): string {
    return decodeXsText(this.request(XsType.READ, xsStrings(path), tx));
  }

  tryRead(path: string, tx?: number): string | undefined {
    try {
      return this.read(path, tx);
    } catch (e) {
      if (e instanceof XenStoreError && e.code === "ENOENT") return undefined;
      throw e;
    }
  }

  readInt(path: string, tx?: number): number | undefined {
    return parseXsInt(this.tryRead(path, tx));
  }

  write(path: string, value: string | number, tx?: number): void {
    const p = xsStrings(path);
    const v = xsBytes(String(value));
    const payload = new Uint8Array(p.length + v.length);
    payload.set(p);
    payload.set(v, p.length);
    this.request(XsType.WRITE, payload, tx);
  }

  mkdir(path: string, tx?: number): void {
    this.request(XsType.MKDIR, xsStrings(path), tx);
  }

  rm(path: string, tx?: number): void {
    this.request(XsType.RM, xsStrings(path), tx);
  }

  directory(path: string, tx?: number): string[] {
    return splitXsPayload(this.request(XsType.DIRECTORY, xsStrings(path), tx));
  }

  getPerms(path: string, tx?: number): XsPerm[] {
    const perms = xsPermsFromStrings(splitXsPayload(this.request(XsType.GET_PERMS, xsStrings(path), tx)));
    if (!perms) this.fail("malformed permissions");
    return perms;
  }

  setPerms(path: string, perms: XsPerm[], tx?: number): void {
    this.request(XsType.SET_PERMS, xsStrings(path, ...xsPermsToString(perms)), tx);
  }

  watch(path: string, token: string, cb: WatchCallback): void {
    if (this.watches.has(token)) throw new XenStoreError("EEXIST", path);
    this.watches.set(token, { path, cb });
    try {
      this.request(XsType.WATCH, xsStrings(path, token));
    } catch (e) {
      this.watches.delete(token);
      throw e;
    }
  }

  unwatch(path: string, token: string): void {
    this.request(XsType.UNWATCH, xsStrings(path, token));
    this.watches.delete(token);
  }

  transactionStart(): number {
    const id = Number(splitXsPayload(this.request(XsType.TRANSACTION_START, xsStrings("")))[0]);
    if (!Number.isSafeInteger(id) || id <= 0) this.fail("malformed transaction id");
    return id;
  }

  transactionEnd(tx: number, commit = true): void {
    this.request(XsType.TRANSACTION_END, xsStrings(commit ? "T" : "F"), tx);
  }

  transaction<T>(body: (tx: number) => T, maxAttempts = 100): T {
    return runTransaction(this, body, maxAttempts);
  }

  /** XS_GET_DOMAIN_PATH. */
  getDomainPath(dom: number): string {
    return splitXsPayload(this.request(XsType.GET_DOMAIN_PATH, xsStrings(String(dom))))[0] ?? "";
  }
}
