/**
 * The blkif wire format: constants and the byte layouts of requests and responses in the two x86 ABIs a
 * backend must understand, as Xen's public headers define them (`xen/include/public/io/blkif.h`,
 * `io/ring.h`, `io/protocols.h`, `grant_table.h`, `event_channel.h`, `io/xenbus.h`; Xen 4.17).
 *
 * Layouts (offsets checked against the structs compiled from those headers, native x86_64 and `gcc -m32`):
 *
 *   blkif_request            x86_64-abi (112 B)      x86_32-abi (108 B)
 *     operation u8            0                        0
 *     nr_segments u8          1                        1
 *     handle u16              2                        2
 *     id u64                  8                        4     (i386 aligns u64 to 4)
 *     sector_number u64      16                       12
 *     seg[11] (8 B each)     24                       20
 *   blkif_request_discard (op 5): flag u8 @1, nr_sectors u64 @24 / @20
 *   blkif_request_indirect (op 6): indirect_op u8 @1, nr_segments u16 @2, handle u16 @24 / @20,
 *     indirect_grefs[8] u32 @28 / @24
 *   blkif_response           x86_64-abi (16 B)       x86_32-abi (12 B)
 *     id u64 @0, operation u8 @8, status s16 @10
 *
 * Everything is little-endian. The ring entry (`union blkif_sring_entry`) is the size of the request.
 *
 * Hot paths decode into a caller-owned reusable `BlkifRequest`/`BlkifResponse`, so consuming a ring does not
 * allocate per request. The 64-bit `id` travels as two uint32 halves (`idLo`, `idHi`): a backend echoes the
 * frontend's exact 64 bits without going through a bigint.
 */

// ---- io/blkif.h: operations -------------------------------------------------------------------------------

/** blkif.h: read from the device. */
export const BLKIF_OP_READ = 0;
/** blkif.h: write to the device. */
export const BLKIF_OP_WRITE = 1;
/** blkif.h: write, ordered after all earlier writes (feature-barrier). */
export const BLKIF_OP_WRITE_BARRIER = 2;
/** blkif.h: commit the device's write cache (feature-flush-cache). */
export const BLKIF_OP_FLUSH_DISKCACHE = 3;
/** blkif.h: used by a vendor extension, never valid for a standard backend. */
export const BLKIF_OP_RESERVED_1 = 4;
/** blkif.h: the sectors are no longer needed (feature-discard); `struct blkif_request_discard`. */
export const BLKIF_OP_DISCARD = 5;
/** blkif.h: segments are listed in granted indirect pages (feature-max-indirect-segments). */
export const BLKIF_OP_INDIRECT = 6;

// ---- io/blkif.h: response status --------------------------------------------------------------------------

/** blkif.h: operation completed successfully. */
export const BLKIF_RSP_OKAY = 0;
/** blkif.h: operation failed (0xffff on the wire: `status` is int16_t). */
export const BLKIF_RSP_ERROR = -1;
/** blkif.h: operation not supported (0xfffe on the wire). */
export const BLKIF_RSP_EOPNOTSUPP = -2;

// ---- io/blkif.h: limits -----------------------------------------------------------------------------------

/** blkif.h: segments carried in a direct request (`seg[BLKIF_MAX_SEGMENTS_PER_REQUEST]`). */
export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
/** blkif.h: indirect page grants in one `blkif_request_indirect`. */
export const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;
/** blkif.h: `blkif_request_discard.flag` bit: the discard must erase securely (discard-secure). */
export const BLKIF_DISCARD_SECURE = 1;
/** Size of one `struct blkif_request_segment` (gref u32, first_sect u8, last_sect u8, 2 bytes padding). */
export const BLKIF_SEGMENT_SIZE = 8;
/** Segment descriptors in one 4 KiB indirect page (Linux blkback/blkfront `SEGS_PER_INDIRECT_FRAME`). */
export const SEGS_PER_INDIRECT_FRAME = 4096 / BLKIF_SEGMENT_SIZE;
/** The value Linux blkback advertises as feature-max-indirect-segments (`MAX_INDIRECT_SEGMENTS`, common.h). */
export const MAX_INDIRECT_SEGMENTS = 256;
/** A segment addresses sectors 0..7 of a 4 KiB page: blkif.h sectors are 512 bytes. */
export const BLKIF_SECTORS_PER_PAGE = 8;
export const BLKIF_SECTOR_SHIFT = 9;

