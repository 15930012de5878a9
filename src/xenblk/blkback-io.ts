/**
 * The block backend's data path (Linux drivers/block/xen-blkback/blkback.c; QEMU xen-block's completion and
 * notify discipline): rings attached from their grant refs and event channel, requests consumed, validated,
 * mapped and handed to the storage engine, one response per completed request.
 *
 * It needs no xenstore: `Blkback` (the xenbus side) negotiates and then attaches rings here. Given the shared
 * grant-table and event-channel state of a host (`xenSharedState(host)` / `attachXenShared`), the same data path
 * runs on another thread over the same guest memory.
 *
 * Requests: each request is copied out of the shared ring before it is validated (decodeRequest reads each
 * field of the slot once into a private record), checked in Linux's order with Linux's status for each bad input, its grants mapped
 * (read-only for writes, writable for reads; always writable when persistent), then handed to the storage
 * `IoEngine`. One response per request when its I/O has completed and its data is in the guest's pages,
 * pushed with RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: the event channel is kicked only when the frontend asked
 * (rsp_event). The ring is drained and req_event re-armed (RING_FINAL_CHECK_FOR_REQUESTS) only when idle. A
 * frontend publishing more requests than the ring holds halts that ring for good; others go on.
 *
 * Merging (optional, off by default): adjacent reads or adjacent writes consumed in one batch become one
 * storage request; each still gets its own response. Counted in `stats.merged`.
 */

import { EventChannelError, type EventChannels } from "../hypervisor/event-channel.ts";
import {
  GNTMAP_host_map,
  GNTMAP_readonly,
  GNTST_okay,
  type GrantMapOp,
  type GrantMapper,
  type GrantMapResult,
} from "../hypervisor/grant-table.ts";
import type { GuestMemory } from "../hypervisor/memory.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import type { IoCompletion, IoEngine, IoOp, IoRequest } from "../storage/types.ts";
import {
  BLKIF_DISCARD_SECURE,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP_DISCARD,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  BLKIF_SECTORS_PER_PAGE,
  BlkifRequest,
  type BlkifLayout,
  MAX_INDIRECT_SEGMENTS,
  SEGS_PER_INDIRECT_FRAME,
  decodeRequest,
  decodeSegments,
  decodeSegmentsWords,
  encodeResponse,
  indirectPages,
} from "./abi.ts";
import { PersistentGrantMap } from "./persistent-grants.ts";
import { BackRing, RING_PAGE_SIZE, type SharedRing } from "./ring.ts";

/** Empty an array in place. Popping is inlined by V8; assigning `length` is a call into the runtime. */
function emptyArray(a: unknown[]): void {
  while (a.length > 0) a.pop();
}

const NO_MAPS: GrantMapResult[] = [];
const NO_BUFS: Uint8Array[] = [];

/** Request records kept for reuse (more than any ring set has in flight: 4 queues x 512 slots). */
const POOL_MAX = 2048;

/** Linux blkback `max_persistent_grants` default (xen_blkif_max_pgrants). */
export const BLKBACK_MAX_PERSISTENT_GRANTS = 1056;

/** Linux blkback LRU_INTERVAL: the persistent grants are looked at for purging at most this often (ms). */
export const BLKBACK_LRU_INTERVAL_MS = 100;

/** Linux blkback LRU_PERCENT_CLEAN: a purge removes this percentage of max_pgrants, plus any excess. */
export const BLKBACK_LRU_PERCENT_CLEAN = 5;

export interface BlkbackStats {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  barriers: number;
  discards: number;
  indirect: number;
  /** Responses with BLKIF_RSP_ERROR / BLKIF_RSP_EOPNOTSUPP. */
  errors: number;
  eopnotsupp: number;
  responses: number;
  /** Event-channel kicks sent to the frontend (after the rsp_event check). */
  notifies: number;
  /** Storage requests submitted to the engine. */
  storageIos: number;
  /** Requests merged into the previous storage request. */
  merged: number;
  persistentHits: number;
  persistentMaps: number;
  /** Persistent grants unmapped by the LRU purge (purge_persistent_gnt). */
  persistentPurged: number;
  /** Rings halted because the frontend overran them. */
  ringsHalted: number;
}

export function zeroStats(): BlkbackStats {
  return {
    requests: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    barriers: 0,
    discards: 0,
    indirect: 0,
    errors: 0,
    eopnotsupp: 0,
    responses: 0,
    notifies: 0,
    storageIos: 0,
    merged: 0,
    persistentHits: 0,
    persistentMaps: 0,
    persistentPurged: 0,
    ringsHalted: 0,
  };
}

/** A persistently mapped grant (feature-persistent): kept mapped across requests, keyed by gref. */
interface PersistentGrant {
  handle: number;
  page: Uint8Array;
  gpa: number;
  /** In use by a request right now (a second request using the same gref maps it separately). */
  active: boolean;
  /** Used since the last purge (Linux PERSISTENT_GNT_WAS_ACTIVE): the purge spares it while it can. */
  wasActive: boolean;
  /** The page as 32-bit words, made the first time it serves as an indirect page (null until then). */
  words: Uint32Array | null;
}

/** One request between parsing and its response. */
interface PendingReq {
  ring: BlkifRing;
  idLo: number;
  idHi: number;
  /** Operation echoed in the response (indirect_op for BLKIF_OP_INDIRECT). */
  rspOp: number;
  status: number;
  /** Storage steps still to run, in order: a flush before the data for FLUSH_DISKCACHE/WRITE_BARRIER. */
  steps: IoOp[];
  /** Sector in medium units, the data buffers (views of granted pages), total bytes. */
  sector: number;
  bufs: Uint8Array[];
  bytes: number;
  count: number;
  /** Bounce buffer when the medium's sectors are larger than the segments. */
  bounce: Uint8Array | null;
  /** Non-persistent grant handles to unmap; persistent grants to release. */
  handles: number[];
  persistent: PersistentGrant[];
  /** Grant pages written by a read (the mapper's memory is told). */
  readGpas: number[];
  barrier: boolean;
  /** The request alone as a storage group (one array per record, reused: submitting allocates none). */
  readonly self: PendingReq[];
  /** Where the data lies when its segments follow each other in the frontend's memory (-1: they do not). */
  runGpa: number;
  /** The last one-buffer view of contiguous segments (at `joinedGpa`), and the list holding it. */
  joined: Uint8Array | null;
  joinedGpa: number;
  readonly joinedList: Uint8Array[];
}

