/**
 * blkback: the block backend in the backend domain (dom0), xenbus side, modelled on Linux
 * drivers/block/xen-blkback/xenbus.c. The request path is `BlkbackIo` (blkback-io.ts).
 *
 * What a frontend sees of it is only xenstore keys, grant maps of the pages it granted, the ring page(s) and
 * the event channel, so any frontend that follows blkif.h works against it.
 *
 *   probe: write feature-max-indirect-segments, multi-queue-max-queues, max-ring-page-order; state InitWait.
 *   frontend Initialised/Connected (and we are not Connected): connect_ring reads protocol (absent = x86_32-abi,
 *   unknown = fatal), feature-persistent, multi-queue-num-queues (0 or > max = fatal), ring-page-order
 *   (ABSENT = one page under `ring-ref`; PRESENT, even "0" = 2^order pages under `ring-ref0..N-1`; > max =
 *   fatal), and per ring (top level for one queue, `queue-<i>/` otherwise) `event-channel` and the ring refs;
 *   maps the ring, refuses `req_prod - rsp_prod > RING_SIZE`, binds the event channel. Then connect() writes
 *   the disk's keys in one transaction and switches to Connected.
 *   frontend Closing: Closing. Closed: disconnect (after in-flight I/O completes), Closed; unregistered if the
 *   toolstack set online=0. Initialising while Closed: InitWait again (reconnect).
 *   `resize()` rewrites `sectors` and `state` (online resize). A fatal error is written under
 *   /local/domain/<backend>/error/... and the backend goes to Closing (xenbus_dev_fatal).
 */

import { DOM0 } from "../hypervisor/domain.ts";
import type { XenHost } from "../hypervisor/xen-host.ts";
import { XenStoreError, type XsHandle } from "../hypervisor/xenstore.ts";
import type { IoEngine } from "../storage/types.ts";
import {
  type BlkifLayout,
  MAX_INDIRECT_SEGMENTS,
  VDISK_READONLY,
  blkifLayout,
  parseBlkifProtocol,
} from "./abi.ts";
import {
  BLKBACK_MAX_PERSISTENT_GRANTS,
  BlkbackError,
  BlkbackIo,
  type BlkbackStats,
  type BlkifRing,
  zeroStats,
} from "./blkback-io.ts";
import { XENBUS_MAX_RING_GRANT_ORDER } from "./ring.ts";
import {
  XVDA,
  XenbusState,
  type XenbusStateValue,
  devFatal,
  readState,
  switchState,
  vbdPaths,
} from "./xenbus.ts";

export { BLKBACK_MAX_PERSISTENT_GRANTS, BlkbackError, BlkbackIo, type BlkbackStats };

export interface BlkbackOptions {
  host: XenHost;
  /** Storage. The engine's `onReady` is taken over by the backend. */
  engine: IoEngine;
  frontDom: number;
  backDom?: number;
  /** virtual-device number (the last path component; default xvda = 51712). */
  devid?: number;
  /** Advertised `max-ring-page-order` (default 4 = 16 pages). */
  maxRingPageOrder?: number;
  /** Advertised `multi-queue-max-queues` (Linux: online CPUs; default 4). */
  maxQueues?: number;
  /** Advertised `feature-max-indirect-segments` (default 256; 0 = indirect not offered). */
  maxIndirectSegments?: number;
  /** Offer and use persistent grants (default true). */
  persistent?: boolean;
  maxPersistentGrants?: number;
  /** Least time between two LRU purges of a ring's persistent grants (default 100 ms, Linux LRU_INTERVAL). */
  lruIntervalMs?: number;
  /** Merge adjacent reads/writes of a batch into one storage request (default false). */
  merge?: boolean;
  /** Advertise feature-flush-cache (default true: the medium has a write cache to flush). */
  flushCache?: boolean;
  /** Advertise feature-barrier (default true, = flush support, as Linux). */
  barrier?: boolean;
  /** Advertise feature-discard when the toolstack's discard-enable allows it (default true). */
  discard?: boolean;
  /** Advertise discard-secure and honour BLKIF_DISCARD_SECURE (default false). */
  discardSecure?: boolean;
  /** physical-sector-size (default the medium's sector size). */
  physicalSectorSize?: number;
  /** Start negotiating immediately (default true; else call `probe()`). */
  autoProbe?: boolean;
}

