/**
 * Xen's shared I/O ring (`xen/include/public/io/ring.h`), for blkif and any other split driver that uses it.
 *
 * The shared ring lives in guest memory: page 0 starts with the header
 *
 *   off 0  req_prod   (written by the frontend)     off 8  rsp_prod   (written by the backend)
 *   off 4  req_event  (written by the backend)      off 12 rsp_event  (written by the frontend)
 *   off 16 pvt (4 bytes), off 20 __pad[44], off 64 ring[] entries
 *
 * and each side keeps private state (`FrontRing`: req_prod_pvt, rsp_cons; `BackRing`: rsp_prod_pvt,
 * req_cons). Indices are free-running uint32 (`RING_IDX`): every difference below is taken modulo 2^32
 * (`>>> 0`), so a ring keeps working when its indices cross 2^32, as C unsigned arithmetic does.
 *
 * Memory ordering: the four header words are read and written with `Atomics` (sequentially consistent), which
 * gives the barriers ring.h asks for (`wmb` before publishing a producer index: the plain entry writes before
 * an Atomics.store are visible to whoever Atomics.loads that index; `mb` between publishing and reading the
 * peer's event index: SC store then SC load). So a frontend and a backend on different worker threads can
 * share a ring in a SharedArrayBuffer. Entries themselves are plain bytes. A ring only this thread can reach
 * (`SharedRing.sharing`) uses plain header accesses: program order is all a single thread needs.
 *
 * A ring is any `Uint8Array` window of memory: the guest's own pages (frontend) or a grant-mapped view of them
 * (backend). A multi-page ring (`ring-page-order`) is a view of its pages made contiguous, page 0 first;
 * entries straddle page boundaries because 112 does not divide 4096.
 */

/** Bytes before `ring[]`: offsetof(struct blkif_sring, ring). */
export const RING_HEADER_SIZE = 64;
/** Xen ring pages are 4 KiB (XEN_PAGE_SIZE). */
export const RING_PAGE_SIZE = 4096;
/** Linux `XENBUS_MAX_RING_GRANT_ORDER`: at most 2^4 = 16 ring pages. */
export const XENBUS_MAX_RING_GRANT_ORDER = 4;

/** Word indices of the header fields in a Uint32Array over the ring page. */
const REQ_PROD = 0;
const REQ_EVENT = 1;
const RSP_PROD = 2;
const RSP_EVENT = 3;

/** __RD32: round a 32-bit unsigned value down to a power of two (0 stays 0). */
export function roundDownPow2(x: number): number {
  x >>>= 0;
  if (x === 0) return 0;
  return 2 ** (31 - Math.clz32(x));
}

/**
 * __RING_SIZE / __CONST_RING_SIZE: how many entries of `entrySize` bytes fit in `pages` 4 KiB pages after the
 * 64-byte header, rounded down to a power of two (so an index is masked with size-1). blkif: 32 entries per
 * page in both ABIs, 512 for 16 pages.
 */
export function ringSize(pages: number, entrySize: number): number {
  if (!(Number.isInteger(pages) && pages >= 1) || !(Number.isInteger(entrySize) && entrySize >= 1)) {
    throw new RangeError(`ring of ${pages} pages with ${entrySize}-byte entries`);
  }
  return roundDownPow2(Math.floor((pages * RING_PAGE_SIZE - RING_HEADER_SIZE) / entrySize));
}

/** A ring whose view is too small, misaligned or holds no entry. */
export class RingLayoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RingLayoutError";
  }
}

function headerWords(view: Uint8Array): Uint32Array {
  if (view.byteOffset % 4 !== 0) {
    throw new RingLayoutError(`ring view at byte offset ${view.byteOffset} is not 4-byte aligned`);
  }
  if (view.byteLength < RING_HEADER_SIZE) {
    throw new RingLayoutError(`ring view of ${view.byteLength} bytes is smaller than the ring header`);
  }
  return new Uint32Array(view.buffer, view.byteOffset, 4);
}

/**
 * SHARED_RING_INIT, done once by the frontend on a fresh ring page: req_prod = rsp_prod = 0,
 * req_event = rsp_event = 1, bytes 16..63 (pvt and __pad) zeroed. Entries are not touched.
 */
