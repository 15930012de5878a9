/**
 * xenstored's request handling over the wire protocol: one `XenstoredConnection` per client (a unix-socket
 * client, a guest's ring), each acting for one domain, all on one `XenStore`. A transport hands it whole
 * messages (`XsMessageReader` frames them) and gives it a way to send bytes back; replies go out before the
 * watch events the request caused, as xenstored sends them.
 *
 * Request payloads and replies follow docs/misc/xenstore.txt and tools/xenstore/xenstored_core.c (Xen 4.17):
 * a request whose arguments are malformed is answered with XS_ERROR "EINVAL", an unknown type with "ENOSYS";
 * the domain-management requests (INTRODUCE, RELEASE, RESUME, SET_TARGET, IS_DOMAIN_INTRODUCED, CONTROL) need
 * a privileged connection ("EACCES" otherwise).
 */

import {
  decodeXsText,
  encodeXsMessage,
  splitXsPayload,
  XENSTORE_PAYLOAD_MAX,
  xsBytes,
  xsErrorPayload,
  type XsMessage,
  xsStrings,
  XsType,
} from "./xs-wire.ts";
import { XenStore, XenStoreError, type XsErrno, xsPermsFromStrings, xsPermsToString } from "./xenstore.ts";

/** Hooks a host gives xenstored for the domain-management requests (XS_INTRODUCE sets up a guest's ring). */
export interface XenstoredHooks {
  /** XS_INTRODUCE domid mfn port: connect to the domain's ring. Throw a XenStoreError to refuse. */
  introduce?(domid: number, mfn: number, port: number): void;
  /** XS_RELEASE domid: the domain's ring is gone. */
  release?(domid: number): void;
}

/** One xenstored, serving any number of connections on one store. */
export class Xenstored {
  readonly connections = new Set<XenstoredConnection>();
  constructor(
    readonly store: XenStore,
    readonly hooks: XenstoredHooks = {},
  ) {}

  /** A connection acting for `dom`; `send` carries its replies and watch events (whole messages). */
  connect(dom: number, send: (bytes: Uint8Array) => void): XenstoredConnection {
    const c = new XenstoredConnection(this, dom, send);
    this.connections.add(c);
    return c;
  }
}

class BadRequest extends Error {
  constructor(readonly code: XsErrno) {
    super(code);
  }
}

/** The one argument of a request: the payload must be exactly one NUL-terminated string (xenstored onearg). */
function oneArg(p: Uint8Array): string {
  if (p.length === 0 || p[p.length - 1] !== 0 || p.indexOf(0) !== p.length - 1)
    throw new BadRequest("EINVAL");
  return decodeXsText(p.subarray(0, p.length - 1));
}

/** `n` NUL-terminated strings exactly (xenstored get_strings with a count check). */
function args(p: Uint8Array, n: number): string[] {
  if (p.length === 0 || p[p.length - 1] !== 0) throw new BadRequest("EINVAL");
  const a = splitXsPayload(p);
  if (a.length !== n) throw new BadRequest("EINVAL");
  return a;
}

function domid(s: string): number {
  if (!/^\d{1,5}$/.test(s)) throw new BadRequest("EINVAL");
  const d = Number(s);
  if (d >= 0x7ff0) throw new BadRequest("EINVAL");
  return d;
}

const OK = xsStrings("OK");

export class XenstoredConnection {
  private closed = false;

  constructor(
    readonly daemon: Xenstored,
    readonly dom: number,
    private readonly sendBytes: (bytes: Uint8Array) => void,
  ) {}

  get store(): XenStore {
    return this.daemon.store;
  }

  private get home(): string {
    return `/local/domain/${this.dom}`;
  }

  private send(type: number, reqId: number, txId: number, payload: Uint8Array): void {
    if (this.closed) return;
    this.sendBytes(encodeXsMessage({ type, reqId, txId, payload }));
  }

  /** The connection is gone: its watches and transactions go with it. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.dropOwner(this);
    this.daemon.connections.delete(this);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Handle one request and send its reply (XS_ERROR with the errno's name on failure). */
  handle(m: XsMessage): void {
    if (this.closed) return;
    let reply: { type: number; payload: Uint8Array };
    try {
      reply = this.dispatch(m);
    } catch (e) {
      let code: XsErrno;
      if (e instanceof XenStoreError) code = e.code;
      else if (e instanceof BadRequest) code = e.code;
      else if (e instanceof RangeError) code = "E2BIG";
      else throw e;
      reply = { type: XsType.ERROR, payload: xsErrorPayload(code) };
    }
    this.send(reply.type, m.reqId, m.txId, reply.payload);
  }