// ---- io/blkif.h: vdisk info bits (backend key `info`) -----------------------------------------------------

export const VDISK_CDROM = 1;
export const VDISK_REMOVABLE = 2;
export const VDISK_READONLY = 4;

// ---- io/protocols.h ---------------------------------------------------------------------------------------

export const XEN_IO_PROTO_ABI_X86_32 = "x86_32-abi";
export const XEN_IO_PROTO_ABI_X86_64 = "x86_64-abi";
export const XEN_IO_PROTO_ABI_ARM = "arm-abi";

/** The ring layouts a backend on an x86 host must read (frontend xenstore key `protocol`). */
export type BlkifAbi = "x86_64-abi" | "x86_32-abi";

/**
 * What a missing `protocol` key means: Linux blkback on x86 uses `BLKIF_PROTOCOL_DEFAULT` =
 * `BLKIF_PROTOCOL_X86_32` (drivers/block/xen-blkback/common.h), for old 32-bit guests that never wrote it.
 */
export const BLKIF_PROTOCOL_DEFAULT: BlkifAbi = "x86_32-abi";

/**
 * The ABI selected by a frontend's `protocol` key, as Linux blkback's `connect_ring` reads it on an x86_64
 * host: absent → the default above; "x86_32-abi"/"x86_64-abi" → that layout; anything else (including
 * "arm-abi", not native on x86) → null, which blkback treats as fatal ("unknown fe protocol").
 */
export function parseBlkifProtocol(value: string | undefined | null): BlkifAbi | null {
  if (value === undefined || value === null) return BLKIF_PROTOCOL_DEFAULT;
  if (value === XEN_IO_PROTO_ABI_X86_32 || value === XEN_IO_PROTO_ABI_X86_64) return value;
  return null;
}

// ---- io/xenbus.h ------------------------------------------------------------------------------------------

export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  /** Backend: ready for the frontend's transport parameters. */
  InitWait: 2,
  /** Frontend: transport parameters published. */
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusStateValue = (typeof XenbusState)[keyof typeof XenbusState];

// ---- grant_table.h ----------------------------------------------------------------------------------------
// The grant-table constants live with the grant table itself; re-exported here so a frontend or backend finds
// the whole blkif-side ABI in one module.
export {
  GTF_invalid,
  GTF_permit_access,
  GTF_accept_transfer,
  GTF_transitive,
  GTF_type_mask,
  GTF_readonly,
  GTF_reading,
  GTF_writing,
  GTF_PWT,
  GTF_PCD,
  GTF_PAT,
  GTF_sub_page,
  GTF_transfer_committed,
  GTF_transfer_completed,
  GRANT_ENTRY_V1_SIZE,
  GNTTAB_NR_RESERVED_ENTRIES,
  GNTTAB_RESERVED_CONSOLE,
  GNTTAB_RESERVED_XENSTORE,
  GNTMAP_device_map,
  GNTMAP_host_map,
  GNTMAP_readonly,
  GNTMAP_application_map,
  GNTMAP_contains_pte,
  GNTCOPY_source_gref,
  GNTCOPY_dest_gref,
  GNTST_okay,
  GNTST_general_error,
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_bad_handle,
  GNTST_bad_virt_addr,
  GNTST_bad_dev_addr,
  GNTST_no_device_space,
  GNTST_permission_denied,
  GNTST_bad_page,
  GNTST_bad_copy_arg,
  GNTST_address_too_big,
  GNTST_eagain,
  GNTST_no_space,
} from "../hypervisor/grant-table.ts";