/** One ring (one queue) of a connected frontend. */
export class BlkifRing {
  back!: ServedRing;
  port = 0;
  ringHandles: number[] = [];
  readonly persistent = new PersistentGrantMap<PersistentGrant>();
  /** Persistent grants in use by a request (persistent_gnt_in_use). */
  persistentInUse = 0;
  /** A grant could not be kept because `persistent` was full (vbd.overflow_max_grants). */
  overflowMaxGrants = false;
  /** Earliest time of the next purge (ring->next_lru), in performance.now() milliseconds. */
  nextLru = 0;
  inflight = 0;
  halted = false;
  /** Consuming stopped with requests left (no slot for their responses, or a barrier draining). */
  stalled = false;
  /** A WRITE_BARRIER waiting for this ring's in-flight I/O to drain; no request is consumed meanwhile. */
  barrierWait: PendingReq | null = null;
  /** Private copy of the slot being parsed (never validate the shared page). */
  slot: Uint8Array;
  readonly req = new BlkifRequest();
  /** Scratch for segments (direct or copied from indirect pages). */
  readonly segGref = new Uint32Array(MAX_INDIRECT_SEGMENTS * 2);
  readonly segFirst = new Uint8Array(MAX_INDIRECT_SEGMENTS * 2);
  readonly segLast = new Uint8Array(MAX_INDIRECT_SEGMENTS * 2);
  /** Scratch of mapSegments: each segment's page and its guest address, the segments still to map. */
  readonly segPages: (Uint8Array | null)[] = new Array<Uint8Array | null>(MAX_INDIRECT_SEGMENTS * 2).fill(
    null,
  );
  readonly segGpas = new Float64Array(MAX_INDIRECT_SEGMENTS * 2);
  readonly toMap: number[] = [];
  /** Scratch of the indirect pages' map operations, and each page's persistent grant or one-off mapping. */
  readonly indirectOps: GrantMapOp[] = [];
  readonly indirectFound: (PersistentGrant | null)[] = new Array<PersistentGrant | null>(
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  ).fill(null);
  readonly indirectPages: (Uint8Array | null)[] = new Array<Uint8Array | null>(
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  ).fill(null);
  constructor(
    readonly index: number,
    readonly layout: BlkifLayout,
    readonly pages: number,
  ) {
    this.slot = new Uint8Array(layout.entrySize);
  }
}

export class BlkbackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlkbackError";
  }
}

export interface BlkbackIoOptions {
  /** A name for traces (the backend's xenstore directory). */
  name: string;
  engine: IoEngine;
  /** The backend domain's grant operations and the host's event channels (possibly attached on another thread). */
  grants: GrantMapper;
  evtchn: EventChannels;
  frontDom: number;
  backDom: number;
  /** The frontend's memory (told about pages written by reads); optional. */
  frontMem?: GuestMemory | null;
  layout: BlkifLayout;
  readOnly: boolean;
  persistent: boolean;
  maxPersistentGrants?: number;
  /** Least time between two purges of a ring's persistent grants (default LRU_INTERVAL, 100 ms). */
  lruIntervalMs?: number;
  maxIndirectSegments?: number;
  merge?: boolean;
  discardSecure?: boolean;
  stats?: BlkbackStats;
  tracer?: Tracer | null;
  /** A flush the medium cannot do was answered EOPNOTSUPP (blkback then stops advertising flush). */
  onFlushUnsupported?: () => void;
}

/** Where a ring is: its grant refs (in ring-page order) and the frontend's event-channel port. */
export interface RingParams {
  refs: readonly number[];
  /** The frontend's unbound port, to bind to... */
  remotePort?: number;
  /** ...or our port already bound to it (the ring was attached once on another thread). */
  localPort?: number;
}

export class BlkbackIo {
  readonly name: string;
  readonly engine: IoEngine;
  readonly grants: GrantMapper;
  readonly evtchn: EventChannels;
  readonly frontDom: number;
  readonly backDom: number;
  readonly layout: BlkifLayout;
  readonly readOnly: boolean;
  readonly usePersistent: boolean;
  readonly stats: BlkbackStats;
  readonly rings: BlkifRing[] = [];
  private readonly frontMem: GuestMemory | null;
  private readonly tracer: Tracer | null;
  private readonly onFlushUnsupported: (() => void) | undefined;
  private readonly opts: {
    maxPersistentGrants: number;
    lruIntervalMs: number;
    maxIndirectSegments: number;
    discardSecure: boolean;
    merge: boolean;
  };

  /**
   * Storage requests in flight: the group of each tag (tag = index + 1; free indices reused, so the table
   * stays as small as the most ever in flight and a lookup is an array access).
   */
  private readonly pending: (PendingReq[] | null)[] = [];
  private readonly freeTags: number[] = [];
  private pendingCount = 0;
  private batch: PendingReq[] = [];
  private pumping = false;
  private again = false;
  private readonly completions: IoCompletion[] = [];
  /**
   * The storage request of every read and write, refilled each time: an engine keeps nothing of a request once
   * `submit` returns (IoEngine's contract), so the I/O path allocates none.
   */
  private readonly rwRequest: IoRequest = { op: "read", tag: 0, sector: 0, bufs: NO_BUFS };
  /** Answered request records, reused by the next requests. */
  private readonly freePending: PendingReq[] = [];
  /** Disconnecting: finish what is in flight, consume nothing new. */
  private stopping = false;