export function sharedRingInit(view: Uint8Array): void {
  const h = headerWords(view);
  view.fill(0, 16, RING_HEADER_SIZE);
  Atomics.store(h, REQ_PROD, 0);
  Atomics.store(h, RSP_PROD, 0);
  Atomics.store(h, REQ_EVENT, 1);
  Atomics.store(h, RSP_EVENT, 1);
}

/**
 * Who else may touch a ring's memory: while `crossThread` is false only this thread does, and the header words
 * are read and written as plain elements (one thread's accesses are in program order already, and V8 does not
 * inline Atomics: each is a builtin call, about ten times a plain access, a dozen per request and response).
 */
export interface RingSharing {
  readonly crossThread: boolean;
}

/** The default: assume a peer on another thread (a ring whose owner says nothing about threads). */
export const SHARED_ACROSS_THREADS: RingSharing = Object.freeze({ crossThread: true });

/**
 * The shared header (`struct *_sring`), each field an Atomics access to guest memory, or a plain one while
 * `sharing` says no other thread can see the ring. `sharing` is read on every access, so a ring whose memory
 * is handed to another thread later (the event-channel domain of its owner goes cross-thread with it) switches
 * to Atomics from then on; everything written before was published by the hand-over itself (postMessage).
 */
export class SharedRing {
  /** The four header words (req_prod, req_event, rsp_prod, rsp_event) for Atomics.wait-style uses. */
  readonly words: Uint32Array;
  sharing: RingSharing = SHARED_ACROSS_THREADS;
  constructor(readonly view: Uint8Array) {
    this.words = headerWords(view);
  }
  private load(i: number): number {
    return this.sharing.crossThread ? Atomics.load(this.words, i) : this.words[i]!;
  }
  private store(i: number, v: number): void {
    if (this.sharing.crossThread) Atomics.store(this.words, i, v);
    else this.words[i] = v;
  }
  get reqProd(): number {
    return this.load(REQ_PROD);
  }
  set reqProd(v: number) {
    this.store(REQ_PROD, v >>> 0);
  }
  get reqEvent(): number {
    return this.load(REQ_EVENT);
  }
  set reqEvent(v: number) {
    this.store(REQ_EVENT, v >>> 0);
  }
  get rspProd(): number {
    return this.load(RSP_PROD);
  }
  set rspProd(v: number) {
    this.store(RSP_PROD, v >>> 0);
  }
  get rspEvent(): number {
    return this.load(RSP_EVENT);
  }
  set rspEvent(v: number) {
    this.store(RSP_EVENT, v >>> 0);
  }
}

/** The private state both ends share the shape of: entry geometry over a view. */
abstract class RingEnd {
  readonly sring: SharedRing;
  /** RING_SIZE: number of entries (a power of two). */
  readonly size: number;
  readonly mask: number;
  readonly view: Uint8Array;

  /**
   * `spanBytes` is how many ring bytes exist behind `view`: its own length, unless a subclass reaches the other
   * pages of a multi-page ring some other way (pages scattered in the granter's memory; `view` is page 0).
   */
  constructor(
    view: Uint8Array,
    readonly entrySize: number,
    pages: number,
    spanBytes = view.byteLength,
  ) {
    this.size = ringSize(pages, entrySize);
    if (this.size === 0)
      throw new RingLayoutError(`no ${entrySize}-byte entry fits in ${pages} ring page(s)`);
    const need = RING_HEADER_SIZE + this.size * entrySize;
    if (spanBytes < need) {
      throw new RingLayoutError(
        `ring of ${this.size} x ${entrySize} bytes needs ${need} bytes, view has ${view.byteLength}`,
      );
    }
    this.view = view;
    this.mask = this.size - 1;
    this.sring = new SharedRing(view);
  }

  /** Byte offset in `view` of the entry for index `idx` (RING_GET_REQUEST / RING_GET_RESPONSE). */
  slotOffset(idx: number): number {
    return RING_HEADER_SIZE + (idx & this.mask) * this.entrySize;
  }
}

function defaultPages(view: Uint8Array): number {
  return Math.max(1, Math.floor(view.byteLength / RING_PAGE_SIZE));
}