export const GNTTABOP_map_grant_ref = 0;
export const GNTTABOP_unmap_grant_ref = 1;
export const GNTTABOP_setup_table = 2;
export const GNTTABOP_copy = 5;
export const GNTTABOP_query_size = 6;
export const GNTTABOP_set_version = 8;
export const GNTTABOP_get_version = 10;

// ---- event_channel.h / xen.h ------------------------------------------------------------------------------

export const EVTCHNOP_bind_interdomain = 0;
export const EVTCHNOP_bind_virq = 1;
export const EVTCHNOP_close = 3;
export const EVTCHNOP_send = 4;
export const EVTCHNOP_status = 5;
export const EVTCHNOP_alloc_unbound = 6;
export const EVTCHNOP_bind_vcpu = 8;
export const EVTCHNOP_unmask = 9;
/** xen.h: "the calling domain" in domid arguments. */
export const DOMID_SELF = 0x7ff0;

// ---- layouts ----------------------------------------------------------------------------------------------

/** Byte offsets and sizes of the blkif structures in one ABI. */
export interface BlkifLayout {
  readonly abi: BlkifAbi;
  /** sizeof(blkif_request) = sizeof(union blkif_sring_entry): the ring entry size. */
  readonly requestSize: number;
  /** sizeof(blkif_response). */
  readonly responseSize: number;
  readonly entrySize: number;
  /** blkif_request: id, sector_number, seg[0]. */
  readonly reqId: number;
  readonly reqSector: number;
  readonly reqSeg: number;
  /** blkif_request_discard: nr_sectors (flag @1, id and sector_number as in blkif_request). */
  readonly discardNrSectors: number;
  readonly discardSize: number;
  /** blkif_request_indirect: handle, indirect_grefs[0] (indirect_op @1, nr_segments u16 @2). */
  readonly indirectHandle: number;
  readonly indirectGrefs: number;
  readonly indirectSize: number;
}

export const BLKIF_LAYOUT_X86_64: BlkifLayout = Object.freeze({
  abi: "x86_64-abi",
  requestSize: 112,
  responseSize: 16,
  entrySize: 112,
  reqId: 8,
  reqSector: 16,
  reqSeg: 24,
  discardNrSectors: 24,
  discardSize: 32,
  indirectHandle: 24,
  indirectGrefs: 28,
  indirectSize: 64,
});

export const BLKIF_LAYOUT_X86_32: BlkifLayout = Object.freeze({
  abi: "x86_32-abi",
  requestSize: 108,
  responseSize: 12,
  entrySize: 108,
  reqId: 4,
  reqSector: 12,
  reqSeg: 20,
  discardNrSectors: 20,
  discardSize: 28,
  indirectHandle: 20,
  indirectGrefs: 24,
  indirectSize: 64,
});

export function blkifLayout(abi: BlkifAbi): BlkifLayout {
  return abi === "x86_32-abi" ? BLKIF_LAYOUT_X86_32 : BLKIF_LAYOUT_X86_64;
}

// ---- little-endian helpers on a Uint8Array (no DataView per call, any alignment) ---------------------------

export function getU16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
export function getU32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
export function putU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}
export function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

const TWO32 = 4294967296;

/** Split a u64 given as a number (an integer in [0, 2^64)) or a bigint into its low and high uint32 halves. */
function splitU64(v: number | bigint, what: string): [number, number] {
  if (typeof v === "bigint") {
    const u = BigInt.asUintN(64, v);
    if (u !== v) throw new RangeError(`${what} ${v} does not fit in 64 unsigned bits`);
    return [Number(u & 0xffffffffn), Number(u >> 32n)];
  }
  if (!Number.isInteger(v) || v < 0 || v >= TWO32 * TWO32) {
    throw new RangeError(`${what} ${v} is not an integer in [0, 2^64)`);
  }
  const hi = Math.floor(v / TWO32);
  return [v - hi * TWO32, hi];
}

// ---- requests ---------------------------------------------------------------------------------------------