  constructor(o: BlkbackIoOptions) {
    this.name = o.name;
    this.engine = o.engine;
    this.grants = o.grants;
    this.evtchn = o.evtchn;
    this.frontDom = o.frontDom;
    this.backDom = o.backDom;
    this.layout = o.layout;
    this.readOnly = o.readOnly || o.engine.backend.readOnly;
    this.usePersistent = o.persistent;
    this.stats = o.stats ?? zeroStats();
    this.frontMem = o.frontMem ?? null;
    this.tracer = o.tracer ?? null;
    this.onFlushUnsupported = o.onFlushUnsupported;
    this.opts = {
      maxPersistentGrants: o.maxPersistentGrants ?? BLKBACK_MAX_PERSISTENT_GRANTS,
      lruIntervalMs: o.lruIntervalMs ?? BLKBACK_LRU_INTERVAL_MS,
      maxIndirectSegments: o.maxIndirectSegments ?? MAX_INDIRECT_SEGMENTS,
      discardSecure: o.discardSecure ?? false,
      merge: o.merge ?? false,
    };
    // The sync engine completes inside submit and every submit happens inside pump, which reaps before it
    // returns: it needs no wake-up (which would cost a microtask per request). The async engine does.
    this.engine.onReady = this.engine.kind === "sync" ? null : () => this.pump();
  }

  get merge(): boolean {
    return this.opts.merge;
  }
  set merge(on: boolean) {
    this.opts.merge = on;
  }

  /** The medium's size in 512-byte blkif sectors. */
  get size512(): number {
    const b = this.engine.backend;
    return (b.sectorCount * b.sectorSize) / 512;
  }

  /** Pages per ring (of the first ring). */
  get ringPages(): number {
    return this.rings[0]?.pages ?? 0;
  }

  /**
   * Map a ring's pages writable, check the indices, bind (or adopt) its event channel and start serving it.
   * Throws BlkbackError (nothing stays mapped or bound) when the frontend's parameters are unusable.
   */
  attachRing(params: RingParams, what = this.name): BlkifRing {
    const refs = params.refs;
    const ring = new BlkifRing(this.rings.length, this.layout, refs.length);
    const maps = this.grants.mapBatch(
      refs.map((ref) => ({ dom: this.frontDom, ref, flags: GNTMAP_host_map })),
    );
    const ok = maps.filter((m) => m.status === GNTST_okay);
    ring.ringHandles = ok.map((m) => m.handle);
    if (ok.length !== maps.length) {
      this.grants.unmapBatch(ring.ringHandles);
      throw new BlkbackError(
        `mapping ring-ref of ${what}: status ${maps.find((m) => m.status !== GNTST_okay)!.status}`,
      );
    }
    // BACK_RING_ATTACH at the page's rsp_prod: a ring that was in use resumes where the responses stopped.
    const page0 = maps[0]!.page!;
    const rspProd = Atomics.load(new Uint32Array(page0.buffer, page0.byteOffset, 4), 2);
    // Pages that follow each other in the granter's memory are served as one view (the common case: Linux
    // and Mini-OS allocate rings contiguously); otherwise slots are gathered across the pages, as the
    // virtually contiguous mapping Linux blkback builds would present them.
    const view = contiguousView(maps);
    ring.back = view
      ? new ViewBackRing(view, this.layout.entrySize, refs.length, rspProd)
      : new PagedBackRing(
          maps.map((m) => m.page!),
          this.layout.entrySize,
          rspProd,
        );
    // The ring goes to another thread exactly when this domain's event channels do (xenSharedState).
    ring.back.sring.sharing = this.evtchn.domain(this.backDom);
    if (ring.back.requestProdOverflow(ring.back.sring.reqProd)) {
      this.grants.unmapBatch(ring.ringHandles);
      throw new BlkbackError(
        `${what}: req_prod ${ring.back.sring.reqProd} runs ahead of rsp_prod by more than the ring`,
      );
    }
    if (params.localPort !== undefined) ring.port = params.localPort;
    else {
      try {
        ring.port = this.evtchn.bindInterdomain(this.backDom, this.frontDom, params.remotePort ?? -1);
      } catch (e) {
        this.grants.unmapBatch(ring.ringHandles);
        if (e instanceof EventChannelError)
          throw new BlkbackError(`binding event-channel ${params.remotePort}: ${e.message}`);
        throw e;
      }
    }
    this.rings.push(ring);
    this.evtchn.bindHandler(this.backDom, ring.port, () => this.pump());
    return ring;
  }

  /**
   * xen_blkif_disconnect: wait for in-flight I/O (its data still lands in guest pages and it is answered),
   * then unmap persistent grants and the rings and close the event channels.
   */
  async disconnect(): Promise<void> {
    if (this.rings.length === 0) return;
    this.stopping = true;
    while (this.pendingCount > 0 || this.engine.inflight > 0) {
      await this.engine.drain();
      this.pump();
      if (this.pendingCount > 0 && this.engine.inflight === 0) break; // nothing left that could complete
    }
    for (const r of this.rings) {
      const handles = [...r.persistent.values()].map((g) => g.handle);
      r.persistent.clear();
      r.persistentInUse = 0;
      r.overflowMaxGrants = false;
      if (handles.length) this.grants.unmapBatch(handles);
      this.grants.unmapBatch(r.ringHandles);
      r.ringHandles = [];
      try {
        this.evtchn.unbindHandler(this.backDom, r.port);
        this.evtchn.close(this.backDom, r.port);
      } catch {
        /* the frontend may have closed its end already: ours is still ours to close */
      }
    }
    this.rings.length = 0;
    this.stopping = false;
  }