  private path(p: string, special = false): string {
    return this.store.canonical(this.dom, p, special);
  }

  private requirePrivileged(): void {
    if (!this.store.isPrivileged(this.dom)) throw new BadRequest("EACCES");
  }

  private dispatch(m: XsMessage): { type: number; payload: Uint8Array } {
    const s = this.store;
    const dom = this.dom;
    const tx = m.txId === 0 ? undefined : m.txId;
    const ok = () => ({ type: m.type, payload: OK });
    const op = (name: string) => s.count(dom, name);
    switch (m.type) {
      case XsType.READ: {
        op("read");
        return { type: m.type, payload: xsBytes(s.read(dom, this.path(oneArg(m.payload)), tx)) };
      }
      case XsType.WRITE: {
        // "path\0value": the value is the rest of the payload, NULs and all, without a terminator.
        const nul = m.payload.indexOf(0);
        if (nul < 0) throw new BadRequest("EINVAL");
        op("write");
        const path = this.path(decodeXsText(m.payload.subarray(0, nul)));
        s.modify(dom, { kind: "write", path, value: decodeXsText(m.payload.subarray(nul + 1)) }, tx);
        return ok();
      }
      case XsType.MKDIR:
        op("mkdir");
        s.modify(dom, { kind: "mkdir", path: this.path(oneArg(m.payload)) }, tx);
        return ok();
      case XsType.RM:
        op("rm");
        s.modify(dom, { kind: "rm", path: this.path(oneArg(m.payload)) }, tx);
        return ok();
      case XsType.DIRECTORY: {
        op("directory");
        const names = s.directory(dom, this.path(oneArg(m.payload)), tx);
        const payload = xsStrings(...names);
        // xenstored answers a list too long for one message with E2BIG; the client then uses DIRECTORY_PART.
        if (payload.length > XENSTORE_PAYLOAD_MAX) throw new BadRequest("E2BIG");
        return { type: m.type, payload };
      }
      case XsType.DIRECTORY_PART: {
        // "path\0offset\0" -> "generation\0" + the child names from byte `offset` of the list, and one more
        // NUL when the list ends in this part (xenstored send_directory_part).
        op("directory_part");
        const [p, offText] = args(m.payload, 2);
        if (!/^\d+$/.test(offText!)) throw new BadRequest("EINVAL");
        const { children, gen } = s.directoryWithGen(dom, this.path(p!), tx);
        const all = xsStrings(...children);
        const off = Number(offText);
        if (off > all.length) throw new BadRequest("EINVAL");
        const head = xsStrings(String(gen));
        const room = XENSTORE_PAYLOAD_MAX - head.length - 1;
        let end = off;
        while (end < all.length) {
          const next = all.indexOf(0, end) + 1;
          if (next - off > room) break;
          end = next;
        }
        const done = end === all.length;
        const payload = new Uint8Array(head.length + (end - off) + (done ? 1 : 0));
        payload.set(head);
        payload.set(all.subarray(off, end), head.length);
        return { type: m.type, payload };
      }
      case XsType.GET_PERMS:
        op("get_perms");
        return {
          type: m.type,
          payload: xsStrings(...xsPermsToString(s.getPerms(dom, this.path(oneArg(m.payload)), tx))),
        };
      case XsType.SET_PERMS: {
        if (m.payload.length === 0 || m.payload[m.payload.length - 1] !== 0) throw new BadRequest("EINVAL");
        const [p, ...list] = splitXsPayload(m.payload);
        const perms = xsPermsFromStrings(list);
        if (!perms || perms.length === 0) throw new BadRequest("EINVAL");
        op("set_perms");
        s.modify(dom, { kind: "setPerms", path: this.path(p!), perms }, tx);
        return ok();
      }
      case XsType.WATCH: {
        const [p, token] = args(m.payload, 2);
        op("watch");
        const abs = this.path(p!, true);
        const relative = !p!.startsWith("/") && !p!.startsWith("@");
        s.watch(dom, abs, token!, (path, tok) => this.watchEvent(path, tok, relative), this);
        return ok();
      }
      case XsType.UNWATCH: {
        const [p, token] = args(m.payload, 2);
        op("unwatch");
        s.unwatch(dom, this.path(p!, true), token!, this);
        return ok();
      }
      case XsType.RESET_WATCHES:
        op("reset_watches");
        s.resetWatches(dom, this);
        return ok();
      case XsType.TRANSACTION_START: {
        // The payload is one empty string ("\0"); a request already inside a transaction is refused.
        op("transaction_start");
        if (tx !== undefined) throw new BadRequest("EBUSY");
        return { type: m.type, payload: xsStrings(String(s.transactionStart(dom, this))) };
      }
      case XsType.TRANSACTION_END: {
        const a = oneArg(m.payload);
        if (a !== "T" && a !== "F") throw new BadRequest("EINVAL");
        op("transaction_end");
        if (tx === undefined) throw new BadRequest("EINVAL");
        s.transactionEnd(dom, tx, a === "T", this);
        return ok();
      }
      case XsType.GET_DOMAIN_PATH:
        return { type: m.type, payload: xsStrings(`/local/domain/${domid(oneArg(m.payload))}`) };
      case XsType.IS_DOMAIN_INTRODUCED: {
        this.requirePrivileged();
        return { type: m.type, payload: xsStrings(s.isIntroduced(domid(oneArg(m.payload))) ? "T" : "F") };
      }
      case XsType.INTRODUCE: {
        this.requirePrivileged();
        const [d, mfn, port] = args(m.payload, 3);
        if (!/^\d+$/.test(mfn!) || !/^\d+$/.test(port!)) throw new BadRequest("EINVAL");
        const id = domid(d!);
        if (id === 0) throw new BadRequest("EINVAL");
        this.daemon.hooks.introduce?.(id, Number(mfn), Number(port));
        s.introduceDomain(id);
        return ok();
      }
      case XsType.RELEASE: {
        this.requirePrivileged();
        const id = domid(oneArg(m.payload));
        if (id === 0) throw new BadRequest("EINVAL");
        s.releaseDomain(id);
        this.daemon.hooks.release?.(id);
        return ok();
      }
      case XsType.RESUME: {
        this.requirePrivileged();
        const id = domid(oneArg(m.payload));
        if (!s.isIntroduced(id)) throw new BadRequest("ENOENT");
        return ok();
      }
      case XsType.SET_TARGET: {
        this.requirePrivileged();
        const [d, target] = args(m.payload, 2);
        const id = domid(d!);
        const t = domid(target!);
        if (!s.isIntroduced(id) || !s.isIntroduced(t)) throw new BadRequest("ENOENT");
        s.setTarget(id, t);
        return ok();
      }
      case XsType.CONTROL:
        return { type: m.type, payload: this.control(m.payload) };
      default:
        // WATCH_EVENT and ERROR are the daemon's to send; anything else is not an operation.
        throw new BadRequest(m.type === XsType.WATCH_EVENT || m.type === XsType.ERROR ? "EINVAL" : "ENOSYS");
    }
  }