/**
 * One request, decoded from (or to be encoded into) a ring slot. Which fields mean something depends on
 * `operation`, as in the C union: read/write/barrier/flush use `nrSegments` and `seg*`; discard uses `flag` and
 * `nrSectors*`; indirect uses `indirectOp`, `nrSegments` (u16) and `indirectGrefs`. Every request has
 * `operation`, `id` and (except unknown operations) `handle` and `sector_number`.
 *
 * Reusable: `decodeRequest` overwrites every field it reads, so one object serves a whole ring.
 */
export class BlkifRequest {
  operation = 0;
  /** Read/write: `nr_segments` (u8). Indirect: `nr_segments` (u16, data pages listed in the indirect pages). */
  nrSegments = 0;
  handle = 0;
  /** The opaque 64-bit id, as two uint32 halves. */
  idLo = 0;
  idHi = 0;
  sectorLo = 0;
  sectorHi = 0;
  /** Direct segments; entries past `min(nrSegments, 11)` are left as they were. */
  readonly segGref = new Uint32Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);
  readonly segFirst = new Uint8Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);
  readonly segLast = new Uint8Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);
  /** Discard: `flag` (BLKIF_DISCARD_SECURE). */
  flag = 0;
  nrSectorsLo = 0;
  nrSectorsHi = 0;
  /** Indirect: the operation the indirect request carries (READ or WRITE are the valid ones). */
  indirectOp = 0;
  readonly indirectGrefs = new Uint32Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);

  /** The id as a bigint (allocates; for tests and logs, not the hot path). */
  get id(): bigint {
    return (BigInt(this.idHi) << 32n) | BigInt(this.idLo);
  }
  set id(v: number | bigint) {
    [this.idLo, this.idHi] = splitU64(v, "request id");
  }
  /** sector_number as a number: exact below 2^53, and any larger value is far past the end of every disk. */
  get sector(): number {
    return this.sectorHi * TWO32 + this.sectorLo;
  }
  set sector(v: number | bigint) {
    [this.sectorLo, this.sectorHi] = splitU64(v, "sector_number");
  }
  get nrSectors(): number {
    return this.nrSectorsHi * TWO32 + this.nrSectorsLo;
  }
  set nrSectors(v: number | bigint) {
    [this.nrSectorsLo, this.nrSectorsHi] = splitU64(v, "nr_sectors");
  }

  /** Set direct segment `i`. */
  setSegment(i: number, gref: number, firstSect: number, lastSect: number): this {
    this.segGref[i] = gref;
    this.segFirst[i] = firstSect;
    this.segLast[i] = lastSect;
    return this;
  }

  /** Reset every field to zero (a fresh template, as drivers build requests in a zeroed struct). */
  clear(): this {
    this.operation = this.nrSegments = this.handle = this.idLo = this.idHi = 0;
    this.sectorLo = this.sectorHi = this.flag = this.nrSectorsLo = this.nrSectorsHi = this.indirectOp = 0;
    this.segGref.fill(0);
    this.segFirst.fill(0);
    this.segLast.fill(0);
    this.indirectGrefs.fill(0);
    return this;
  }

  /** Copy all fields from another request. */
  copyFrom(o: BlkifRequest): this {
    this.operation = o.operation;
    this.nrSegments = o.nrSegments;
    this.handle = o.handle;
    this.idLo = o.idLo;
    this.idHi = o.idHi;
    this.sectorLo = o.sectorLo;
    this.sectorHi = o.sectorHi;
    this.segGref.set(o.segGref);
    this.segFirst.set(o.segFirst);
    this.segLast.set(o.segLast);
    this.flag = o.flag;
    this.nrSectorsLo = o.nrSectorsLo;
    this.nrSectorsHi = o.nrSectorsHi;
    this.indirectOp = o.indirectOp;
    this.indirectGrefs.set(o.indirectGrefs);
    return this;
  }
}

/**
 * Encode `req` into the ring slot at `buf[off]`. Like real frontends (which build the request in a zeroed
 * struct and copy it into the slot), the WHOLE slot (`requestSize` bytes) is overwritten: padding and unused
 * segment slots become zero. For read/write/barrier/flush, `min(nrSegments, 11)` segments are written.
 */