  /**
   * The backend's loop (xen_blkif_schedule + do_block_io_op): reap storage completions and answer them,
   * consume every ring's requests, submit, and repeat until nothing moves. Re-entrant calls fold into the
   * running one.
   */
  pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        this.reap();
        if (!this.stopping) {
          for (const r of this.rings) {
            if (r.halted) continue;
            // xen_blkif_schedule: purge the persistent grants when the table is full, at most every LRU_INTERVAL.
            if (this.usePersistent && r.persistent.size >= this.opts.maxPersistentGrants) this.lruPurge(r);
            this.consume(r);
          }
        }
        this.submitBatch();
        // The sync engine completed everything inside submit: answer it in this same pass.
        if (this.engine.kind === "sync") this.reap();
      } while (this.again);
    } finally {
      this.pumping = false;
    }
  }

  /** __do_block_io_op + RING_FINAL_CHECK_FOR_REQUESTS for one ring. */
  private consume(r: BlkifRing): void {
    const back = r.back;
    r.stalled = true; // until the ring is found drained below
    for (;;) {
      if (r.barrierWait) return; // draining for a barrier: consume nothing until it has been issued
      const rp = back.sring.reqProd;
      if (back.requestProdOverflow(rp)) {
        // "Frontend provided bogus ring requests ... Halting ring processing": this ring only, for good.
        r.halted = true;
        this.stats.ringsHalted++;
        this.tracer?.emit({
          ev: "ring",
          ring: this.name,
          what: "halted",
          queue: r.index,
          reqProd: rp,
        });
        return;
      }
      while (back.reqCons !== rp) {
        // No slot left for the response: wait for completions (they call pump again).
        if (back.requestConsOverflow()) return;
        const off = back.nextRequest();
        // Take the request out of the shared page first; everything below looks at the copy only.
        back.readRequest(off, r.layout, r.slot, r.req);
        this.dispatch(r, r.req);
        if (r.barrierWait) return;
      }
      if (back.finalCheckForRequests() === 0) {
        r.stalled = false; // drained, req_event re-armed: the frontend's next push notifies us
        return;
      }
    }
  }

  private respondNow(r: BlkifRing, req: BlkifRequest, op: number, status: number): void {
    this.respond(r, req.idLo, req.idHi, op, status);
  }

  /** A request that fails validation or mapping: BLKIF_RSP_ERROR, and the ring goes on. */
  private refuse(r: BlkifRing, req: BlkifRequest, op: number): void {
    this.respond(r, req.idLo, req.idHi, op, BLKIF_RSP_ERROR);
  }

  /** dispatch_rw_block_io / dispatch_discard_io / dispatch_other_io. */
  private dispatch(r: BlkifRing, req: BlkifRequest): void {
    this.stats.requests++;
    const op = req.operation;
    switch (op) {
      case BLKIF_OP_READ:
      case BLKIF_OP_WRITE:
      case BLKIF_OP_WRITE_BARRIER:
      case BLKIF_OP_FLUSH_DISKCACHE:
      case BLKIF_OP_INDIRECT:
        this.dispatchRw(r, req);
        return;
      case BLKIF_OP_DISCARD:
        this.dispatchDiscard(r, req);
        return;
      default:
        // dispatch_other_io: unknown operation (incl. RESERVED_1): EOPNOTSUPP with the operation echoed.
        this.respondNow(r, req, op, BLKIF_RSP_EOPNOTSUPP);
        return;
    }
  }

  /** A request record, from the pool of answered ones when there is one (the I/O path allocates none). */
  private newPending(r: BlkifRing, req: BlkifRequest, rspOp: number): PendingReq {
    const p = this.freePending.pop();
    if (!p) {
      const self: PendingReq[] = [];
      const fresh: PendingReq = {
        ring: r,
        idLo: req.idLo,
        idHi: req.idHi,
        rspOp,
        status: BLKIF_RSP_OKAY,
        steps: [],
        sector: 0,
        bufs: [],
        bytes: 0,
        count: 0,
        bounce: null,
        handles: [],
        persistent: [],
        readGpas: [],
        barrier: false,
        self,
        runGpa: -1,
        joined: null,
        joinedGpa: -1,
        joinedList: [],
      };
      self.push(fresh);
      return fresh;
    }
    p.ring = r;
    p.idLo = req.idLo;
    p.idHi = req.idHi;
    p.rspOp = rspOp;
    p.status = BLKIF_RSP_OKAY;
    emptyArray(p.steps);
    p.sector = 0;
    emptyArray(p.bufs);
    p.bytes = 0;
    p.count = 0;
    p.bounce = null;
    p.runGpa = -1;
    emptyArray(p.handles);
    emptyArray(p.persistent);
    emptyArray(p.readGpas);
    p.barrier = false;
    return p;
  }

  /** Back to the pool: nothing refers to the record any more (answered, or refused before any I/O). */
  private recycle(p: PendingReq): void {
    p.bounce = null;
    emptyArray(p.bufs);
    if (this.freePending.length < POOL_MAX) this.freePending.push(p);
  }

  private dispatchRw(r: BlkifRing, req: BlkifRequest): void {
    const indirect = req.operation === BLKIF_OP_INDIRECT;
    const op = indirect ? req.indirectOp : req.operation;
    if (indirect) {
      this.stats.indirect++;
      if (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) return this.refuse(r, req, op);
    }
    const isFlushLike = op === BLKIF_OP_FLUSH_DISKCACHE || op === BLKIF_OP_WRITE_BARRIER;
    const nseg = req.nrSegments;
    const maxIndirect = this.opts.maxIndirectSegments;
    if (
      (nseg === 0 && !isFlushLike) ||
      (!indirect && nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST) ||
      (indirect && nseg > maxIndirect)
    ) {
      return this.refuse(r, req, op);
    }
    // Segments: straight from the request, or copied out of the indirect pages.
    if (indirect) {
      if (!this.parseIndirect(r, req, nseg)) return this.refuse(r, req, op);
    } else {
      for (let i = 0; i < nseg; i++) {
        r.segGref[i] = req.segGref[i]!;
        r.segFirst[i] = req.segFirst[i]!;
        r.segLast[i] = req.segLast[i]!;
      }
    }
    let nsec = 0;
    for (let i = 0; i < nseg; i++) {
      const first = r.segFirst[i]!;
      const last = r.segLast[i]!;
      if (last >= BLKIF_SECTORS_PER_PAGE || last < first) return this.refuse(r, req, op);
      nsec += last - first + 1;
    }
    // xen_vbd_translate: anything but a read is refused on a read-only vbd; the range must not wrap or pass the end.
    if (op !== BLKIF_OP_READ && this.readOnly) return this.refuse(r, req, op);
    const sector = req.sector;
    if (nsec > 0 && (req.sectorHi >= 0x200000 || sector + nsec > this.size512))
      return this.refuse(r, req, op);
    const unit = this.engine.backend.sectorSize / 512;
    if (((sector % unit) | (nsec % unit)) !== 0) return this.refuse(r, req, op); // "Misaligned I/O request"
    // Map the data pages: writable for a read (we write the guest's page), read-only for a write.
    const p = this.newPending(r, req, op);
    const writable = op === BLKIF_OP_READ;
    if (!this.mapSegments(r, p, nseg, writable)) {
      this.release(p);
      this.recycle(p);
      return this.refuse(r, req, op);
    }
    p.sector = sector / unit;
    p.count = nsec / unit;
    p.bytes = nsec * 512;
    if (unit !== 1 && p.bufs.length > 0) {
      // The medium's sectors are larger than a segment may be: go through one bounce buffer.
      p.bounce = new Uint8Array(p.bytes);
      if (!writable) {
        let o = 0;
        for (const b of p.bufs) {
          p.bounce.set(b, o);
          o += b.length;
        }
      }
    }
    switch (op) {
      case BLKIF_OP_READ:
        this.stats.reads++;
        p.steps.push("read");
        break;
      case BLKIF_OP_WRITE:
        this.stats.writes++;
        p.steps.push("write");
        break;
      case BLKIF_OP_FLUSH_DISKCACHE:
        // A flush with data is a pre-flush then the write (Linux REQ_PREFLUSH, QEMU presync).
        this.stats.flushes++;
        p.steps.push("flush");
        if (nseg > 0) p.steps.push("write");
        break;
      case BLKIF_OP_WRITE_BARRIER:
        this.stats.barriers++;
        p.steps.push("flush");
        if (nseg > 0) p.steps.push("write");
        p.barrier = true;
        break;
    }
    r.inflight++;
    if (p.barrier && r.inflight > 1) {
      // drain_io: all of this ring's earlier requests complete before the barrier starts.
      this.submitBatch();
      r.barrierWait = p;
      return;
    }
    this.queue(p);
  }

  /**
   * xen_blkbk_parse_indirect: copy the segment list out of the indirect pages. Without persistent grants the
   * pages are mapped read-only for the parse and unmapped after it. With them, as Linux blkback does, the
   * pages go through the persistent grants like data pages: found mapped, or mapped (writable, as every
   * persistent mapping) and kept while there is room, so a frontend that reuses its indirect pages costs no
   * map/unmap pair per request.
   */
  private parseIndirect(r: BlkifRing, req: BlkifRequest, nseg: number): boolean {
    const pages = Math.min(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, indirectPages(nseg));
    const ops = r.indirectOps;
    emptyArray(ops);
    const found = r.indirectFound;
    const persistent = this.usePersistent;
    for (let i = 0; i < pages; i++) {
      const ref = req.indirectGrefs[i]!;
      const g = persistent ? r.persistent.get(ref) : undefined;
      if (g && !g.active) {
        g.active = true;
        r.persistentInUse++;
        found[i] = g;
        this.stats.persistentHits++;
        continue;
      }
      found[i] = null;
      ops.push({ dom: this.frontDom, ref, flags: GNTMAP_host_map | (persistent ? 0 : GNTMAP_readonly) });
    }
    const maps = ops.length ? this.grants.mapBatch(ops) : NO_MAPS;
    const once = r.toMap;
    emptyArray(once);
    let ok = true;
    for (let i = 0, k = 0; i < pages; i++) {
      if (found[i] !== null) continue;
      const m = maps[k++]!;
      if (m.status !== GNTST_okay) {
        ok = false;
        continue;
      }
      const g = persistent ? this.keepPersistent(r, ops[k - 1]!.ref, m) : null;
      if (g) found[i] = g;
      else {
        once.push(m.handle);
        found[i] = null;
        r.indirectPages[i] = m.page!;
      }
    }
    if (ok) {
      for (let i = 0; i < pages; i++) {
        const g = found[i];
        const page = g ? g.page : r.indirectPages[i]!;
        const n = Math.min(SEGS_PER_INDIRECT_FRAME, nseg - i * SEGS_PER_INDIRECT_FRAME);
        // A page kept mapped is read by words (made once); a page mapped for this request alone by bytes.
        if (g && g.words === null && page.byteOffset % 4 === 0 && page.length >= RING_PAGE_SIZE)
          g.words = new Uint32Array(page.buffer, page.byteOffset, RING_PAGE_SIZE / 4);
        const words = g ? g.words : null;
        if (words)
          decodeSegmentsWords(words, 0, n, r.segGref, r.segFirst, r.segLast, i * SEGS_PER_INDIRECT_FRAME);
        else decodeSegments(page, 0, n, r.segGref, r.segFirst, r.segLast, i * SEGS_PER_INDIRECT_FRAME);
      }
    }
    // xen_blkbk_unmap at the end of the parse: persistent grants are put back, the others unmapped.
    for (let i = 0; i < pages; i++) {
      const g = found[i];
      if (g) this.putPersistent(r, g);
      found[i] = null;
      r.indirectPages[i] = null;
    }
    if (once.length) this.grants.unmapBatch(once);
    return ok;
  }

  /**
   * Keep a grant just mapped as persistent when the ring has room (and mark it in use), else note the overflow
   * (vbd.overflow_max_grants, which lets the purge run) and return null: the caller unmaps it after use.
   */
  private keepPersistent(r: BlkifRing, gref: number, m: GrantMapResult): PersistentGrant | null {
    if (r.persistent.has(gref)) return null; // the same gref twice in one request: the second maps alone
    if (r.persistent.size >= this.opts.maxPersistentGrants) {
      r.overflowMaxGrants = true;
      return null;
    }
    const g: PersistentGrant = {
      handle: m.handle,
      page: m.page!,
      gpa: m.gpa,
      active: true,
      wasActive: false,
      words: null,
    };
    r.persistent.set(gref, g);
    r.persistentInUse++;
    this.stats.persistentMaps++;
    return g;
  }

  /** put_persistent_gnt: no longer in use, and remembered as used since the last purge. */
  private putPersistent(r: BlkifRing, g: PersistentGrant): void {
    g.active = false;
    g.wasActive = true;
    r.persistentInUse--;
  }

  /**
   * purge_persistent_gnt (Linux xen-blkback's LRU): when the ring holds max_pgrants persistent grants and one
   * more was wanted (or more than max), unmap LRU_PERCENT_CLEAN percent of max_pgrants plus the excess, taking
   * first grants neither in use nor used since the last purge, then, if that is not enough, grants not in use;
   * then clear every survivor's used mark. Nothing is purged when too many are in use. At most once every
   * LRU_INTERVAL.
   */
  private lruPurge(r: BlkifRing): void {
    const max = this.opts.maxPersistentGrants;
    const count = r.persistent.size;
    if (count < max || (count === max && !r.overflowMaxGrants)) return;
    const now = performance.now();
    if (now < r.nextLru) return;
    r.nextLru = now + this.opts.lruIntervalMs;
    let clean = Math.floor(max / 100) * BLKBACK_LRU_PERCENT_CLEAN;
    clean = Math.min(count, count - max + clean);
    if (clean === 0 || clean > count - r.persistentInUse) return;
    const handles: number[] = [];
    for (const scanUsed of [false, true]) {
      for (const [gref, g] of r.persistent) {
        if (clean === 0) break;
        if (g.active || (!scanUsed && g.wasActive)) continue;
        r.persistent.delete(gref);
        handles.push(g.handle);
        clean--;
      }
      if (clean === 0) break;
    }
    for (const g of r.persistent.values()) g.wasActive = false;
    r.overflowMaxGrants = false;
    this.stats.persistentPurged += handles.length;
    if (handles.length) this.grants.unmapBatch(handles);
  }

  /** Map (or find persistently mapped) the data grants of segments 0..nseg-1 into p.bufs. */
  private mapSegments(r: BlkifRing, p: PendingReq, nseg: number, writable: boolean): boolean {
    const pages = r.segPages;
    const gpas = r.segGpas;
    const toMap = r.toMap;
    emptyArray(toMap);
    if (this.usePersistent) {
      for (let i = 0; i < nseg; i++) {
        const g = r.persistent.get(r.segGref[i]!);
        if (g && !g.active) {
          g.active = true;
          r.persistentInUse++;
          p.persistent.push(g);
          pages[i] = g.page;
          gpas[i] = g.gpa;
          this.stats.persistentHits++;
        } else toMap.push(i);
      }
    } else for (let i = 0; i < nseg; i++) toMap.push(i);
    if (toMap.length) {
      // Persistent mappings are always writable: a later request may read into a page granted for a write.
      const flags = GNTMAP_host_map | (this.usePersistent || writable ? 0 : GNTMAP_readonly);
      const maps = this.grants.mapBatch(
        toMap.map((i) => ({ dom: this.frontDom, ref: r.segGref[i]!, flags })),
      );
      let ok = true;
      for (let k = 0; k < toMap.length; k++) {
        const m = maps[k]!;
        const i = toMap[k]!;
        if (m.status !== GNTST_okay) {
          ok = false;
          continue;
        }
        pages[i] = m.page;
        gpas[i] = m.gpa;
        const g = this.usePersistent ? this.keepPersistent(r, r.segGref[i]!, m) : null;
        if (g) p.persistent.push(g);
        else p.handles.push(m.handle);
      }
      if (!ok) return false;
    }
    // Note whether the segments follow each other in the frontend's memory (the usual case: a run of pages).
    let run = true;
    let start = 0;
    let next = 0;
    for (let i = 0; i < nseg; i++) {
      const first = r.segFirst[i]! * 512;
      const end = (r.segLast[i]! + 1) * 512;
      const page = pages[i]!;
      p.bufs.push(first === 0 && end === page.length ? page : page.subarray(first, end));
      const gpa = gpas[i]!;
      if (i === 0) start = gpa + first;
      else if (gpa + first !== next) run = false;
      next = gpa + end;
    }
    p.runGpa = run && nseg > 0 ? start : -1;
    if (writable) {
      if (run) p.readGpas.push(start, next - start);
      else for (let i = 0; i < nseg; i++) p.readGpas.push(gpas[i]! + r.segFirst[i]! * 512, p.bufs[i]!.length);
    }
    return true;
  }

  /** Unmap a request's non-persistent grants and release its persistent ones. */
  private release(p: PendingReq): void {
    if (p.handles.length) this.grants.unmapBatch(p.handles);
    emptyArray(p.handles);
    const ps = p.persistent;
    for (let i = 0; i < ps.length; i++) this.putPersistent(p.ring, ps[i]!);
    emptyArray(ps);
  }

  private dispatchDiscard(r: BlkifRing, req: BlkifRequest): void {
    this.stats.discards++;
    const secure = this.opts.discardSecure && (req.flag & BLKIF_DISCARD_SECURE) !== 0;
    void secure; // the engines have no separate secure erase; a discard that zeroes is as secure as they get
    const nsec = req.nrSectors;
    const sector = req.sector;
    const unit = this.engine.backend.sectorSize / 512;
    if (
      this.readOnly ||
      (nsec > 0 &&
        (req.sectorHi >= 0x200000 || req.nrSectorsHi >= 0x200000 || sector + nsec > this.size512)) ||
      ((sector % unit) | (nsec % unit)) !== 0
    ) {
      return this.respondNow(r, req, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR);
    }
    const p = this.newPending(r, req, BLKIF_OP_DISCARD);
    p.sector = sector / unit;
    p.count = nsec / unit;
    if (nsec > 0) p.steps.push("discard");
    r.inflight++;
    if (p.steps.length === 0) return this.finish(p);
    this.queue(p);
  }

  /** Queue a request's next storage step: reads and writes wait in the batch (merging), others go now. */
  private queue(p: PendingReq): void {
    const step = p.steps[0]!;
    if ((step === "read" || step === "write") && this.opts.merge) {
      this.batch.push(p);
      return;
    }
    this.submitBatch();
    this.submit(p.self, step);
  }

  /** Submit the batched reads/writes, merging runs of adjacent same-direction requests. */
  private submitBatch(): void {
    const b = this.batch;
    if (b.length === 0) return;
    this.batch = [];
    let i = 0;
    while (i < b.length) {
      const first = b[i]!;
      const op = first.steps[0]!;
      const group = [first];
      let next = first.sector + first.count;
      let j = i + 1;
      while (j < b.length) {
        const q = b[j]!;
        if (q.steps[0] !== op || q.sector !== next || q.bounce || first.bounce || group.length >= 64) break;
        group.push(q);
        next += q.count;
        j++;
      }
      this.stats.merged += group.length - 1;
      this.submit(group, op);
      i = j;
    }
  }

  private submit(group: PendingReq[], op: IoOp): void {
    let index = this.freeTags.pop();
    if (index === undefined) {
      index = this.pending.length;
      this.pending.push(group);
    } else this.pending[index] = group;
    this.pendingCount++;
    const tag = index + 1;
    this.stats.storageIos++;
    const first = group[0]!;
    if (op === "flush") {
      this.engine.submit({ op, tag, sector: 0 });
    } else if (op === "discard") {
      this.engine.submit({ op, tag, sector: first.sector, count: first.count });
    } else {
      let bufs: Uint8Array[];
      if (group.length === 1 && !first.bounce) {
        // Segments in pages that follow each other in the granter's memory go to storage as one buffer (the
        // block layer's merging of physically contiguous segments): one iovec instead of one per page.
        bufs = first.bufs.length > 1 ? this.joinRun(first) : first.bufs; // untouched until answered
      } else {
        bufs = [];
        for (const p of group) {
          if (p.bounce) bufs.push(p.bounce);
          else for (const x of p.bufs) bufs.push(x);
        }
      }
      const req = this.rwRequest;
      req.op = op;
      req.tag = tag;
      req.sector = first.sector;
      req.bufs = bufs;
      this.engine.submit(req);
      req.bufs = NO_BUFS; // keep no reference to the guest's pages
    }
  }

  /**
   * The segments of `p` as one buffer when they are a run of the frontend's memory (the block layer's merging of
   * physically contiguous segments: one iovec instead of one per page), else its buffers as they are. The view
   * stays with the record, so a driver that reuses its buffers gets the same one back.
   */
  private joinRun(p: PendingReq): Uint8Array[] {
    const mem = this.frontMem;
    if (p.runGpa < 0 || mem === null) return joinContiguous(p);
    const len = p.bytes;
    const j = p.joined;
    if (j === null || p.joinedGpa !== p.runGpa || j.length !== len) {
      const v = mem.view(p.runGpa, len);
      if (!(v instanceof Uint8Array)) return p.bufs;
      p.joined = v;
      p.joinedGpa = p.runGpa;
      emptyArray(p.joinedList);
      p.joinedList.push(v);
    }
    return p.joinedList;
  }

  /** Reap storage completions: run the next step of each request or answer it. */
  private reap(): void {
    const out = this.completions;
    for (;;) {
      emptyArray(out);
      if (this.engine.reap(out) === 0) return;
      for (const c of out) {
        const index = c.tag - 1;
        const group = index >= 0 && index < this.pending.length ? this.pending[index] : null;
        if (!group) continue;
        this.pending[index] = null;
        this.freeTags.push(index);
        this.pendingCount--;
        for (const p of group) {
          const step = p.steps.shift();
          if (c.error) {
            // A flush the medium cannot do: EOPNOTSUPP, and stop advertising it (blkback does the same).
            if (step === "flush" && c.error.code === "ENOTSUP") {
              p.status = BLKIF_RSP_EOPNOTSUPP;
              this.onFlushUnsupported?.();
            } else if (step === "discard" && c.error.code === "ENOTSUP") p.status = BLKIF_RSP_EOPNOTSUPP;
            else p.status = BLKIF_RSP_ERROR;
            emptyArray(p.steps);
          } else if (step === "read" && p.bounce) {
            let o = 0;
            for (const b of p.bufs) {
              b.set(p.bounce.subarray(o, o + b.length));
              o += b.length;
            }
          }
          if (p.steps.length > 0) this.submit(p.self, p.steps[0]!);
          else this.finish(p);
        }
      }
    }
  }

  /** The request is done: data is in place; tell the guest's memory, unmap, answer. */
  private finish(p: PendingReq): void {
    if (p.readGpas.length && p.status === BLKIF_RSP_OKAY) {
      const mem = this.frontMem;
      if (mem) for (let i = 0; i < p.readGpas.length; i += 2) mem.written(p.readGpas[i]!, p.readGpas[i + 1]!);
    }
    this.release(p);
    const r = p.ring;
    r.inflight--;
    this.respond(r, p.idLo, p.idHi, p.rspOp, p.status);
    let released = false;
    if (r.barrierWait && r.inflight === 1) {
      const b = r.barrierWait;
      r.barrierWait = null;
      this.submit(b.self, b.steps[0]!);
      released = true;
    }
    this.recycle(p);
    // A barrier released, or slots freed for a ring that stopped consuming with requests left: look again.
    // A drained ring needs no second look: its req_event is armed, so the next push kicks the backend.
    if (released || r.stalled) this.again = true;
  }

  /** make_response: write id/op/status in place, push, and kick the frontend only if it asked. */
  private respond(r: BlkifRing, idLo: number, idHi: number, op: number, status: number): void {
    if (!this.rings.includes(r)) return; // disconnected meanwhile: the ring is gone
    const back = r.back;
    const off = back.nextResponse();
    back.writeResponse(off, idLo, idHi, op, status);
    this.stats.responses++;
    if (status === BLKIF_RSP_EOPNOTSUPP) this.stats.eopnotsupp++;
    else if (status !== BLKIF_RSP_OKAY) this.stats.errors++;
    if (back.pushResponsesAndCheckNotify()) {
      this.stats.notifies++;
      this.evtchn.send(this.backDom, r.port);
    }
  }
}