export class Blkback {
  readonly host: XenHost;
  readonly engine: IoEngine;
  readonly frontDom: number;
  readonly backDom: number;
  readonly devid: number;
  readonly backendPath: string;
  frontendPath: string;
  /** Counters, kept across reconnects. */
  readonly stats: BlkbackStats = zeroStats();
  readonly xs: XsHandle;
  private readonly opts: {
    maxRingPageOrder: number;
    maxQueues: number;
    maxIndirectSegments: number;
    persistent: boolean;
    maxPersistentGrants: number;
    lruIntervalMs: number | undefined;
    merge: boolean;
    flushCache: boolean;
    barrier: boolean;
    discard: boolean;
    discardSecure: boolean;
  };
  private readonly physicalSectorSize: number;

  /** The data path of the connected frontend (null when not connected). */
  io: BlkbackIo | null = null;
  /** The last fatal negotiation error (also written to xenstore). */
  lastError: string | null = null;

  private chain: Promise<void> = Promise.resolve();
  private readonly watchToken: string;
  private watching = false;
  private connectedSectors = 0;

  constructor(o: BlkbackOptions) {
    this.host = o.host;
    this.engine = o.engine;
    this.frontDom = o.frontDom;
    this.backDom = o.backDom ?? DOM0;
    this.devid = o.devid ?? XVDA;
    const paths = vbdPaths(this.frontDom, this.backDom, this.devid);
    this.backendPath = paths.backend;
    this.frontendPath = paths.frontend;
    this.xs = this.host.xs(this.backDom);
    this.opts = {
      maxRingPageOrder: Math.min(
        o.maxRingPageOrder ?? XENBUS_MAX_RING_GRANT_ORDER,
        XENBUS_MAX_RING_GRANT_ORDER,
      ),
      maxQueues: o.maxQueues ?? 4,
      maxIndirectSegments: Math.min(
        o.maxIndirectSegments ?? MAX_INDIRECT_SEGMENTS,
        MAX_INDIRECT_SEGMENTS * 2,
      ),
      persistent: o.persistent ?? true,
      maxPersistentGrants: o.maxPersistentGrants ?? BLKBACK_MAX_PERSISTENT_GRANTS,
      lruIntervalMs: o.lruIntervalMs,
      merge: o.merge ?? false,
      flushCache: o.flushCache ?? true,
      barrier: o.barrier ?? true,
      discard: o.discard ?? true,
      discardSecure: o.discardSecure ?? false,
    };
    this.physicalSectorSize = o.physicalSectorSize ?? this.engine.backend.sectorSize;
    this.watchToken = `blkback-${this.frontDom}-${this.devid}`;
    if (o.autoProbe ?? true) this.probe();
  }

  // Views of the connection, for callers and tests.
  get rings(): BlkifRing[] {
    return this.io?.rings ?? [];
  }
  get protocol(): BlkifLayout | null {
    return this.io?.layout ?? null;
  }
  get ringPages(): number {
    return this.io?.ringPages ?? 0;
  }
  get usePersistent(): boolean {
    return this.io?.usePersistent ?? false;
  }
  get readOnly(): boolean {
    return this.io?.readOnly ?? false;
  }
  /** Merging of adjacent requests into one storage I/O (switchable at run time). */
  get merge(): boolean {
    return this.opts.merge;
  }
  set merge(on: boolean) {
    this.opts.merge = on;
    if (this.io) this.io.merge = on;
  }

  get state(): number {
    return readState(this.xs, this.backendPath);
  }

  private switchState(s: XenbusStateValue): void {
    this.host.hv.tracer?.emit({ ev: "ring", ring: this.backendPath, what: "state", state: s });
    switchState(this.xs, this.backendPath, s);
  }

  /** Backend sectors in 512-byte blkif units. */
  private get size512(): number {
    const b = this.engine.backend;
    return (b.sectorCount * b.sectorSize) / 512;
  }

  /** xen_blkbk_probe: advertise transport limits, go to InitWait, watch the frontend. */
  probe(): void {
    const xs = this.xs;
    const p = this.backendPath;
    this.frontendPath = xs.tryRead(`${p}/frontend`) ?? this.frontendPath;
    xs.transaction((t) => {
      if (this.opts.maxIndirectSegments > 0) {
        xs.write(`${p}/feature-max-indirect-segments`, String(this.opts.maxIndirectSegments), t);
      }
      xs.write(`${p}/multi-queue-max-queues`, String(this.opts.maxQueues), t);
      xs.write(`${p}/max-ring-page-order`, String(this.opts.maxRingPageOrder), t);
    });
    this.switchState(XenbusState.InitWait);
    if (!this.watching) {
      this.watching = true;
      xs.watch(`${this.frontendPath}/state`, this.watchToken, () => {
        this.chain = this.chain
          .then(() => this.frontendChanged())
          .catch((e: unknown) => this.fatal(String(e)));
      });
    }
  }