/**
 * The frontend's end (`struct *_front_ring`): produces requests, consumes responses.
 * `new FrontRing(view, entry)` is FRONT_RING_INIT on an already initialised page; `FrontRing.init` is
 * XEN_FRONT_RING_INIT (SHARED_RING_INIT + FRONT_RING_INIT); `attachAt` is FRONT_RING_ATTACH.
 */
export class FrontRing extends RingEnd {
  /** req_prod_pvt: next request index to fill (not yet visible to the backend until pushed). */
  reqProdPvt: number;
  /** rsp_cons: next response index to consume. */
  rspCons: number;

  constructor(view: Uint8Array, entrySize: number, pages = defaultPages(view), start = 0) {
    super(view, entrySize, pages);
    this.reqProdPvt = start >>> 0;
    this.rspCons = start >>> 0;
  }

  /** XEN_FRONT_RING_INIT: initialise the shared page and attach at index 0. */
  static init(view: Uint8Array, entrySize: number, pages = defaultPages(view)): FrontRing {
    sharedRingInit(view);
    return new FrontRing(view, entrySize, pages, 0);
  }

  /** FRONT_RING_ATTACH at `start` (a ring resumed with the indices already in the shared page). */
  static attachAt(view: Uint8Array, entrySize: number, start: number, pages = defaultPages(view)): FrontRing {
    return new FrontRing(view, entrySize, pages, start);
  }

  /** RING_FREE_REQUESTS: RING_SIZE - (req_prod_pvt - rsp_cons), in unsigned arithmetic. */
  freeRequests(): number {
    return (this.size - ((this.reqProdPvt - this.rspCons) >>> 0)) >>> 0;
  }

  /** RING_FULL. */
  full(): boolean {
    return this.freeRequests() === 0;
  }

  /** Offset of the slot of req_prod_pvt (RING_GET_REQUEST(r, r->req_prod_pvt)). */
  requestOffset(idx = this.reqProdPvt): number {
    return this.slotOffset(idx);
  }

  /** Take the next request slot: returns its offset and advances req_prod_pvt (`req_prod_pvt++`). */
  nextRequest(): number {
    const off = this.slotOffset(this.reqProdPvt);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
    return off;
  }

  /** RING_PUSH_REQUESTS: publish req_prod_pvt (entries first: the Atomics store orders them). */
  pushRequests(): void {
    this.sring.reqProd = this.reqProdPvt;
  }

  /**
   * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish, then true iff the backend's req_event lies in (old, new],
   * i.e. the backend asked to be woken by one of the requests just pushed.
   */
  pushRequestsAndCheckNotify(): boolean {
    const s = this.sring;
    const old = s.reqProd;
    const nu = this.reqProdPvt;
    s.reqProd = nu;
    return (nu - s.reqEvent) >>> 0 < (nu - old) >>> 0;
  }

  /** RING_HAS_UNCONSUMED_RESPONSES: rsp_prod - rsp_cons (a count, not a bool). */
  unconsumedResponses(): number {
    return (this.sring.rspProd - this.rspCons) >>> 0;
  }

  /** Offset of the slot of response index `idx` (default rsp_cons). */
  responseOffset(idx = this.rspCons): number {
    return this.slotOffset(idx);
  }

  /** Take the next response: returns its offset and advances rsp_cons. */
  nextResponse(): number {
    const off = this.slotOffset(this.rspCons);
    this.rspCons = (this.rspCons + 1) >>> 0;
    return off;
  }

  /**
   * RING_FINAL_CHECK_FOR_RESPONSES: when there is nothing left, ask for an event on the very next response
   * (rsp_event = rsp_cons + 1) and look once more, closing the race with a response pushed meanwhile.
   * Returns the number of unconsumed responses (0 = safe to sleep).
   */
  finalCheckForResponses(): number {
    let work = this.unconsumedResponses();
    if (work !== 0) return work;
    this.sring.rspEvent = (this.rspCons + 1) >>> 0;
    work = this.unconsumedResponses();
    return work;
  }

  /** RING_RESPONSE_PROD_OVERFLOW: a backend claiming more responses than requests could be outstanding. */
  responseProdOverflow(prod: number): boolean {
    return (prod - this.rspCons) >>> 0 > this.size;
  }
}