/**
 * `p.bufs` as one buffer when they follow each other in one memory (else `p.bufs` itself). The view is kept
 * with the record: the next request of the record over the same pages (a driver reusing its buffers) reuses it.
 */
function joinContiguous(p: PendingReq): Uint8Array[] {
  const bufs = p.bufs;
  const b0 = bufs[0]!;
  let end = b0.byteOffset + b0.length;
  for (let i = 1; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (b.buffer !== b0.buffer || b.byteOffset !== end) return bufs;
    end += b.length;
  }
  const len = end - b0.byteOffset;
  const j = p.joined;
  if (j === null || j.buffer !== b0.buffer || j.byteOffset !== b0.byteOffset || j.length !== len) {
    p.joinedGpa = -1;
    p.joined = new Uint8Array(b0.buffer, b0.byteOffset, len);
    emptyArray(p.joinedList);
    p.joinedList.push(p.joined);
  }
  return p.joinedList;
}

/** One view over mapped pages that are consecutive in the granter's memory (null when they are not). */
function contiguousView(maps: GrantMapResult[]): Uint8Array | null {
  const p0 = maps[0]?.page;
  if (!p0) return null;
  for (let i = 1; i < maps.length; i++) {
    const p = maps[i]!.page!;
    if (p.buffer !== p0.buffer || p.byteOffset !== p0.byteOffset + i * RING_PAGE_SIZE) return null;
  }
  return new Uint8Array(p0.buffer, p0.byteOffset, maps.length * RING_PAGE_SIZE);
}

