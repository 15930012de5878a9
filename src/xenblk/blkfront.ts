/**
 * blkfront: the guest's block driver (Mini-OS blkfront.c's life cycle, Linux xen-blkfront.c's negotiation),
 * in one file that reads top to bottom:
 *
 *   1. init          read `backend`/`backend-id`; wait for the backend to reach InitWait
 *   2. talk          read `max-ring-page-order`, `multi-queue-max-queues`; per queue: allocate the ring
 *                    pages, SHARED_RING_INIT, grant them, EVTCHNOP_alloc_unbound, bind the upcall
 *   3. publish       one xenstore transaction (retried on EAGAIN): `ring-page-order` (only for > 1 page),
 *                    `ring-ref` or `ring-ref%u`, `event-channel` (under `queue-%u/` with
 *                    `multi-queue-num-queues` for > 1 queue), `protocol`, `feature-persistent`;
 *                    then state Initialised
 *   4. connect       wait for backend Connected; read `sectors`, `info`, `sector-size`, `physical-sector-size`
 *                    and the features; state Connected
 *   5. I/O           read / write / flush / discard: requests built in a zeroed template, data in granted
 *                    guest pages (persistent grants when offered, indirect descriptors when offered), pushed
 *                    with RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, completed in any order by the upcall. A buffer
 *                    that is the guest's own pages (`allocBuffer`) is granted as it is, with no copy; any
 *                    other buffer goes through the driver's own granted pages and one copy
 *   6. shutdown      Closing → (backend Closing) → Closed → (backend Closed); revoke every grant, close the
 *                    event channel, remove the transport keys
 *
 * The driver touches the device only through its own memory, its grant table, xenstore and the event
 * channel, as a guest kernel does.
 *
 * Zero copy and persistent grants. Linux blkfront copies when persistent grants are on: the block layer hands
 * it different pages for every request, and a grant the backend may keep mapped can never be taken back while
 * connected, so it keeps a pool of granted pages and copies through them. Buffers from `allocBuffer` are the
 * opposite case, long-lived pages the caller reuses (a page cache): each gets ONE standing read-write grant on
 * first use, kept until shutdown like the pool's, which is exactly the promise feature-persistent makes to the
 * backend (any grant may stay mapped until disconnect and serve either direction). The number of such pages
 * is bounded (`directPages`); past it, and for any other buffer, the pool and its copy are used. Without
 * persistent grants the caller's pages are granted per request (read-only for a write) and revoked at
 * completion, as Linux does for every page.
 */

import type { Domain } from "../hypervisor/domain.ts";
import type { GuestGrantTable } from "../hypervisor/grant-table.ts";
import { GuestViews, PAGE_SIZE, type GuestMemory } from "../hypervisor/memory.ts";
import type { XenHost } from "../hypervisor/xen-host.ts";
import type { XsClient } from "../hypervisor/xenstore.ts";
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
  BLKIF_RSP_OKAY,
  type BlkifAbi,
  type BlkifLayout,
  BlkifRequest,
  BlkifResponse,
  BLKIF_SEGMENT_SIZE,
  SEGS_PER_INDIRECT_FRAME,
  VDISK_READONLY,
  XEN_IO_PROTO_ABI_X86_64,
  blkifLayout,
  decodeResponse,
  encodeRequest,
  encodeSegment,
  encodeSegmentWords,
  indirectPages,
} from "./abi.ts";
import { FrontRing, RING_PAGE_SIZE } from "./ring.ts";
import { XVDA, XenbusState, readState, switchState, waitForState } from "./xenbus.ts";

/** last_sect of segment `i` of a transfer of `bytes` that starts on a page boundary. */
function lastSect(bytes: number, i: number): number {
  return Math.min(PAGE_SIZE, bytes - i * PAGE_SIZE) / SECTOR - 1;
}

/** Empty an array in place. Popping is inlined by V8; assigning `length` is a call into the runtime. */
function emptyArray(a: unknown[]): void {
  while (a.length > 0) a.pop();
}

const SECTOR = 512;
const SECTORS_PER_PAGE = PAGE_SIZE / SECTOR;

/**
 * Indirect pages a request of `nseg` data pages takes besides them. Linux blkfront likewise reserves its grants
 * before it builds a request and requeues the request when too few are free.
 */
function indirectFor(nseg: number): number {
  return nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST ? Math.ceil(nseg / SEGS_PER_INDIRECT_FRAME) : 0;
}

/** Default `directPages`: 4 MiB of the caller's pages persistently granted at most. */
const DEFAULT_DIRECT_PAGES = 1024;

export interface BlkfrontOptions {
  host: XenHost;
  /** The guest domain (default 1). */
  dom?: number;
  devid?: number;
  /** Ring pages wanted per queue (1, 2, 4, 8, 16; capped by the backend's max-ring-page-order). Default 1. */
  ringPages?: number;
  /** Queues wanted (capped by multi-queue-max-queues). Default 1. */
  queues?: number;
  /** Indirect segments per request wanted (Linux default 32; capped by the backend; <= 11 disables). */
  maxIndirectSegments?: number;
  /** Ask for persistent grants (default true). */
  persistent?: boolean;
  /** Ring layout to publish as `protocol` (default native x86_64-abi). null: write no protocol key. */
  protocol?: BlkifAbi | null;
  /**
   * Zero copy with persistent grants: at most this many of the caller's own pages (`allocBuffer`) stay
   * persistently granted (default 1024 = 4 MiB); I/O into further pages goes through the driver's pages and a
   * copy. 0: never grant the caller's pages (always copy). Without persistent grants the caller's pages are
   * granted per request whatever this says (unless it is 0).
   */
  directPages?: number;
  /** Mini-OS style: go straight to Connected after publishing, skipping Initialised. */
  skipInitialised?: boolean;
  timeoutMs?: number;
  /**
   * The guest's xenstore connection (default: an in-process handle for `dom`). A client on the guest's
   * xenstore ring (`XsRingClient`) negotiates exactly as a real domU's xenbus does.
   */
  xs?: XsClient;
}

/** A request the backend answered with an error status (BLKIF_RSP_ERROR or BLKIF_RSP_EOPNOTSUPP). */
export class BlkfrontIoError extends Error {
  constructor(
    readonly op: number,
    readonly lba: number,
    readonly status: number,
  ) {
    super(`blkif ${opName(op)} at sector ${lba} failed with status ${status}`);
    this.name = "BlkfrontIoError";
  }
}

/** The device cannot take the request (not connected, disabled after a protocol error, feature missing). */
export class BlkfrontError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlkfrontError";
  }
}