export function encodeRequest(L: BlkifLayout, buf: Uint8Array, off: number, req: BlkifRequest): void {
  // In 32-bit words when the slot and every field are aligned (both ABIs): byte stores to the ring's shared
  // memory cost as much per byte as word stores per word, and the slot is 112 bytes.
  const n = L.requestSize;
  const abs = buf.byteOffset + off;
  const offsets = L.reqId | L.reqSector | L.reqSeg | L.discardNrSectors | L.indirectHandle | L.indirectGrefs;
  if (((abs | n | offsets) & 3) === 0 && off >= 0 && off + n <= buf.length) {
    const w = wordsOf(buf);
    // (A buffer that grew since its words were taken goes the byte way.)
    if ((abs + n) >>> 2 <= w.length) return encodeRequestWords(L, w, abs >>> 2, req);
  }
  encodeRequestBytes(L, buf, off, req);
}

let wordsFor: Uint8Array | null = null;
let wordsBuffer: ArrayBufferLike | null = null;
let wordsView: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

/**
 * A 32-bit view of all of `buf`'s buffer, kept for the next call (a ring's requests all go to one memory).
 * Keyed first by the view itself: reading `.buffer` of a view on shared or wasm memory is a call into the
 * runtime (about 150 instructions), and a ring encodes every request through the same view.
 */
function wordsOf(buf: Uint8Array): Uint32Array<ArrayBufferLike> {
  if (buf === wordsFor) return wordsView;
  const b = buf.buffer;
  if (b !== wordsBuffer) {
    wordsView = new Uint32Array(b, 0, b.byteLength >>> 2);
    wordsBuffer = b;
  }
  wordsFor = buf;
  return wordsView;
}

/** encodeRequest at word `o` of `w`: the same bytes as encodeRequestBytes (little-endian words). */
function encodeRequestWords(
  L: BlkifLayout,
  w: Uint32Array<ArrayBufferLike>,
  o: number,
  req: BlkifRequest,
): void {
  for (let i = o, end = o + (L.requestSize >>> 2); i < end; i++) w[i] = 0;
  const op = req.operation;
  const id = o + (L.reqId >>> 2);
  w[id] = req.idLo;
  w[id + 1] = req.idHi;
  const sec = o + (L.reqSector >>> 2);
  w[sec] = req.sectorLo;
  w[sec + 1] = req.sectorHi;
  if (op === BLKIF_OP_INDIRECT) {
    w[o] = (op & 0xff) | ((req.indirectOp & 0xff) << 8) | ((req.nrSegments & 0xffff) << 16);
    w[o + (L.indirectHandle >>> 2)] = req.handle & 0xffff;
    const g = req.indirectGrefs;
    const at = o + (L.indirectGrefs >>> 2);
    for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) w[at + i] = g[i]!;
    return;
  }
  if (op === BLKIF_OP_DISCARD) {
    w[o] = (op & 0xff) | ((req.flag & 0xff) << 8) | ((req.handle & 0xffff) << 16);
    const nr = o + (L.discardNrSectors >>> 2);
    w[nr] = req.nrSectorsLo;
    w[nr + 1] = req.nrSectorsHi;
    return;
  }
  w[o] = (op & 0xff) | ((req.nrSegments & 0xff) << 8) | ((req.handle & 0xffff) << 16);
  const n = Math.min(req.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
  let s = o + (L.reqSeg >>> 2);
  for (let i = 0; i < n; i++, s += BLKIF_SEGMENT_SIZE >>> 2) {
    w[s] = req.segGref[i]!;
    w[s + 1] = req.segFirst[i]! | (req.segLast[i]! << 8);
  }
}

