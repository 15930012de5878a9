/**
 * xenstored for a `XenHost`: one daemon on the host's store, serving the guests' rings (set up by the
 * toolstack and introduced with XS_INTRODUCE, as `xl create` does) and any unix sockets the caller opens.
 */

import { DOM0 } from "./domain.ts";
import type { XenHost } from "./xen-host.ts";
import { XenStoreError } from "./xenstore.ts";
import { mapXenstorePage, type XenstoreRingParams, XenstoreRingServer } from "./xenstore-ring.ts";
import { Xenstored } from "./xenstored.ts";
import { type XenstoredSocketOptions, XenstoredSocketServer } from "./xenstored-socket.ts";

export class HostXenstored {
  readonly daemon: Xenstored;
  private readonly rings = new Map<number, XenstoreRingServer>();
  private readonly params = new Map<number, XenstoreRingParams>();
  private readonly sockets = new Set<XenstoredSocketServer>();

  constructor(readonly host: XenHost) {
    this.daemon = new Xenstored(host.xenstore, {
      introduce: (dom, mfn, port) => this.attach(dom, mfn, port),
      release: (dom) => this.detach(dom),
    });
  }

  /**
   * The toolstack's part at domain build (libxl/xc_dom): a zeroed page of the guest's memory for its xenstore
   * ring and an unbound port towards dom0, then XS_INTRODUCE so xenstored maps the page and binds the port.
   * Returns what the guest finds in start_info / its HVM params. Idempotent per domain.
   */
  setupGuest(dom: number): XenstoreRingParams {
    const known = this.params.get(dom);
    if (known) return known;
    const d = this.host.domain(dom);
    if (!d.mem) throw new RangeError(`domain ${dom} has no memory for a xenstore page`);
    const gpa = d.pages.alloc(4096);
    d.mem.write(gpa, new Uint8Array(4096));
    const port = this.host.evtchn.allocUnbound(dom, DOM0);
    const p = { gfn: gpa / 4096, port };
    this.params.set(dom, p);
    this.attach(dom, p.gfn, p.port);
    this.host.xenstore.introduceDomain(dom);
    return p;
  }

  /** The domain is gone (destroyed, rebooting): xenstored releases it, as on XS_RELEASE. */
  release(dom: number): void {
    this.host.xenstore.releaseDomain(dom);
    this.detach(dom);
  }

  /** The ring server of `dom` (undefined if it has none). */
  ring(dom: number): XenstoreRingServer | undefined {
    return this.rings.get(dom);
  }

  private attach(dom: number, mfn: number, port: number): void {
    if (this.rings.has(dom)) return; // a re-introduction of a connected domain changes nothing
    const d = this.host.domains.get(dom);
    if (!d?.mem) throw new XenStoreError("EINVAL", `domain ${dom}`);
    let page: Uint8Array;
    try {
      page = mapXenstorePage(d.mem, mfn);
    } catch {
      throw new XenStoreError("EINVAL", `domain ${dom} frame ${mfn}`);
    }
    try {
      this.rings.set(dom, new XenstoreRingServer(this.daemon, this.host.evtchn, dom, page, port, DOM0));
    } catch {
      throw new XenStoreError("EINVAL", `domain ${dom} port ${port}`);
    }
  }

  private detach(dom: number): void {
    this.rings.get(dom)?.stop();
    this.rings.delete(dom);
    this.params.delete(dom);
  }

  /** Serve the store on a unix socket (clients act for dom0 unless `o.dom` says otherwise). */
  async listen(path: string, o: XenstoredSocketOptions = {}): Promise<XenstoredSocketServer> {
    const s = await XenstoredSocketServer.listen(this.daemon, path, o);
    this.sockets.add(s);
    return s;
  }

  /** Close every socket and ring. */
  async close(): Promise<void> {
    const all = [...this.sockets];
    this.sockets.clear();
    await Promise.all(all.map((s) => s.close()));
    for (const r of this.rings.values()) r.stop();
    this.rings.clear();
  }
}

const perHost = new WeakMap<XenHost, HostXenstored>();

/** The xenstored of `host` (made on first use). */
export function xenstoredOf(host: XenHost): HostXenstored {
  let x = perHost.get(host);
  if (!x) perHost.set(host, (x = new HostXenstored(host)));
  return x;
}