function opName(op: number): string {
  return ["read", "write", "write-barrier", "flush", "reserved", "discard", "indirect"][op] ?? `op ${op}`;
}

export interface BlkfrontInfo {
  sectors: number;
  sectorSize: number;
  physicalSectorSize: number;
  readOnly: boolean;
  flushCache: boolean;
  barrier: boolean;
  discard: boolean;
  discardSecure: boolean;
  persistent: boolean;
  /** Segments per request in use (11 without indirect descriptors). */
  maxSegments: number;
  indirect: boolean;
  ringPages: number;
  queues: number;
  protocol: BlkifAbi;
}

/**
 * The completion of a request submitted with `submitRead`/`submitWrite`: null on success, else the error
 * (BlkfrontIoError for a status other than BLKIF_RSP_OKAY, BlkfrontError when the device was disabled).
 */
export type BlkfrontDone = (err: Error | null) => void;

/** A granted guest page (data or indirect page). */
interface GrantedPage {
  gpa: number;
  ref: number;
}

/**
 * An indirect page. It is granted per request and revoked at completion like any non-persistent grant, but the
 * page itself stays an indirect page, so the driver knows how much of it may be non-zero (`dirty` bytes from
 * the start): only that much needs clearing behind the next segment list, not the whole page.
 */
interface IndirectPage extends GrantedPage {
  dirty: number;
  /** The page's bytes (the driver's own memory, kept for the page's life). */
  view: Uint8Array;
  /** The same bytes as 32-bit words, when the view is 4-byte aligned (it is in page-aligned RAM). */
  words: Uint32Array | null;
}

/**
 * One outstanding request (the shadow entry of its id). Each ring slot id owns one record for the life of the
 * ring, refilled by every request that takes the id: the I/O path allocates no bookkeeping per request.
 */
class Shadow {
  op = 0;
  lba = 0;
  /** The driver's own granted data pages, `npages` of them in use (none when `direct`). */
  readonly pages: GrantedPage[] = [];
  npages = 0;
  /** Grant reference of each data segment. */
  readonly refs: number[] = [];
  readonly indirect: IndirectPage[] = [];
  /**
   * The data pages are the caller's own (zero copy): nothing to copy back, no page of ours to give back.
   * `directRefs` are the grants made for this request alone (none when the caller's pages are persistently
   * granted).
   */
  direct = false;
  /** The caller's pages of a `direct` request: first guest-physical address and page count. */
  directGpa = -1;
  directPages = 0;
  readonly directRefs: number[] = [];
  /** A read's destination when it is not `direct`: the pages are copied here once the backend answered OKAY. */
  data: Uint8Array | null = null;
  /** How the request is settled: a callback, or a promise's two functions. */
  cb: BlkfrontDone | null = null;
  resolve: (() => void) | null = null;
  reject: ((e: Error) => void) | null = null;

  /** Answered with `status`: copy a read's data out of the granted pages, then settle. */
  done(mem: GuestMemory, status: number): void {
    const { resolve, reject, cb, data } = this;
    this.resolve = this.reject = null;
    this.cb = null;
    this.data = null;
    if (status !== BLKIF_RSP_OKAY) {
      const e = new BlkfrontIoError(this.op, this.lba, status);
      if (cb) cb(e);
      else reject?.(e);
      return;
    }
    if (data) {
      // One copy per run of pages that follow each other in guest memory (the usual case: see completion).
      const n = this.npages;
      const pages = this.pages;
      let i = 0;
      while (i < n) {
        const gpa = pages[i]!.gpa;
        let j = i + 1;
        while (j < n && pages[j]!.gpa === gpa + (j - i) * PAGE_SIZE) j++;
        const end = Math.min(data.length, j * PAGE_SIZE);
        mem.read(gpa, i === 0 && end === data.length ? data : data.subarray(i * PAGE_SIZE, end));
        i = j;
      }
    }
    if (cb) cb(null);
    else resolve?.();
  }

  /** The request will never be answered (device disabled). */
  fail(e: Error): void {
    const { reject, cb } = this;
    this.resolve = this.reject = null;
    this.cb = null;
    this.data = null;
    if (cb) cb(e);
    else reject?.(e);
  }
}

/** A request waiting for a free slot, ready to be written into one. */
interface Queued {
  /** Take a free id of the queue and write the request into its ring. */
  fill: (q: Queue) => void;
  fail: (e: Error) => void;
  /** Grant references the request takes when it is written (0 for requests without data pages). */
  grants: number;
  /** They must be free table entries (the caller's pages), not the driver's idle persistent grants. */
  fresh: boolean;
}

interface Queue {
  index: number;
  ring: FrontRing;
  ringGpa: number;
  ringRefs: number[];
  port: number;
  /** The outstanding request of each id, or null. */
  shadow: (Shadow | null)[];
  /** Each id's record, reused request after request. */
  records: Shadow[];
  freeIds: number[];
  /** Requests written since the last push (kick pushes and checks the notify only for these rings). */
  touched: boolean;
}

export class Blkfront {
  readonly host: XenHost;
  readonly dom: number;
  readonly devid: number;
  readonly nodename: string;
  backendPath = "";
  backendId = 0;
  info!: BlkfrontInfo;
  /** Called after an online resize (backend rewrote `sectors` and `state`). */
  onResize: ((sectors: number) => void) | null = null;

  private readonly xs: XsClient;
  private readonly domain: Domain;
  private readonly mem: GuestMemory;
  private gnttab!: GuestGrantTable;
  private layout!: BlkifLayout;
  private queues: Queue[] = [];
  private nextQueue = 0;
  private readonly waiting: Queued[] = [];
  private readonly freePages: number[] = [];
  /** Revoked indirect pages, kept for the next indirect requests. */
  private readonly freeIndirect: IndirectPage[] = [];
  /** Persistent grants: granted pages kept for reuse, most recently used first (blkif.h LIFO advice). */
  private readonly persistentFree: GrantedPage[] = [];
  private readonly allPersistent: GrantedPage[] = [];
  /**
   * The caller's pages persistently granted (zero copy with persistent grants): grant ref + 1 by gfn (0: none),
   * made on first use; `directCount` of them.
   */
  private directGrants: Int32Array | null = null;
  private directCount = 0;
  /** Most entries `directGrants` may hold (0: never grant the caller's pages). */
  private readonly directMax: number;
  /** Set by `directGpa`: how many of the pages of the buffer it looked at take a new grant. */
  private directMisses = 0;
  /** Live `allocBuffer` buffers (guest-physical address -> pages) and their pages in all. */
  private readonly buffers = new Map<number, number>();
  private bufferPages = 0;
  /** Freed `allocBuffer` ranges, handed out again (first fit) before new guest pages are taken. */
  private readonly freeRanges: { gpa: number; pages: number }[] = [];
  /**
   * Standing grants of freed pages that the backend still had mapped when they were freed (a persistent
   * grant stays mapped until the backend purges it): kept with the page, not counted against `directPages`.
   */
  private orphanGrants = 0;
  /** The copy-path warning was given (once per driver). */
  private copyWarned = false;
  /** The buffer behind this domain's memory views, and the byte offset of guest address 0 in it. */
  /** Recognises the caller's buffers that are the guest's own memory (granted as they are). */
  private readonly views: GuestViews;
  private disabled: string | null = null;
  private connected = false;
  private outstanding = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly tmpReq = new BlkifRequest();
  private readonly tmpRsp = new BlkifResponse();
  private readonly opts: BlkfrontOptions;