  /** Resolves once every state change seen so far has been handled (tests and orderly shutdown). */
  settled(): Promise<void> {
    return this.chain;
  }

  private fatal(message: string): void {
    this.lastError = message;
    this.host.hv.tracer?.emit({ ev: "note", text: `blkback ${this.backendPath}: ${message}` });
    devFatal(this.xs, this.backendPath, message);
  }

  /** frontend_changed. */
  private async frontendChanged(): Promise<void> {
    const fe = readState(this.xs, this.frontendPath);
    const me = this.state;
    switch (fe) {
      case XenbusState.Initialising:
        if (me === XenbusState.Closed) this.switchState(XenbusState.InitWait); // prepare for reconnect
        return;
      case XenbusState.Initialised:
      case XenbusState.Connected:
        // Two watch events in quick succession may skip Initialised: connect on either, once.
        if (me === XenbusState.Connected) return;
        if (me !== XenbusState.InitWait && me !== XenbusState.Initialised) return;
        await this.disconnect();
        try {
          this.connectRing();
        } catch (e) {
          await this.disconnect();
          this.fatal(e instanceof Error ? e.message : String(e));
          return;
        }
        this.connect();
        return;
      case XenbusState.Closing:
        this.switchState(XenbusState.Closing);
        return;
      case XenbusState.Closed:
        await this.disconnect();
        this.switchState(XenbusState.Closed);
        if (this.xs.tryRead(`${this.backendPath}/online`) === "1") return;
        this.remove();
        return;
      case XenbusState.Unknown:
        await this.disconnect();
        this.remove();
        return;
      default:
        return;
    }
  }

  /** Unregister: stop watching (the device is gone once the toolstack set online=0 and both ends closed). */
  remove(): void {
    if (this.watching) {
      this.watching = false;
      try {
        this.xs.unwatch(`${this.frontendPath}/state`, this.watchToken);
      } catch {
        /* already gone */
      }
    }
  }

  /** connect_ring: read the frontend's transport keys, map the rings, bind the event channels. */
  private connectRing(): void {
    const xs = this.xs;
    const fe = this.frontendPath;
    const proto = xs.tryRead(`${fe}/protocol`);
    const abi = parseBlkifProtocol(proto);
    if (!abi) throw new BlkbackError(`unknown fe protocol ${proto}`);
    const persistent = this.opts.persistent && xs.readInt(`${fe}/feature-persistent`) === 1;
    const nqKey = xs.tryRead(`${fe}/multi-queue-num-queues`);
    const nq = nqKey === undefined ? 1 : xs.readInt(`${fe}/multi-queue-num-queues`);
    if (nq === undefined || nq <= 0 || nq > this.opts.maxQueues) {
      throw new BlkbackError(`Invalid number of requested queues ${nqKey}, max ${this.opts.maxQueues}`);
    }
    // The trap: an ABSENT ring-page-order means one page under `ring-ref`; a PRESENT one, even "0", means
    // 2^order pages under ring-ref0..N-1 (Linux read_per_ring_refs).
    const orderKey = xs.tryRead(`${fe}/ring-page-order`);
    let order = -1;
    if (orderKey !== undefined) {
      const o = xs.readInt(`${fe}/ring-page-order`);
      if (o === undefined || o < 0 || o > this.opts.maxRingPageOrder) {
        throw new BlkbackError(
          `requested ring page order ${orderKey} exceed max:${this.opts.maxRingPageOrder}`,
        );
      }
      order = o;
    }
    // Gather every ring's keys before mapping anything.
    const rings: { dir: string; refs: number[]; port: number }[] = [];
    for (let q = 0; q < nq; q++) {
      const dir = nq === 1 ? fe : `${fe}/queue-${q}`;
      const port = xs.readInt(`${dir}/event-channel`);
      if (port === undefined) throw new BlkbackError(`reading ${dir}/event-channel`);
      const refs: number[] = [];
      if (order < 0) {
        const ref = xs.readInt(`${dir}/ring-ref`);
        if (ref === undefined) throw new BlkbackError(`reading ${dir}/ring-ref`);
        refs.push(ref);
      } else {
        for (let i = 0; i < 1 << order; i++) {
          const ref = xs.readInt(`${dir}/ring-ref${i}`);
          if (ref === undefined) throw new BlkbackError(`reading ${dir}/ring-ref${i}`);
          refs.push(ref);
        }
      }
      rings.push({ dir, refs, port });
    }
    const mode = xs.tryRead(`${this.backendPath}/mode`) ?? "w";
    const io = new BlkbackIo({
      name: this.backendPath,
      engine: this.engine,
      grants: this.host.grants(this.backDom),
      evtchn: this.host.evtchn,
      frontDom: this.frontDom,
      backDom: this.backDom,
      frontMem: this.host.grantTable(this.frontDom)?.mem ?? null,
      layout: blkifLayout(abi),
      readOnly: !mode.includes("w"),
      persistent,
      maxPersistentGrants: this.opts.maxPersistentGrants,
      ...(this.opts.lruIntervalMs !== undefined ? { lruIntervalMs: this.opts.lruIntervalMs } : {}),
      maxIndirectSegments: this.opts.maxIndirectSegments,
      merge: this.opts.merge,
      discardSecure: this.opts.discardSecure,
      stats: this.stats,
      tracer: this.host.hv.tracer,
      onFlushUnsupported: () => this.dropFlushFeatures(),
    });
    this.io = io;
    for (const r of rings) io.attachRing({ refs: r.refs, remotePort: r.port }, r.dir);
  }