/**
 * The backend's end (`struct *_back_ring`): consumes requests, produces responses.
 * `new BackRing(view, entry)` is BACK_RING_INIT; `attachAt` is BACK_RING_ATTACH (Linux blkback attaches at
 * the page's current rsp_prod when it connects to a ring that was in use).
 */
export class BackRing extends RingEnd {
  /** rsp_prod_pvt: next response index to fill. */
  rspProdPvt: number;
  /** req_cons: next request index to consume. */
  reqCons: number;

  constructor(
    view: Uint8Array,
    entrySize: number,
    pages = defaultPages(view),
    start = 0,
    spanBytes = view.byteLength,
  ) {
    super(view, entrySize, pages, spanBytes);
    this.rspProdPvt = start >>> 0;
    this.reqCons = start >>> 0;
  }

  static attachAt(view: Uint8Array, entrySize: number, start: number, pages = defaultPages(view)): BackRing {
    return new BackRing(view, entrySize, pages, start);
  }

  /**
   * RING_HAS_UNCONSUMED_REQUESTS: min(req_prod - req_cons, RING_SIZE - (req_cons - rsp_prod_pvt)). The second
   * bound keeps a frontend that publishes a bogus req_prod from making the backend read more requests than
   * there are slots not awaiting a response.
   */
  unconsumedRequests(): number {
    const req = (this.sring.reqProd - this.reqCons) >>> 0;
    const rsp = (this.size - ((this.reqCons - this.rspProdPvt) >>> 0)) >>> 0;
    return req < rsp ? req : rsp;
  }

  /** Offset of the slot of request index `idx` (default req_cons). */
  requestOffset(idx = this.reqCons): number {
    return this.slotOffset(idx);
  }

  /** Take the next request: returns its offset and advances req_cons. Copy the entry out before using it. */
  nextRequest(): number {
    const off = this.slotOffset(this.reqCons);
    this.reqCons = (this.reqCons + 1) >>> 0;
    return off;
  }

  /** RING_REQUEST_CONS_OVERFLOW: consuming index `cons` would overwrite a slot still owed a response. */
  requestConsOverflow(cons = this.reqCons): boolean {
    return (cons - this.rspProdPvt) >>> 0 >= this.size;
  }

  /** RING_REQUEST_PROD_OVERFLOW: the frontend published more requests than the ring can hold. */
  requestProdOverflow(prod: number): boolean {
    return (prod - this.rspProdPvt) >>> 0 > this.size;
  }

  /** Offset of the slot of rsp_prod_pvt (RING_GET_RESPONSE(r, r->rsp_prod_pvt)). */
  responseOffset(idx = this.rspProdPvt): number {
    return this.slotOffset(idx);
  }

  /** Take the next response slot: returns its offset and advances rsp_prod_pvt. */
  nextResponse(): number {
    const off = this.slotOffset(this.rspProdPvt);
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
    return off;
  }

  /** RING_PUSH_RESPONSES. */
  pushResponses(): void {
    this.sring.rspProd = this.rspProdPvt;
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publish; true iff rsp_event lies in (old, new]. */
  pushResponsesAndCheckNotify(): boolean {
    const s = this.sring;
    const old = s.rspProd;
    const nu = this.rspProdPvt;
    s.rspProd = nu;
    return (nu - s.rspEvent) >>> 0 < (nu - old) >>> 0;
  }

  /**
   * RING_FINAL_CHECK_FOR_REQUESTS: when idle, set req_event = req_cons + 1 and look again. Returns the number
   * of unconsumed requests (0 = safe to sleep until the next event).
   */
  finalCheckForRequests(): number {
    let work = this.unconsumedRequests();
    if (work !== 0) return work;
    this.sring.reqEvent = (this.reqCons + 1) >>> 0;
    work = this.unconsumedRequests();
    return work;
  }
}

/**
 * The notify predicate shared by both PUSH_..._AND_CHECK_NOTIFY macros, exposed for tests and for peers that
 * model the check themselves: notify iff `(new - event) < (new - old)` in uint32.
 */
export function ringNeedsNotify(oldProd: number, newProd: number, event: number): boolean {
  return (newProd - event) >>> 0 < (newProd - oldProd) >>> 0;
}