  private constructor(o: BlkfrontOptions) {
    this.opts = o;
    this.host = o.host;
    this.dom = o.dom ?? 1;
    this.devid = o.devid ?? XVDA;
    this.nodename = `/local/domain/${this.dom}/device/vbd/${this.devid}`;
    this.xs = o.xs ?? o.host.xs(this.dom);
    this.domain = o.host.domain(this.dom);
    this.mem = this.domain.mem!;
    this.directMax = o.directPages ?? DEFAULT_DIRECT_PAGES;
    this.views = new GuestViews(this.mem);
  }

  /** Bring the device up: steps 1-4. Resolves when Connected. */
  static async connect(o: BlkfrontOptions): Promise<Blkfront> {
    const f = new Blkfront(o);
    await f.init();
    return f;
  }

  // ---- 1-4: init, talk to the backend, publish, connect -----------------------------------------------

  private async init(): Promise<void> {
    const xs = this.xs;
    const timeout = this.opts.timeoutMs ?? 10_000;
    // 1. Who is our backend.
    this.backendPath = xs.read(`${this.nodename}/backend`);
    this.backendId = xs.readInt(`${this.nodename}/backend-id`) ?? 0;
    this.gnttab = this.host.guestGrantTable(this.dom);
    // After an earlier shutdown (our state Closed) announce a new life, so the backend goes back to InitWait.
    if (readState(xs, this.nodename) !== XenbusState.Initialising)
      switchState(xs, this.nodename, XenbusState.Initialising);
    await waitForState(xs, this.backendPath, (s) => s === XenbusState.InitWait, timeout);

    // 2. Transport parameters, capped by what the backend offers.
    const beMaxOrder = xs.readInt(`${this.backendPath}/max-ring-page-order`) ?? 0;
    const wantPages = this.opts.ringPages ?? 1;
    if (![1, 2, 4, 8, 16].includes(wantPages)) throw new RangeError(`ring pages must be 1, 2, 4, 8 or 16`);
    const pages = Math.min(wantPages, 1 << beMaxOrder);
    const beMaxQueues = xs.readInt(`${this.backendPath}/multi-queue-max-queues`) ?? 1;
    const nq = Math.max(1, Math.min(this.opts.queues ?? 1, beMaxQueues));
    const proto = this.opts.protocol === undefined ? XEN_IO_PROTO_ABI_X86_64 : this.opts.protocol;
    this.layout = blkifLayout(proto ?? "x86_32-abi");
    for (let i = 0; i < nq; i++) this.queues.push(this.setupRing(i, pages));

    // 3. Publish in one transaction; retry the whole of it when xenstored says EAGAIN.
    const persistentWanted = this.opts.persistent ?? true;
    xs.transaction((t) => {
      const base = this.nodename;
      if (pages > 1) xs.write(`${base}/ring-page-order`, String(Math.log2(pages)), t);
      if (nq > 1) xs.write(`${base}/multi-queue-num-queues`, String(nq), t);
      for (const q of this.queues) {
        const dir = nq > 1 ? `${base}/queue-${q.index}` : base;
        if (pages === 1) xs.write(`${dir}/ring-ref`, String(q.ringRefs[0]), t);
        else q.ringRefs.forEach((r, i) => xs.write(`${dir}/ring-ref${i}`, String(r), t));
        xs.write(`${dir}/event-channel`, String(q.port), t);
      }
      if (proto) xs.write(`${base}/protocol`, proto, t);
      xs.write(`${base}/feature-persistent`, persistentWanted ? "1" : "0", t);
    });
    switchState(
      xs,
      this.nodename,
      this.opts.skipInitialised ? XenbusState.Connected : XenbusState.Initialised,
    );

    // 4. Wait for the backend, read what it offers, and go Connected.
    const st = await waitForState(xs, this.backendPath, (s) => s >= XenbusState.Connected, timeout);
    if (st !== XenbusState.Connected)
      throw new BlkfrontError(`backend went to state ${st} instead of Connected`);
    this.readBackendInfo(pages, nq, proto ?? "x86_32-abi", persistentWanted);
    this.connected = true;
    if (!this.opts.skipInitialised) switchState(xs, this.nodename, XenbusState.Connected);
    // A later Connected write from the backend means "re-read sectors" (online resize).
    xs.watch(`${this.backendPath}/state`, `blkfront-resize-${this.devid}`, () => this.backendChanged());
  }

  /** Allocate, initialise and grant one ring; allocate and bind its event channel. */
  private setupRing(index: number, pages: number): Queue {
    const ringGpa = this.domain.pages.alloc(pages * RING_PAGE_SIZE);
    const view = this.mem.view(ringGpa, pages * RING_PAGE_SIZE);
    if (!(view instanceof Uint8Array)) throw new BlkfrontError(view.message);
    view.fill(0); // a fresh zeroed page, as the kernel's page allocator gives
    const ring = FrontRing.init(view, this.layout.entrySize, pages);
    // The ring goes to another thread exactly when this domain's event channels do (xenSharedState).
    ring.sring.sharing = this.host.evtchn.domain(this.dom);
    const ringRefs: number[] = [];
    for (let i = 0; i < pages; i++) {
      ringRefs.push(this.gnttab.grantAccess(this.backendId, ringGpa / PAGE_SIZE + i, false));
    }
    const port = this.host.evtchn.allocUnbound(this.dom, this.backendId);
    const q: Queue = {
      index,
      ring,
      ringGpa,
      ringRefs,
      port,
      shadow: new Array<Shadow | null>(ring.size).fill(null),
      records: Array.from({ length: ring.size }, () => new Shadow()),
      freeIds: Array.from({ length: ring.size }, (_, i) => ring.size - 1 - i),
      touched: false,
    };
    this.host.evtchn.bindHandler(this.dom, port, () => this.interrupt(q));
    return q;
  }