/** What the data path needs of a back ring (ring.h BACK_RING semantics), wherever its pages are. */
export interface ServedRing {
  readonly sring: SharedRing;
  readonly size: number;
  reqCons: number;
  rspProdPvt: number;
  requestProdOverflow(prod: number): boolean;
  requestConsOverflow(cons?: number): boolean;
  nextRequest(): number;
  nextResponse(): number;
  pushResponsesAndCheckNotify(): boolean;
  finalCheckForRequests(): number;
  /**
   * Decode the entry at ring byte offset `off` into `out`, each field read once (so `out` is a private copy
   * a frontend can no longer change); `slot` (entry-sized) is scratch for an entry that must be gathered.
   */
  readRequest(off: number, L: BlkifLayout, slot: Uint8Array, out: BlkifRequest): void;
  /** make_response's field-wise write of id, operation and status at ring byte offset `off`. */
  writeResponse(off: number, idLo: number, idHi: number, op: number, status: number): void;
}

/** A ring whose pages are one contiguous view: ring.ts's BackRing as is. */
class ViewBackRing extends BackRing implements ServedRing {
  constructor(view: Uint8Array, entrySize: number, pages: number, start: number) {
    super(view, entrySize, pages, start);
  }
  readRequest(off: number, L: BlkifLayout, _slot: Uint8Array, out: BlkifRequest): void {
    // Straight from the ring: decodeRequest reads each field once, so the decoded record is the private copy
    // (RING_COPY_REQUEST's purpose) without first copying 112 bytes of shared memory.
    decodeRequest(L, this.view, off, out);
  }
  writeResponse(off: number, idLo: number, idHi: number, op: number, status: number): void {
    encodeResponse(this.view, off, idLo, idHi, op, status);
  }
}