  /** connect(): advertise the disk in one transaction, then Connected. */
  private connect(): void {
    const xs = this.xs;
    const p = this.backendPath;
    const b = this.engine.backend;
    const discardEnable = xs.tryRead(`${p}/discard-enable`) !== "0";
    xs.transaction((t) => {
      xs.write(`${p}/feature-flush-cache`, this.opts.flushCache ? "1" : "0", t);
      // xen_blkbk_discard: nothing at all if the toolstack disabled discard; the granularity keys only when
      // the medium can discard; feature-discard says which.
      if (discardEnable) {
        if (this.opts.discard) {
          xs.write(`${p}/discard-granularity`, String(b.sectorSize), t);
          xs.write(`${p}/discard-alignment`, "0", t);
          xs.write(`${p}/discard-secure`, this.opts.discardSecure ? "1" : "0", t);
        }
        xs.write(`${p}/feature-discard`, this.opts.discard ? "1" : "0", t);
      }
      xs.write(`${p}/feature-barrier`, this.opts.barrier ? "1" : "0", t);
      xs.write(`${p}/feature-persistent`, this.opts.persistent ? "1" : "0", t);
      xs.write(`${p}/sectors`, String(this.size512), t);
      xs.write(`${p}/info`, String(this.readOnly ? VDISK_READONLY : 0), t);
      xs.write(`${p}/sector-size`, String(b.sectorSize), t);
      xs.write(`${p}/physical-sector-size`, String(this.physicalSectorSize), t);
    });
    this.connectedSectors = this.size512;
    this.switchState(XenbusState.Connected);
    // Requests may already be waiting (a frontend that pushed before we connected).
    this.io?.pump();
  }

  /**
   * Online resize: the medium changed size. Rewrites `sectors` and `state` in one transaction so the
   * frontend's state watch fires and it re-reads the size (as Linux blkback's xen_blkbk_resize does).
   */
  resize(): void {
    if (this.state !== XenbusState.Connected) return;
    if (this.size512 === this.connectedSectors) return;
    const p = this.backendPath;
    this.xs.transaction((t) => {
      this.xs.write(`${p}/sectors`, String(this.size512), t);
      this.xs.write(`${p}/state`, String(XenbusState.Connected), t);
    });
    this.connectedSectors = this.size512;
  }

  /** xen_blkif_disconnect: in-flight I/O completes and is answered, then everything is unmapped and closed. */
  async disconnect(): Promise<void> {
    const io = this.io;
    if (!io) return;
    await io.disconnect();
    this.io = null;
  }

  /** Serve the rings now (the event-channel upcall does this; exposed for hosts that poll). */
  pump(): void {
    this.io?.pump();
  }

  private dropFlushFeatures(): void {
    try {
      this.xs.write(`${this.backendPath}/feature-flush-cache`, "0");
      this.xs.write(`${this.backendPath}/feature-barrier`, "0");
    } catch (e) {
      if (!(e instanceof XenStoreError)) throw e;
    }
  }
}