  /** XS_CONTROL (xenstored_control.c): the commands that mean something here. */
  private control(p: Uint8Array): Uint8Array {
    this.requirePrivileged();
    if (p.length === 0 || p[p.length - 1] !== 0) throw new BadRequest("EINVAL");
    const [cmd, ...rest] = splitXsPayload(p);
    const q = this.store.quota;
    switch (cmd) {
      case "check":
        return OK;
      case "print":
        if (rest.length !== 1) throw new BadRequest("EINVAL");
        return OK;
      case "quota":
        if (rest.length !== 0) throw new BadRequest("EINVAL");
        return xsStrings(
          [
            `Max. number of nodes per domain:      ${q.entriesPerDomain}`,
            `Max. node size:                       ${q.entrySize}`,
            `Max. number of watches per domain:    ${q.watchesPerDomain}`,
            `Max. number of transactions per domain: ${q.transactionsPerDomain}`,
            `Max. number of permissions per node:  ${q.permsPerNode}`,
            `Max. path length:                     ${q.pathMax}`,
          ].join("\n") + "\n",
        );
      case "help":
        return xsStrings("check\nprint <string>\nquota\nhelp\n");
      default:
        throw new BadRequest("EINVAL");
    }
  }

  private watchEvent(path: string, token: string, relative: boolean): void {
    let p = path;
    if (relative && p.startsWith(this.home + "/")) p = p.slice(this.home.length + 1);
    this.send(XsType.WATCH_EVENT, 0, 0, xsStrings(p, token));
  }
}