/**
 * A multi-page ring whose pages are scattered in the granter's memory: ring.ts's BackRing for the index
 * arithmetic (the header is in page 0), with slot accesses that gather an entry straddling a page boundary from
 * both pages (and scatter a response back).
 */
class PagedBackRing extends BackRing implements ServedRing {
  private readonly tmp = new Uint8Array(16);

  constructor(
    private readonly pages: Uint8Array[],
    entrySize: number,
    start: number,
  ) {
    super(pages[0]!, entrySize, pages.length, start, pages.length * RING_PAGE_SIZE);
  }

  /** Copy `n` ring bytes at `off` to (`out` true) or from `buf`. */
  private span(off: number, buf: Uint8Array, n: number, out: boolean): void {
    let done = 0;
    while (done < n) {
      const page = this.pages[Math.floor((off + done) / RING_PAGE_SIZE)]!;
      const at = (off + done) % RING_PAGE_SIZE;
      const len = Math.min(n - done, RING_PAGE_SIZE - at);
      if (out) buf.set(page.subarray(at, at + len), done);
      else page.set(buf.subarray(done, done + len), at);
      done += len;
    }
  }
  readRequest(off: number, L: BlkifLayout, slot: Uint8Array, out: BlkifRequest): void {
    // An entry may straddle two pages: gather it first.
    this.span(off, slot, slot.length, true);
    decodeRequest(L, slot, 0, out);
  }
  writeResponse(off: number, idLo: number, idHi: number, op: number, status: number): void {
    // Only bytes 0..7, 8 and 10..11 change: read the 12 bytes, patch them, write them back.
    const t = this.tmp.subarray(0, 12);
    this.span(off, t, 12, true);
    encodeResponse(t, 0, idLo, idHi, op, status);
    this.span(off, t, 12, false);
  }
}