  /** blkfront_connect: the backend's keys. */
  private readBackendInfo(pages: number, nq: number, protocol: BlkifAbi, persistentWanted: boolean): void {
    const xs = this.xs;
    const be = this.backendPath;
    const sectors = xs.readInt(`${be}/sectors`);
    const info = xs.readInt(`${be}/info`);
    const sectorSize = xs.readInt(`${be}/sector-size`);
    if (sectors === undefined || info === undefined || sectorSize === undefined) {
      throw new BlkfrontError(`reading backend fields at ${be}`);
    }
    const flag = (k: string) => xs.readInt(`${be}/${k}`) === 1;
    const beIndirect = xs.readInt(`${be}/feature-max-indirect-segments`) ?? 0;
    const want = this.opts.maxIndirectSegments ?? 32;
    const segs = Math.min(beIndirect, want, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * SEGS_PER_INDIRECT_FRAME);
    const indirect = segs > BLKIF_MAX_SEGMENTS_PER_REQUEST;
    this.info = {
      sectors,
      sectorSize,
      physicalSectorSize: xs.readInt(`${be}/physical-sector-size`) ?? sectorSize,
      readOnly: (info & VDISK_READONLY) !== 0,
      flushCache: flag("feature-flush-cache"),
      barrier: flag("feature-barrier"),
      discard: flag("feature-discard"),
      discardSecure: flag("discard-secure"),
      persistent: persistentWanted && flag("feature-persistent"),
      maxSegments: indirect ? segs : BLKIF_MAX_SEGMENTS_PER_REQUEST,
      indirect,
      ringPages: pages,
      queues: nq,
      protocol,
    };
  }

  private backendChanged(): void {
    if (!this.connected) return;
    const s = readState(this.xs, this.backendPath);
    if (s === XenbusState.Closing || s === XenbusState.Closed) {
      // The backend is going away (blkback_changed → blkfront_closing): fail what is outstanding and close.
      this.connected = false;
      this.disable(`backend went to state ${s}`);
      switchState(this.xs, this.nodename, XenbusState.Closing);
      switchState(this.xs, this.nodename, XenbusState.Closed);
      return;
    }
    if (s === XenbusState.Connected) {
      const sectors = this.xs.readInt(`${this.backendPath}/sectors`);
      if (sectors !== undefined && sectors !== this.info.sectors) {
        this.info.sectors = sectors;
        this.onResize?.(sectors);
      }
    }
  }

  // ---- 5: I/O ------------------------------------------------------------------------------------------

  /** Read `count` 512-byte sectors from `lba`. */
  async read(lba: number, count: number): Promise<Uint8Array> {
    const out = new Uint8Array(count * SECTOR);
    await this.rw(BLKIF_OP_READ, lba, out);
    return out;
  }

  /**
   * Read `out.length` bytes (whole 512-byte sectors) from `lba` into `out`, as a kernel reads into pages it
   * already owns: the same requests as `read`, without a new array per call. When `out` is the guest's own
   * pages (`allocBuffer`) the backend writes straight into them.
   */
  readInto(lba: number, out: Uint8Array): Promise<void> {
    if (out.length % SECTOR !== 0) {
      return Promise.reject(new RangeError(`read of ${out.length} bytes: not whole sectors`));
    }
    return this.rw(BLKIF_OP_READ, lba, out);
  }

  /** Write `data` (a whole number of 512-byte sectors) at `lba`. */
  async write(lba: number, data: Uint8Array): Promise<void> {
    if (data.length % SECTOR !== 0) throw new RangeError(`write of ${data.length} bytes: not whole sectors`);
    if (this.info.readOnly) throw new BlkfrontError(`${this.nodename} is read-only`);
    await this.rw(BLKIF_OP_WRITE, lba, data);
  }

  /**
   * `bytes` (rounded up to whole pages) of the guest's own memory, page-aligned, as a kernel's page-cache
   * pages. Reads into and writes from these pages, or any page-aligned view of them, grant the pages
   * themselves to the backend: no copy on either side. With persistent grants each such page, once granted,
   * stays granted until shutdown or `freeBuffer`, as the driver's own pages do, and the pages of all live
   * buffers are bounded by `directPages`: past it this throws (BlkfrontError) rather than let I/O on the new
   * buffer fall back to a copy. Allocate once and reuse; give back with `freeBuffer`.
   */
  allocBuffer(bytes: number): Uint8Array {
    if (!(Number.isSafeInteger(bytes) && bytes > 0)) throw new RangeError(`buffer of ${bytes} bytes`);
    const pages = Math.ceil(bytes / PAGE_SIZE);
    if (this.info?.persistent && this.directMax > 0 && this.bufferPages + pages > this.directMax) {
      throw new BlkfrontError(
        `allocBuffer: ${pages} more pages would pass directPages = ${this.directMax} ` +
          `(${this.bufferPages} in live buffers), and I/O on them would be copied; ` +
          `free buffers with freeBuffer or connect with a larger directPages`,
      );
    }
    const gpa = this.takeRange(pages) ?? this.domain.pages.alloc(bytes);
    const v = this.mem.view(gpa, bytes);
    if (!(v instanceof Uint8Array)) throw new BlkfrontError(v.message);
    if (this.views.gpaOf(v) !== gpa)
      throw new BlkfrontError(`guest memory of domain ${this.dom} gives no views`);
    v.fill(0); // a fresh zeroed page, as the kernel's page allocator gives
    this.buffers.set(gpa, pages);
    this.bufferPages += pages;
    return v;
  }

  /**
   * Give back a buffer `allocBuffer` made (no request on it may be outstanding). Its standing grants are
   * revoked where the backend no longer maps them; the pages go to the next `allocBuffer`.
   */
  freeBuffer(buf: Uint8Array): void {
    const gpa = this.views.gpaOf(buf);
    const pages = gpa >= 0 ? this.buffers.get(gpa) : undefined;
    if (pages === undefined || Math.ceil(buf.length / PAGE_SIZE) !== pages) {
      throw new RangeError(`freeBuffer: not a live buffer of this driver's allocBuffer`);
    }
    if (this.waiting.length > 0 || this.usesPages(gpa, pages)) {
      throw new BlkfrontError(`freeBuffer: a request on the buffer at 0x${gpa.toString(16)} is outstanding`);
    }
    this.buffers.delete(gpa);
    this.bufferPages -= pages;
    this.orphanGrants += this.revokeStanding(gpa, pages);
    this.freeRanges.push({ gpa, pages });
  }