function encodeRequestBytes(L: BlkifLayout, buf: Uint8Array, off: number, req: BlkifRequest): void {
  for (let i = off, end = off + L.requestSize; i < end; i++) buf[i] = 0;
  const op = req.operation;
  buf[off] = op;
  putU32(buf, off + L.reqId, req.idLo);
  putU32(buf, off + L.reqId + 4, req.idHi);
  if (op === BLKIF_OP_INDIRECT) {
    buf[off + 1] = req.indirectOp;
    putU16(buf, off + 2, req.nrSegments);
    putU32(buf, off + L.reqSector, req.sectorLo);
    putU32(buf, off + L.reqSector + 4, req.sectorHi);
    putU16(buf, off + L.indirectHandle, req.handle);
    const g = req.indirectGrefs;
    for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++)
      putU32(buf, off + L.indirectGrefs + 4 * i, g[i]!);
    return;
  }
  putU16(buf, off + 2, req.handle);
  putU32(buf, off + L.reqSector, req.sectorLo);
  putU32(buf, off + L.reqSector + 4, req.sectorHi);
  if (op === BLKIF_OP_DISCARD) {
    buf[off + 1] = req.flag;
    putU32(buf, off + L.discardNrSectors, req.nrSectorsLo);
    putU32(buf, off + L.discardNrSectors + 4, req.nrSectorsHi);
    return;
  }
  buf[off + 1] = req.nrSegments;
  const n = Math.min(req.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
  let s = off + L.reqSeg;
  for (let i = 0; i < n; i++, s += BLKIF_SEGMENT_SIZE) {
    putU32(buf, s, req.segGref[i]!);
    buf[s + 4] = req.segFirst[i]!;
    buf[s + 5] = req.segLast[i]!;
  }
}

/**
 * Decode the slot at `buf[off]` into `out` (a snapshot: a backend validates the copy, never the shared page,
 * so a frontend changing the slot afterwards cannot change what was checked). Reads the fields of the union
 * member that `operation` selects; an unknown operation yields only `operation` and `id` (`u.other.id`), which
 * is all a backend needs to answer EOPNOTSUPP. Segments beyond 11 do not exist in a direct request and are not
 * read (the backend rejects such a request anyway).
 */
export function decodeRequest(L: BlkifLayout, buf: Uint8Array, off: number, out: BlkifRequest): BlkifRequest {
  const op = buf[off]!;
  out.operation = op;
  out.idLo = getU32(buf, off + L.reqId);
  out.idHi = getU32(buf, off + L.reqId + 4);
  switch (op) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE: {
      const nr = buf[off + 1]!;
      out.nrSegments = nr;
      out.handle = getU16(buf, off + 2);
      out.sectorLo = getU32(buf, off + L.reqSector);
      out.sectorHi = getU32(buf, off + L.reqSector + 4);
      const n = Math.min(nr, BLKIF_MAX_SEGMENTS_PER_REQUEST);
      let s = off + L.reqSeg;
      for (let i = 0; i < n; i++, s += BLKIF_SEGMENT_SIZE) {
        out.segGref[i] = getU32(buf, s);
        out.segFirst[i] = buf[s + 4]!;
        out.segLast[i] = buf[s + 5]!;
      }
      break;
    }
    case BLKIF_OP_DISCARD:
      out.flag = buf[off + 1]!;
      out.handle = getU16(buf, off + 2);
      out.sectorLo = getU32(buf, off + L.reqSector);
      out.sectorHi = getU32(buf, off + L.reqSector + 4);
      out.nrSectorsLo = getU32(buf, off + L.discardNrSectors);
      out.nrSectorsHi = getU32(buf, off + L.discardNrSectors + 4);
      break;
    case BLKIF_OP_INDIRECT: {
      out.indirectOp = buf[off + 1]!;
      out.nrSegments = getU16(buf, off + 2);
      out.sectorLo = getU32(buf, off + L.reqSector);
      out.sectorHi = getU32(buf, off + L.reqSector + 4);
      out.handle = getU16(buf, off + L.indirectHandle);
      const g = out.indirectGrefs;
      for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++)
        g[i] = getU32(buf, off + L.indirectGrefs + 4 * i);
      break;
    }
    default:
      break;
  }
  return out;
}