  /** Whether an outstanding request has the caller's pages in [gpa, gpa + pages) granted as they are. */
  private usesPages(gpa: number, pages: number): boolean {
    const end = gpa + pages * PAGE_SIZE;
    for (const q of this.queues) {
      for (const s of q.shadow) {
        if (s && s.direct && s.directGpa < end && s.directGpa + s.directPages * PAGE_SIZE > gpa) return true;
      }
    }
    return false;
  }

  /** Revoke the standing grants of pages [gpa, +pages) the backend no longer maps; returns how many remain. */
  private revokeStanding(gpa: number, pages: number): number {
    const granted = this.directGrants;
    if (!granted) return 0;
    let kept = 0;
    for (let gfn = gpa / PAGE_SIZE, n = gfn + pages; gfn < n; gfn++) {
      const ref = granted[gfn]! - 1;
      if (ref < 0) continue;
      if (this.gnttab.tryEndAccess(ref)) {
        granted[gfn] = 0;
        this.directCount--;
      } else kept++;
    }
    return kept;
  }

  /** A freed range of at least `pages` pages (first fit, split), or null. Its kept grants count again. */
  private takeRange(pages: number): number | null {
    const ranges = this.freeRanges;
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i]!;
      if (r.pages < pages) continue;
      const gpa = r.gpa;
      if (r.pages === pages) ranges.splice(i, 1);
      else {
        r.gpa += pages * PAGE_SIZE;
        r.pages -= pages;
      }
      const granted = this.directGrants;
      if (granted) {
        for (let gfn = gpa / PAGE_SIZE, n = gfn + pages; gfn < n; gfn++)
          if (granted[gfn]! > 0) this.orphanGrants--;
      }
      return gpa;
    }
    return null;
  }

  /** Retry revoking the grants freed buffers kept (the backend may have purged them since). */
  private reclaimOrphans(): void {
    if (this.orphanGrants === 0) return;
    let kept = 0;
    for (const r of this.freeRanges) kept += this.revokeStanding(r.gpa, r.pages);
    this.orphanGrants = kept;
  }

  /**
   * Start a read of `out.length` bytes (whole sectors) at `lba` into `out`; `done` is called once, from the
   * event-channel upcall, when the data is in `out` (or with the error). No promise per request: for drivers
   * that keep many requests in flight. Throws (and never calls `done`) when the device cannot take requests.
   */
  submitRead(lba: number, out: Uint8Array, done: BlkfrontDone): void {
    this.submitCb(BLKIF_OP_READ, lba, out, done);
  }

  /** Start a write of `data` at `lba`; `done` as for `submitRead`. `data` must not change until then. */
  submitWrite(lba: number, data: Uint8Array, done: BlkfrontDone): void {
    if (this.info.readOnly) throw new BlkfrontError(`${this.nodename} is read-only`);
    this.submitCb(BLKIF_OP_WRITE, lba, data, done);
  }

  private submitCb(op: number, lba: number, data: Uint8Array, done: BlkfrontDone): void {
    if (data.length % SECTOR !== 0) {
      throw new RangeError(`${opName(op)} of ${data.length} bytes: not whole sectors`);
    }
    this.checkUsable();
    const total = data.length / SECTOR;
    const perReq = this.info.maxSegments * SECTORS_PER_PAGE;
    if (total <= perReq) {
      this.enqueueRw(op, lba, data, done, null, null);
    } else {
      // Several requests: one `done`, after the last of them, with the first error.
      let left = Math.ceil(total / perReq);
      let first: Error | null = null;
      const part = (e: Error | null): void => {
        if (e && !first) first = e;
        if (--left === 0) done(first);
      };
      for (let d = 0; d < total; d += perReq) {
        const n = Math.min(perReq, total - d);
        this.enqueueRw(op, lba + d, data.subarray(d * SECTOR, (d + n) * SECTOR), part, null, null);
      }
    }
    this.kick();
  }

  /** Commit the backend's write cache: FLUSH_DISKCACHE if offered, else an empty WRITE_BARRIER, else nothing. */
  async flush(): Promise<void> {
    const op = this.info.flushCache
      ? BLKIF_OP_FLUSH_DISKCACHE
      : this.info.barrier
        ? BLKIF_OP_WRITE_BARRIER
        : -1;
    if (op < 0) return; // no write cache to flush
    await this.submitOne(op, 0, (req) => {
      req.operation = op;
      req.nrSegments = 0;
    });
  }

  /** Discard `count` sectors from `lba` (feature-discard). */
  async discard(lba: number, count: number, secure = false): Promise<void> {
    if (!this.info.discard)
      throw new BlkfrontError(`${this.nodename}: backend does not offer feature-discard`);
    await this.submitOne(BLKIF_OP_DISCARD, lba, (req) => {
      req.operation = BLKIF_OP_DISCARD;
      req.flag = secure && this.info.discardSecure ? BLKIF_DISCARD_SECURE : 0;
      req.sector = lba;
      req.nrSectors = count;
    });
  }

  /** Split a read/write into requests of up to maxSegments pages, issue them together, wait for all. */
  private rw(op: number, lba: number, data: Uint8Array): Promise<void> {
    const total = data.length / SECTOR;
    const perReq = this.info.maxSegments * SECTORS_PER_PAGE;
    if (total <= perReq) {
      // One request: no fan-out bookkeeping (the common small-I/O case), and one promise for it.
      if (this.disabled || !this.connected) return Promise.reject(this.unusable());
      return new Promise((resolve, reject) => {
        this.enqueueRw(op, lba, data, null, resolve, reject);
        this.kick();
      });
    }
    return this.rwSplit(op, lba, data, total, perReq);
  }

  private async rwSplit(op: number, lba: number, data: Uint8Array, total: number, perReq: number) {
    const parts: Promise<void>[] = [];
    for (let done = 0; done < total; done += perReq) {
      const n = Math.min(perReq, total - done);
      parts.push(this.submitRw(op, lba + done, data.subarray(done * SECTOR, (done + n) * SECTOR)));
    }
    this.kick();
    const results = await Promise.allSettled(parts);
    const bad = results.find((r) => r.status === "rejected");
    if (bad) throw (bad as PromiseRejectedResult).reason;
  }

  private submitRw(op: number, lba: number, data: Uint8Array): Promise<void> {
    this.checkUsable();
    return new Promise((resolve, reject) => this.enqueueRw(op, lba, data, null, resolve, reject));
  }

  /**
   * Write a read/write request into a free slot right away when nothing waits before it (the request is
   * pushed by the next kick), else queue it behind the waiting ones. It settles through `cb`, or else
   * `resolve`/`reject`.
   */
  private enqueueRw(
    op: number,
    lba: number,
    data: Uint8Array,
    cb: BlkfrontDone | null,
    resolve: (() => void) | null,
    reject: ((e: Error) => void) | null,
  ): void {
    const nseg = Math.ceil(data.length / PAGE_SIZE);
    let gpa = this.directGpa(data, nseg);
    // The caller's pages take fresh grant references only for pages not granted yet; the driver's own pages
    // may also come from its idle persistent grants. When the table has too few fresh references left for the
    // caller's pages (its idle persistent grants hold them), the request goes through the driver's pages.
    // Counted even when an indirect page kept granted (persistent grants) will serve: a request waiting in
    // the queue cannot know which pages will be free when it is written.
    const ind = indirectFor(nseg);
    if (gpa >= 0 && !this.grantsAvailable(ind + this.directMisses, true)) gpa = -1;
    const fresh = gpa >= 0;
    const grants = ind + (fresh ? this.directMisses : nseg);
    if (this.waiting.length === 0 && this.grantsAvailable(grants, fresh)) {
      const q = this.pickQueue();
      if (q) {
        this.fillRw(q, op, lba, data, gpa, cb, resolve, reject);
        return;
      }
    }
    this.waiting.push({
      fill: (q) =>
        this.fillRw(q, op, lba, data, fresh ? this.directGpa(data, nseg) : -1, cb, resolve, reject),
      fail: (e) => (cb ? cb(e) : reject?.(e)),
      grants,
      fresh,
    });
  }

  /**
   * The guest-physical address of `data` when it can be granted as it is (zero copy): a page-aligned view of
   * this domain's memory, and, with persistent grants, within the `directPages` budget (`directMisses` says
   * how many of its pages are not granted yet). -1: go through the driver's own pages.
   */
  private directGpa(data: Uint8Array, nseg: number): number {
    this.directMisses = nseg;
    if (this.directMax === 0) return -1;
    const gpa = this.views.gpaOf(data);
    if (gpa < 0 || (gpa & (PAGE_SIZE - 1)) !== 0) return -1;
    if (!this.info.persistent) return gpa;
    const gfn = gpa / PAGE_SIZE;
    const granted = (this.directGrants ??= new Int32Array(this.mem.size / PAGE_SIZE));
    let misses = 0;
    for (let i = 0; i < nseg; i++) if (granted[gfn + i] === 0) misses++;
    if (misses > 0 && this.directCount - this.orphanGrants + misses > this.directMax) {
      this.reclaimOrphans();
      if (this.directCount - this.orphanGrants + misses > this.directMax) {
        // Not an allocBuffer buffer (those stay within the budget): say once that such I/O is copied.
        if (!this.copyWarned) {
          this.copyWarned = true;
          process.emitWarning(
            `${this.nodename}: guest pages past directPages = ${this.directMax} are copied through the ` +
              `driver's pages, not granted as they are (use allocBuffer/freeBuffer, or a larger directPages)`,
            { code: "XENIDE_BLKFRONT_COPY" },
          );
        }
        return -1;
      }
    }
    this.directMisses = misses;
    return gpa;
  }

  /** True when `n` more grants can be taken now (free table entries, or idle persistent grants unless `fresh`). */
  private grantsAvailable(n: number, fresh: boolean): boolean {
    return n <= this.gnttab.freeCount + (this.info.persistent && !fresh ? this.persistentFree.length : 0);
  }

  /**
   * Take a free id of `q`, grant the data pages (the caller's own when `gpa` >= 0, else the driver's, with
   * a write's data copied in) and write the request into the ring (not yet pushed).
   */
  private fillRw(
    q: Queue,
    op: number,
    lba: number,
    data: Uint8Array,
    gpa: number,
    cb: BlkfrontDone | null,
    resolve: (() => void) | null,
    reject: ((e: Error) => void) | null,
  ): void {
    const id = q.freeIds.pop()!;
    const s = q.records[id]!;
    const nseg = Math.ceil(data.length / PAGE_SIZE);
    const pages = s.pages;
    const refs = s.refs;
    s.npages = 0;
    s.direct = gpa >= 0;
    s.directGpa = gpa;
    s.directPages = nseg;
    emptyArray(s.indirect);
    try {
      // encodeRequest writes the whole slot (zeroes where the request has nothing): the template needs its
      // scalars cleared, and its indirect refs only for an indirect request; segments past nrSegments are
      // never encoded.
      const req = this.tmpReq;
      req.handle = req.flag = req.nrSectorsLo = req.nrSectorsHi = req.indirectOp = 0;
      req.idLo = id;
      req.idHi = 0;
      if (Number.isSafeInteger(lba) && lba >= 0) {
        req.sectorHi = Math.floor(lba / 0x1_0000_0000);
        req.sectorLo = lba - req.sectorHi * 0x1_0000_0000;
      } else req.sector = lba; // out of range: the setter says why
      if (gpa >= 0) {
        for (let i = 0; i < nseg; i++) refs[i] = this.directRef(gpa + i * PAGE_SIZE, op !== BLKIF_OP_READ, s);
      } else {
        for (let i = 0; i < nseg; i++) {
          const g = this.dataPage(op !== BLKIF_OP_READ);
          pages[i] = g;
          refs[i] = g.ref;
          s.npages = i + 1;
          if (op === BLKIF_OP_WRITE) {
            this.mem.write(g.gpa, data.subarray(i * PAGE_SIZE, Math.min(data.length, (i + 1) * PAGE_SIZE)));
          }
        }
      }
      // Each segment covers a whole page (first_sect 0) except the last, which ends with the data.
      if (nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST) {
        req.operation = op;
        req.nrSegments = nseg;
        for (let i = 0; i < nseg; i++) {
          req.segGref[i] = refs[i]!;
          req.segFirst[i] = 0;
          req.segLast[i] = lastSect(data.length, i);
        }
      } else {
        // Indirect: the segment list lives in granted pages (read-only for the backend), written in place.
        req.operation = BLKIF_OP_INDIRECT;
        req.indirectGrefs.fill(0);
        req.indirectOp = op;
        req.nrSegments = nseg;
        const ip = indirectPages(nseg);
        for (let k = 0; k < ip; k++) {
          const g = this.indirectPage();
          s.indirect.push(g);
          req.indirectGrefs[k] = g.ref;
          const page = g.view;
          const words = g.words;
          const n = Math.min(SEGS_PER_INDIRECT_FRAME, nseg - k * SEGS_PER_INDIRECT_FRAME);
          if (words) {
            for (let j = 0; j < n; j++) {
              const i = k * SEGS_PER_INDIRECT_FRAME + j;
              encodeSegmentWords(words, j * 2, refs[i]!, 0, lastSect(data.length, i));
            }
          } else {
            for (let j = 0; j < n; j++) {
              const i = k * SEGS_PER_INDIRECT_FRAME + j;
              encodeSegment(page, j * BLKIF_SEGMENT_SIZE, refs[i]!, 0, lastSect(data.length, i));
            }
          }
          // The rest of the page reads as zeroes, as on a freshly cleared page; only what an earlier, longer
          // list left behind is cleared (filling shared memory costs about 0.5 ns a byte).
          const used = n * BLKIF_SEGMENT_SIZE;
          if (g.dirty > used) page.fill(0, used, g.dirty);
          g.dirty = used;
          this.mem.written(g.gpa, PAGE_SIZE);
        }
      }
      encodeRequest(this.layout, q.ring.view, q.ring.nextRequest(), req);
    } catch (e) {
      // Nothing reached the ring: give back what was taken and fail this request alone.
      this.completion(s);
      q.freeIds.push(id);
      if (cb) cb(e as Error);
      else reject?.(e as Error);
      return;
    }
    s.op = op;
    s.lba = lba;
    s.data = op === BLKIF_OP_READ && gpa < 0 ? data : null;
    s.cb = cb;
    s.resolve = resolve;
    s.reject = reject;
    q.shadow[id] = s;
    q.touched = true;
    this.outstanding++;
  }

  /**
   * The grant of the caller's page at `gpa`. With persistent grants: the page's standing grant, made on its
   * first use (always writable, as every persistent grant: the backend keeps it mapped for later requests of
   * either direction). Without: a grant for this request alone (read-only for a write), revoked at completion.
   */
  private directRef(gpa: number, readonly: boolean, s: Shadow): number {
    const gfn = gpa / PAGE_SIZE;
    if (this.info.persistent) {
      const granted = this.directGrants!;
      const ref = granted[gfn]! - 1;
      if (ref >= 0) return ref;
      const fresh = this.gnttab.grantAccess(this.backendId, gfn, false);
      granted[gfn] = fresh + 1;
      this.directCount++;
      return fresh;
    }
    const ref = this.gnttab.grantAccess(this.backendId, gfn, readonly);
    s.directRefs.push(ref);
    return ref;
  }

  private async submitOne(op: number, lba: number, build: (req: BlkifRequest) => void): Promise<void> {
    this.checkUsable();
    const p = new Promise<void>((resolve, reject) => {
      this.waiting.push({
        grants: 0,
        fresh: false,
        fill: (q) => {
          const id = q.freeIds.pop()!;
          const req = this.tmpReq.clear();
          try {
            build(req);
            req.id = id;
            encodeRequest(this.layout, q.ring.view, q.ring.nextRequest(), req);
          } catch (e) {
            q.freeIds.push(id);
            reject(e as Error);
            return;
          }
          const s = q.records[id]!;
          s.op = op;
          s.lba = lba;
          s.npages = 0;
          emptyArray(s.indirect);
          s.data = null;
          s.resolve = resolve;
          s.reject = reject;
          q.shadow[id] = s;
          q.touched = true;
          this.outstanding++;
        },
        fail: reject,
      });
    });
    this.kick();
    return p;
  }

  private unusable(): BlkfrontError {
    return this.disabled
      ? new BlkfrontError(`${this.nodename} disabled: ${this.disabled}`)
      : new BlkfrontError(`${this.nodename} is not connected`);
  }

  private checkUsable(): void {
    if (this.disabled || !this.connected) throw this.unusable();
  }

  /**
   * Move waiting requests into free ring slots (round-robin over the queues), then push each ring once and
   * notify only if the backend asked (req_event).
   */
  private kick(): void {
    while (this.waiting.length > 0) {
      const head = this.waiting[0]!;
      if (!this.grantsAvailable(head.grants, head.fresh)) {
        if (this.outstanding > 0) break; // completions will give grants back
        // Nothing in flight will free any: the table is too small for this request.
        this.waiting.shift();
        head.fail(
          new BlkfrontError(
            `a request needs ${head.grants} grant references, only ${this.gnttab.freeCount} are free`,
          ),
        );
        continue;
      }
      const q = this.pickQueue();
      if (!q) break;
      this.waiting.shift()!.fill(q);
    }
    const qs = this.queues;
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      if (!q.touched) continue;
      q.touched = false;
      if (q.ring.pushRequestsAndCheckNotify()) this.host.evtchn.send(this.dom, q.port);
    }
  }

  private pickQueue(): Queue | undefined {
    const qs = this.queues;
    const n = qs.length;
    for (let i = 0; i < n; i++) {
      const k = this.nextQueue + i < n ? this.nextQueue + i : this.nextQueue + i - n;
      const q = qs[k]!;
      if (q.freeIds.length > 0 && !q.ring.full()) {
        this.nextQueue = k + 1 === n ? 0 : k + 1;
        return q;
      }
    }
    return undefined;
  }

  /** A data page: a persistent grant (always read-write) when negotiated, else a fresh grant of a page. */
  private dataPage(readonly: boolean): GrantedPage {
    if (this.info.persistent) {
      const g = this.persistentFree.pop();
      if (g) return g;
      const gpa = this.allocPage();
      const p = { gpa, ref: this.gnttab.grantAccess(this.backendId, gpa / PAGE_SIZE, false) };
      this.allPersistent.push(p);
      return p;
    }
    const gpa = this.allocPage();
    return { gpa, ref: this.gnttab.grantAccess(this.backendId, gpa / PAGE_SIZE, readonly) };
  }

  /** An indirect page, granted read-only for this request (a page kept for indirect lists when there is one). */
  /**
   * An indirect page. With persistent grants it keeps its grant from request to request (Linux blkfront takes
   * indirect pages from its persistent grants too: the backend may keep them mapped), read-write as every
   * persistent grant; without, it is granted read-only for this request and revoked at completion.
   */
  private indirectPage(): IndirectPage {
    const persistent = this.info.persistent;
    const g = this.freeIndirect.pop();
    if (g) {
      if (g.ref < 0) g.ref = this.gnttab.grantAccess(this.backendId, g.gpa / PAGE_SIZE, !persistent);
      return g;
    }
    const gpa = this.allocPage();
    const view = this.mem.view(gpa, PAGE_SIZE);
    if (!(view instanceof Uint8Array)) throw new BlkfrontError(view.message);
    const ref = this.gnttab.grantAccess(this.backendId, gpa / PAGE_SIZE, !persistent);
    // Whatever the page held before is unknown: clear all of it on first use.
    const words =
      view.byteOffset % 4 === 0 ? new Uint32Array(view.buffer, view.byteOffset, PAGE_SIZE / 4) : null;
    return { gpa, ref, dirty: PAGE_SIZE, view, words };
  }

  private allocPage(): number {
    return this.freePages.pop() ?? this.domain.pages.alloc(PAGE_SIZE);
  }

  /** The event-channel upcall (blkif_interrupt): consume every response, then re-arm rsp_event. */
  private interrupt(q: Queue): void {
    const ring = q.ring;
    for (;;) {
      const rp = ring.sring.rspProd;
      if (ring.responseProdOverflow(rp)) {
        this.disable(`backend answered ${(rp - ring.rspCons) >>> 0} responses, more than the ring holds`);
        return;
      }
      while (ring.rspCons !== rp) {
        const rsp = decodeResponse(ring.view, ring.nextResponse(), this.tmpRsp);
        const id = rsp.idLo;
        const s = rsp.idHi === 0 && id < ring.size ? q.shadow[id] : null;
        if (!s) {
          this.disable(`response with bad id ${rsp.id}`);
          return;
        }
        if (rsp.operation !== s.op) {
          this.disable(`response has wrong operation (${rsp.operation} instead of ${s.op})`);
          return;
        }
        q.shadow[id] = null;
        q.freeIds.push(id);
        this.outstanding--;
        this.completion(s);
        s.done(this.mem, rsp.status);
      }
      if (this.outstanding > 0 || this.waiting.length > 0) {
        if (ring.finalCheckForResponses() === 0) break;
      } else {
        ring.sring.rspEvent = (ring.rspCons + 1) >>> 0;
        if (ring.unconsumedResponses() === 0) break;
      }
    }
    if (this.waiting.length) this.kick();
    if (this.outstanding === 0 && this.idleWaiters.length) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** blkif_completion: give the pages back; a non-persistent grant the backend still maps is an error. */
  private completion(s: Shadow): void {
    const indirect = s.indirect;
    for (let i = 0; i < indirect.length; i++) {
      const g = indirect[i]!;
      if (this.info.persistent)
        this.freeIndirect.push(g); // still granted, for the next indirect request
      else if (this.gnttab.tryEndAccess(g.ref)) {
        g.ref = -1;
        this.freeIndirect.push(g);
      } else this.disable(`backend has not unmapped grant ${g.ref}`);
    }
    emptyArray(s.indirect);
    if (s.direct) {
      // The caller's pages: per-request grants are revoked (the pages stay the caller's); standing ones stay.
      const refs = s.directRefs;
      for (let i = 0; i < refs.length; i++) {
        if (!this.gnttab.tryEndAccess(refs[i]!)) this.disable(`backend has not unmapped grant ${refs[i]}`);
      }
      emptyArray(refs);
      return;
    }
    const persistent = this.info.persistent;
    // Last page first: the free list is LIFO, so the next request takes these pages back in the same
    // ascending order, and a multi-page request keeps landing in pages that are contiguous in guest memory.
    for (let i = s.npages - 1; i >= 0; i--) {
      const g = s.pages[i]!;
      if (persistent) this.persistentFree.push(g);
      else this.endGrant(g);
    }
  }

  private endGrant(g: GrantedPage): void {
    if (this.gnttab.tryEndAccess(g.ref)) this.freePages.push(g.gpa);
    else this.disable(`backend has not unmapped grant ${g.ref}`);
  }

  private disable(why: string): void {
    if (this.disabled) return;
    this.disabled = why;
    // Fail everything outstanding: the ring can no longer be trusted.
    for (const q of this.queues) {
      for (let i = 0; i < q.shadow.length; i++) {
        const s = q.shadow[i];
        if (s) {
          q.shadow[i] = null;
          this.outstanding--;
          s.fail(new BlkfrontError(`${this.nodename} disabled: ${why}`));
        }
      }
    }
    // Never written to a ring: fail them without touching one.
    for (const w of this.waiting.splice(0)) w.fail(new BlkfrontError(`${this.nodename} disabled: ${why}`));
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves when no request is outstanding. */
  idle(): Promise<void> {
    if (this.outstanding === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  // ---- 6: shutdown -------------------------------------------------------------------------------------

  /** Closing → Closed with the backend following; then revoke every grant and close the event channel. */
  async shutdown(): Promise<void> {
    const xs = this.xs;
    const timeout = this.opts.timeoutMs ?? 10_000;
    await this.idle();
    this.connected = false;
    try {
      xs.unwatch(`${this.backendPath}/state`, `blkfront-resize-${this.devid}`);
    } catch {
      /* not watching */
    }
    switchState(xs, this.nodename, XenbusState.Closing);
    await waitForState(xs, this.backendPath, (s) => s >= XenbusState.Closing, timeout);
    switchState(xs, this.nodename, XenbusState.Closed);
    await waitForState(xs, this.backendPath, (s) => s === XenbusState.Closed, timeout);
    // The backend has unmapped everything: every revoke must now succeed.
    for (const g of this.allPersistent.splice(0)) this.endGrant(g);
    this.persistentFree.length = 0;
    for (const g of this.freeIndirect) {
      if (g.ref < 0) continue;
      if (!this.gnttab.tryEndAccess(g.ref)) this.disable(`backend has not unmapped grant ${g.ref}`);
      g.ref = -1;
    }
    const granted = this.directGrants;
    if (granted) {
      for (let gfn = 0; gfn < granted.length && this.directCount > 0; gfn++) {
        const ref = granted[gfn]! - 1;
        if (ref < 0) continue;
        granted[gfn] = 0;
        this.directCount--;
        if (!this.gnttab.tryEndAccess(ref)) this.disable(`backend has not unmapped grant ${ref}`);
      }
    }
    for (const q of this.queues) {
      for (const ref of q.ringRefs) {
        if (!this.gnttab.tryEndAccess(ref)) this.disable(`backend has not unmapped ring grant ${ref}`);
      }
      this.host.evtchn.close(this.dom, q.port);
      const dir = this.queues.length > 1 ? `${this.nodename}/queue-${q.index}` : this.nodename;
      for (const k of ["ring-ref", "event-channel", ...q.ringRefs.map((_, i) => `ring-ref${i}`)]) {
        try {
          xs.rm(`${dir}/${k}`);
        } catch {
          /* not there */
        }
      }
    }
    for (const k of ["ring-page-order", "multi-queue-num-queues"]) {
      try {
        xs.rm(`${this.nodename}/${k}`);
      } catch {
        /* not there */
      }
    }
    this.queues = [];
  }
}