/** Number of indirect pages a request with `nrSegments` data segments lists (Linux `INDIRECT_PAGES()`). */
export function indirectPages(nrSegments: number): number {
  return Math.ceil(nrSegments / SEGS_PER_INDIRECT_FRAME);
}

// ---- segment descriptors (also the entries of indirect pages) ---------------------------------------------

/** Write one 8-byte `blkif_request_segment` (padding zeroed). */
export function encodeSegment(
  buf: Uint8Array,
  off: number,
  gref: number,
  firstSect: number,
  lastSect: number,
): void {
  putU32(buf, off, gref);
  buf[off + 4] = firstSect;
  buf[off + 5] = lastSect;
  buf[off + 6] = 0;
  buf[off + 7] = 0;
}

/**
 * `encodeSegment` through a 32-bit view of the same little-endian bytes, `w[k]` being the segment's first
 * word: the gref, then first_sect and last_sect with the padding zeroed. Two stores instead of eight byte
 * stores (an indirect page holds up to 512 segments).
 */
export function encodeSegmentWords(
  w: Uint32Array,
  k: number,
  gref: number,
  firstSect: number,
  lastSect: number,
): void {
  w[k] = gref;
  w[k + 1] = (firstSect & 0xff) | ((lastSect & 0xff) << 8);
}

/**
 * Read `count` segment descriptors from `buf[off]` into the arrays at `at..at+count-1` (a backend copies an
 * indirect page's entries out before validating them, as Linux `xen_blkbk_parse_indirect` does).
 */
export function decodeSegments(
  buf: Uint8Array,
  off: number,
  count: number,
  gref: Uint32Array,
  first: Uint8Array,
  last: Uint8Array,
  at = 0,
): void {
  for (let i = 0; i < count; i++, off += BLKIF_SEGMENT_SIZE) {
    gref[at + i] = getU32(buf, off);
    first[at + i] = buf[off + 4]!;
    last[at + i] = buf[off + 5]!;
  }
}

/** `decodeSegments` through a 32-bit view of the same little-endian bytes, `w[k]` the first segment's first word. */
export function decodeSegmentsWords(
  w: Uint32Array,
  k: number,
  count: number,
  gref: Uint32Array,
  first: Uint8Array,
  last: Uint8Array,
  at = 0,
): void {
  for (let i = 0; i < count; i++, k += 2) {
    gref[at + i] = w[k]!;
    const v = w[k + 1]!;
    first[at + i] = v & 0xff;
    last[at + i] = (v >>> 8) & 0xff;
  }
}

// ---- responses --------------------------------------------------------------------------------------------

/** One response. Reusable like `BlkifRequest`. */
export class BlkifResponse {
  idLo = 0;
  idHi = 0;
  operation = 0;
  /** BLKIF_RSP_* (signed). */
  status = 0;

  get id(): bigint {
    return (BigInt(this.idHi) << 32n) | BigInt(this.idLo);
  }
  set id(v: number | bigint) {
    [this.idLo, this.idHi] = splitU64(v, "response id");
  }
}

/**
 * Write a response into the slot at `buf[off]`: id (bytes 0..7), operation (8) and status (10..11) ONLY, as
 * Linux `make_response()` and QEMU `xen_block_send_response()` assign the three fields of the slot in place.
 * Byte 9 and everything after byte 11 keep whatever the request left there.
 */
export function encodeResponse(
  buf: Uint8Array,
  off: number,
  idLo: number,
  idHi: number,
  operation: number,
  status: number,
): void {
  putU32(buf, off, idLo);
  putU32(buf, off + 4, idHi);
  buf[off + 8] = operation;
  putU16(buf, off + 10, status & 0xffff);
}

/** Decode the response in the slot at `buf[off]` into `out` (same layout in both ABIs up to byte 11). */
export function decodeResponse(buf: Uint8Array, off: number, out: BlkifResponse): BlkifResponse {
  out.idLo = getU32(buf, off);
  out.idHi = getU32(buf, off + 4);
  out.operation = buf[off + 8]!;
  out.status = (getU16(buf, off + 10) << 16) >> 16;
  return out;
}
