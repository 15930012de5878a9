/**
 * Grant tables, version 1 (xen/include/public/grant_table.h, xen/common/grant_table.c).
 *
 * The granting domain's table is an array of 8-byte `grant_entry_v1` (flags u16 @0, domid u16 @2, frame u32
 * @4) in frames of the granting domain's OWN memory (the frames it handed over with GNTTABOP_setup_table /
 * XENMAPSPACE_grant_table). The guest grants by writing domid and frame, then flags; it revokes by clearing
 * flags with a compare-and-swap that fails while the hypervisor has GTF_reading/GTF_writing set.
 *
 * The hypervisor side (`GrantMapper`) maps, unmaps and copies for the peer, with Xen's checks and GNTST_*
 * statuses. Xen's per-entry "active" record (pin counts, the frame pinned at first map) lives in a
 * SharedArrayBuffer next to a lock word, so a backend running on another thread over the same guest memory
 * shares it (construct `GrantTable.attach(...)` there with the same buffer).
 */

import { type GuestMemory, GuestRam, PAGE_SHIFT, PAGE_SIZE, isFault } from "./memory.ts";
import type { Counts } from "./accounting.ts";
import type { Tracer } from "./trace.ts";

// grant_table.h: grant_entry_v1.flags
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_transitive = 3;
export const GTF_type_mask = 3;
export const GTF_readonly = 1 << 2; // guest: the grantee may only map/copy for reading
export const GTF_reading = 1 << 3; // set by Xen while the grantee has it mapped/pinned
export const GTF_writing = 1 << 4; // set by Xen while the grantee has it mapped/pinned writable
export const GTF_PWT = 1 << 5; // cache attributes of the grantee's mapping
export const GTF_PCD = 1 << 6;
export const GTF_PAT = 1 << 7;
export const GTF_sub_page = 1 << 8;
// Transfer-type entries reuse bits 2-3 with other meanings.
export const GTF_transfer_committed = 1 << 2;
export const GTF_transfer_completed = 1 << 3;

// grant_table.h: gnttab_map_grant_ref.flags
export const GNTMAP_device_map = 1;
export const GNTMAP_host_map = 2;
export const GNTMAP_readonly = 4;
export const GNTMAP_application_map = 8;
export const GNTMAP_contains_pte = 16;

// grant_table.h: gnttab_copy.flags
export const GNTCOPY_source_gref = 1;
export const GNTCOPY_dest_gref = 2;

// grant_table.h: GNTST_*
export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_bad_handle = -4;
export const GNTST_bad_virt_addr = -5;
export const GNTST_bad_dev_addr = -6;
export const GNTST_no_device_space = -7;
export const GNTST_permission_denied = -8;
export const GNTST_bad_page = -9;
export const GNTST_bad_copy_arg = -10;
export const GNTST_address_too_big = -11;
export const GNTST_eagain = -12;
export const GNTST_no_space = -13;

export type GrantStatus = number;

/** grant_table.h: refs 0..7 are reserved (0 console, 1 xenstore); guests hand out refs from 8. */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;
export const GNTTAB_RESERVED_CONSOLE = 0;
export const GNTTAB_RESERVED_XENSTORE = 1;
export const GRANT_ENTRY_V1_SIZE = 8;
export const GRANT_ENTRIES_PER_FRAME = PAGE_SIZE / GRANT_ENTRY_V1_SIZE; // 512
/** Frames a table may grow to (Xen's max_grant_frames; 32 frames = 16384 refs). */
export const DEFAULT_MAX_GRANT_FRAMES = 32;

// Layout of the shared state (Int32 words).
const S_LOCK = 0;
const S_NR_FRAMES = 1;
const S_MAX_FRAMES = 2;
const S_FRAMES = 4; // gfn of each table frame
// Active entries follow the frame list: 4 words per ref.
const A_READ_PINS = 0;
const A_WRITE_PINS = 1;
const A_FRAME = 2; // frame pinned at first map (Xen keeps using it until the last unpin)
const A_WORDS = 4;

/** A grant entry as decoded from the granting domain's table. */
export interface GrantEntryV1 {
  flags: number;
  domid: number;
  frame: number;
}

/**
 * One domain's grant table: its frames in the domain's memory, and Xen's active-entry state. Both the
 * hypervisor (map/copy) and the guest's own grant library (`GuestGrantTable`) go through this object, which
 * does the atomic 16-bit flag updates on the guest's memory when it is shared.
 */
export class GrantTable {
  readonly state: Int32Array;
  readonly maxFrames: number;
  /** Atomic view of guest RAM for the flags word, when RAM is a SharedArrayBuffer. */
  private readonly u16: Uint16Array | null;

  private constructor(
    readonly domid: number,
    readonly mem: GuestMemory,
    readonly shared: SharedArrayBuffer,
  ) {
    this.state = new Int32Array(shared);
    this.maxFrames = this.state[S_MAX_FRAMES]!;
    this.u16 =
      mem instanceof GuestRam && mem.buffer instanceof SharedArrayBuffer
        ? new Uint16Array(mem.buffer, 0, mem.size >>> 1)
        : null;
  }

  /** A new, empty table (no frames yet) for domain `domid` whose memory is `mem`. */
  static create(domid: number, mem: GuestMemory, maxFrames = DEFAULT_MAX_GRANT_FRAMES): GrantTable {
    const words = S_FRAMES + maxFrames + maxFrames * GRANT_ENTRIES_PER_FRAME * A_WORDS;
    const sab = new SharedArrayBuffer(words * 4);
    new Int32Array(sab)[S_MAX_FRAMES] = maxFrames;
    return new GrantTable(domid, mem, sab);
  }

  /** The same table seen from another thread (same guest memory, same shared state). */
  static attach(domid: number, mem: GuestMemory, shared: SharedArrayBuffer): GrantTable {
    return new GrantTable(domid, mem, shared);
  }

  get nrFrames(): number {
    return Atomics.load(this.state, S_NR_FRAMES);
  }
  get nrEntries(): number {
    return this.nrFrames * GRANT_ENTRIES_PER_FRAME;
  }

  /** GNTTABOP_setup_table / XENMAPSPACE_grant_table: the table now occupies these guest frames (gfns). */
  setup(gfns: readonly number[]): GrantStatus {
    if (gfns.length > this.maxFrames) return GNTST_general_error;
    for (const g of gfns) {
      if (!(Number.isInteger(g) && g >= 0 && (g + 1) * PAGE_SIZE <= this.mem.size)) return GNTST_bad_page;
    }
    this.lock();
    try {
      // Growing only, as Xen does: frames already in use stay where they are.
      const have = this.state[S_NR_FRAMES]!;
      for (let i = 0; i < have; i++) if (this.state[S_FRAMES + i] !== gfns[i]) return GNTST_general_error;
      for (let i = have; i < gfns.length; i++) this.state[S_FRAMES + i] = gfns[i]!;
      Atomics.store(this.state, S_NR_FRAMES, Math.max(have, gfns.length));
    } finally {
      this.unlock();
    }
    return GNTST_okay;
  }

  /** Guest-physical address of entry `ref`, or -1 when the ref is beyond the table. */
  entryGpa(ref: number): number {
    if (!(Number.isInteger(ref) && ref >= 0 && ref < this.nrEntries)) return -1;
    const frame = this.state[S_FRAMES + Math.floor(ref / GRANT_ENTRIES_PER_FRAME)]!;
    return frame * PAGE_SIZE + (ref % GRANT_ENTRIES_PER_FRAME) * GRANT_ENTRY_V1_SIZE;
  }

  /** Decode entry `ref` (undefined beyond the table). */
  readEntry(ref: number): GrantEntryV1 | undefined {
    const gpa = this.entryGpa(ref);
    if (gpa < 0) return undefined;
    const domid = this.mem.readU16(gpa + 2);
    const frame = this.mem.readU32(gpa + 4);
    if (isFault(domid) || isFault(frame)) return undefined;
    return { flags: this.loadFlags(gpa), domid, frame };
  }

  loadFlags(entryGpa: number): number {
    if (this.u16) return Atomics.load(this.u16, entryGpa >>> 1);
    const v = this.mem.readU16(entryGpa);
    return isFault(v) ? 0 : v;
  }

  storeFlags(entryGpa: number, flags: number): void {
    if (this.u16) Atomics.store(this.u16, entryGpa >>> 1, flags);
    else this.mem.writeU16(entryGpa, flags);
  }

  /** 16-bit compare-and-swap of an entry's flags (Xen's cmpxchg in _set_status; the guest's in revoke). */
  casFlags(entryGpa: number, expect: number, value: number): number {
    if (this.u16) return Atomics.compareExchange(this.u16, entryGpa >>> 1, expect, value);
    const cur = this.loadFlags(entryGpa);
    if (cur === expect) this.mem.writeU16(entryGpa, value);
    return cur;
  }

  // ---- Xen's side: pinning an entry for a grantee ----

  /*
   * The lock word: 0 free, 1 held, 2 held with a thread waiting (the classic futex mutex). An uncontended
   * lock/unlock is two atomic operations; only a holder that saw a waiter pays for the wake-up.
   */
  private lock(): void {
    if (Atomics.compareExchange(this.state, S_LOCK, 0, 1) === 0) return;
    while (Atomics.exchange(this.state, S_LOCK, 2) !== 0) Atomics.wait(this.state, S_LOCK, 2, 1);
  }
  private unlock(): void {
    if (Atomics.exchange(this.state, S_LOCK, 0) === 2) Atomics.notify(this.state, S_LOCK, 1);
  }

  private activeBase(ref: number): number {
    return S_FRAMES + this.maxFrames + ref * A_WORDS;
  }

  /**
   * Pin entry `ref` for domain `grantee` (map_grant_ref / acquire_grant_for_copy). On the first pin, and on
   * the first writable pin, the entry is checked and GTF_reading (+GTF_writing) is set with a cmpxchg, as
   * _set_status_v1 does; the frame is recorded so later pins use it. Returns the status and the page's GPA.
   */
  pin(ref: number, grantee: number, readonly: boolean): { status: GrantStatus; gpa: number } {
    this.lock();
    try {
      if (!(Number.isInteger(ref) && ref >= 0 && ref < this.nrEntries))
        return { status: GNTST_bad_gntref, gpa: 0 };
      const gpa = this.entryGpa(ref);
      const a = this.activeBase(ref);
      const st = this.state;
      const pinned = st[a + A_READ_PINS]! + st[a + A_WRITE_PINS]! > 0;
      if (!pinned || (!readonly && st[a + A_WRITE_PINS] === 0)) {
        const status = this.setStatus(gpa, grantee, readonly);
        if (status !== GNTST_okay) return { status, gpa: 0 };
        if (!pinned) {
          const frame = this.mem.readU32(gpa + 4);
          if (isFault(frame) || frame >= this.mem.size >>> PAGE_SHIFT) {
            // Undo the in-use flags: the frame is not a page of this domain (Xen: GNTST_bad_page).
            this.clearInUse(gpa, true, !readonly);
            return { status: GNTST_bad_page, gpa: 0 };
          }
          st[a + A_FRAME] = frame;
        }
      } else {
        // Already pinned: Xen checks the mapper against the domid it pinned for (the entry's, unchanged).
        const domid = this.mem.readU16(gpa + 2);
        if (isFault(domid) || domid !== grantee) return { status: GNTST_general_error, gpa: 0 };
      }
      if (readonly) st[a + A_READ_PINS]!++;
      else st[a + A_WRITE_PINS]!++;
      return { status: GNTST_okay, gpa: st[a + A_FRAME]! * PAGE_SIZE };
    } finally {
      this.unlock();
    }
  }

  /** Drop one pin; clear GTF_writing when no writable pin is left and GTF_reading when no pin is left. */
  unpin(ref: number, readonly: boolean): void {
    this.lock();
    try {
      const a = this.activeBase(ref);
      const st = this.state;
      if (readonly) st[a + A_READ_PINS] = Math.max(0, st[a + A_READ_PINS]! - 1);
      else st[a + A_WRITE_PINS] = Math.max(0, st[a + A_WRITE_PINS]! - 1);
      const noWriters = st[a + A_WRITE_PINS] === 0;
      const noPins = noWriters && st[a + A_READ_PINS] === 0;
      this.clearInUse(this.entryGpa(ref), noPins, noWriters);
    } finally {
      this.unlock();
    }
  }

  /** Pins currently held on `ref` (tests, persistent-grant bookkeeping). */
  pins(ref: number): { read: number; write: number } {
    const a = this.activeBase(ref);
    return {
      read: Atomics.load(this.state, a + A_READ_PINS),
      write: Atomics.load(this.state, a + A_WRITE_PINS),
    };
  }

  private setStatus(gpa: number, grantee: number, readonly: boolean): GrantStatus {
    const domid = this.mem.readU16(gpa + 2);
    if (isFault(domid)) return GNTST_general_error;
    for (;;) {
      const flags = this.loadFlags(gpa);
      // "Bad flags or dom": the entry must permit access, to this very domain.
      if ((flags & GTF_type_mask) !== GTF_permit_access || domid !== grantee) return GNTST_general_error;
      // "Attempt to write-pin a r/o grant entry".
      if (!readonly && flags & GTF_readonly) return GNTST_general_error;
      const next = flags | GTF_reading | (readonly ? 0 : GTF_writing);
      if (this.casFlags(gpa, flags, next) === flags) return GNTST_okay;
      // The guest changed the flags under us: re-check, as Xen's cmpxchg loop does.
    }
  }

  private clearInUse(gpa: number, reading: boolean, writing: boolean): void {
    const bits = (reading ? GTF_reading : 0) | (writing ? GTF_writing : 0);
    if (!bits) return;
    for (;;) {
      const f = this.loadFlags(gpa);
      if (this.casFlags(gpa, f, f & ~bits) === f) return;
    }
  }
}

/**
 * The guest kernel's grant library (Linux drivers/xen/grant-table.c, Mini-OS gnttab.c): a free list of refs
 * and the ordering rules for writing entries. It only writes its own table in its own memory; no hypercall.
 */
export class GuestGrantTable {
  private readonly free: number[] = [];

  constructor(readonly table: GrantTable) {
    for (let r = table.nrEntries - 1; r >= GNTTAB_NR_RESERVED_ENTRIES; r--) this.free.push(r);
  }

  get freeCount(): number {
    return this.free.length;
  }

  /** gnttab_grant_foreign_access: grant domain `domid` access to frame `gfn`. Returns the ref. */
  grantAccess(domid: number, gfn: number, readonly: boolean): number {
    const ref = this.free.pop();
    if (ref === undefined) throw new GrantTableFullError(this.table.domid);
    this.grantAccessRef(ref, domid, gfn, readonly);
    return ref;
  }

  /** gnttab_grant_foreign_access_ref: (re)fill a ref the caller owns. Domid and frame first, flags last. */
  grantAccessRef(ref: number, domid: number, gfn: number, readonly: boolean): void {
    const gpa = this.table.entryGpa(ref);
    if (gpa < 0) throw new RangeError(`grant ref ${ref} beyond the table`);
    const mem = this.table.mem;
    mem.writeU16(gpa + 2, domid);
    mem.writeU32(gpa + 4, gfn);
    // wmb(): the entry must be complete before the flags make it valid (Atomics.store is sequentially consistent).
    this.table.storeFlags(gpa, GTF_permit_access | (readonly ? GTF_readonly : 0));
  }

  /**
   * gnttab_try_end_foreign_access: revoke `ref` unless the grantee still has it mapped (GTF_reading/writing).
   * Returns true when revoked (the ref goes back to the free list), false when it is still in use.
   */
  tryEndAccess(ref: number): boolean {
    if (!this.endAccessRef(ref)) return false;
    this.free.push(ref);
    return true;
  }

  /** gnttab_end_foreign_access_ref: clear the entry (flags CAS to 0) unless in use; keeps ownership of the ref. */
  endAccessRef(ref: number): boolean {
    const gpa = this.table.entryGpa(ref);
    if (gpa < 0) return false;
    for (;;) {
      const f = this.table.loadFlags(gpa);
      if (f & (GTF_reading | GTF_writing)) return false;
      if (this.table.casFlags(gpa, f, 0) === f) return true;
    }
  }

  /** gnttab_alloc_grant_references: take refs the caller fills itself with grantAccessRef. */
  claim(): number {
    const ref = this.free.pop();
    if (ref === undefined) throw new GrantTableFullError(this.table.domid);
    return ref;
  }

  /** Return a ref whose entry the caller already cleared. */
  release(ref: number): void {
    this.free.push(ref);
  }
}

export class GrantTableFullError extends Error {
  constructor(readonly domid: number) {
    super(`grant table of domain ${domid} is full`);
    this.name = "GrantTableFullError";
  }
}

/** What the grant operations need of the hypervisor: counters and the hypercall hook. */
export interface HypercallSink {
  readonly acct: { readonly counts: Counts };
  hypercall(dom: number, op: string): void;
  /** Event trace (event-channel sends are traced when set). */
  readonly tracer?: Tracer | null;
}

export interface GrantMapOp {
  /** The granting domain. */
  dom: number;
  ref: number;
  /** GNTMAP_* flags: host_map and/or device_map required; readonly for read-only maps. */
  flags: number;
}

export interface GrantMapResult {
  status: GrantStatus;
  /** Maptrack handle for unmap (-1 on failure). */
  handle: number;
  /** The mapped page's guest-physical address in the granting domain. */
  gpa: number;
  /** The mapped page (4096 bytes of the granter's memory); null on failure. */
  page: Uint8Array | null;
}

export interface GrantCopySide {
  /** With `ref`: a grant of domain `dom`; without: the caller's own buffer `buf`. */
  dom?: number;
  ref?: number;
  offset: number;
  buf?: Uint8Array;
}

export interface GrantCopyOp {
  source: GrantCopySide;
  dest: GrantCopySide;
  len: number;
  /** GNTCOPY_source_gref / GNTCOPY_dest_gref. */
  flags: number;
}

/** A maptrack entry; `table` null while the handle is free (the record is kept for the handle's next map). */
type Maptrack = { dom: number; ref: number; readonly: boolean; table: GrantTable | null };

function mapFailed(status: GrantStatus): GrantMapResult {
  return { status, handle: -1, gpa: 0, page: null };
}

/**
 * The grantee's view of grant tables (GNTTABOP_map_grant_ref, unmap_grant_ref, copy), for one mapping domain.
 * Each batch is one hypercall; every grant mapped or copied is counted (`grantMap`, `grantCopy`).
 */
export class GrantMapper {
  private readonly maptrack: Maptrack[] = [];
  private readonly freeHandles: number[] = [];

  constructor(
    readonly domid: number,
    private readonly tables: (dom: number) => GrantTable | undefined,
    private readonly hv: HypercallSink,
  ) {}

  /** Mappings currently held. */
  get mapped(): number {
    return this.maptrack.length - this.freeHandles.length;
  }

  map(op: GrantMapOp): GrantMapResult {
    this.hv.hypercall(this.domid, "gnttab_map_grant_ref");
    return this.mapOne(op);
  }

  /** Map several grants with one hypercall (gnttab_map_refs); statuses are per op. */
  mapBatch(ops: readonly GrantMapOp[]): GrantMapResult[] {
    if (ops.length) this.hv.hypercall(this.domid, "gnttab_map_grant_ref");
    return ops.map((op) => this.mapOne(op));
  }

  private mapOne(op: GrantMapOp): GrantMapResult {
    const fail = mapFailed;
    if ((op.flags & (GNTMAP_host_map | GNTMAP_device_map)) === 0) return fail(GNTST_bad_gntref);
    const table = this.tables(op.dom);
    if (!table || op.dom === this.domid) return fail(GNTST_bad_domain);
    const readonly = (op.flags & GNTMAP_readonly) !== 0;
    const { status, gpa } = table.pin(op.ref, this.domid, readonly);
    if (status !== GNTST_okay) return fail(status);
    this.hv.acct.counts.grantMap++;
    const view = table.mem.view(gpa, PAGE_SIZE);
    if (isFault(view)) {
      table.unpin(op.ref, readonly);
      return fail(GNTST_bad_page);
    }
    let handle = this.freeHandles.pop();
    if (handle === undefined) {
      handle = this.maptrack.length;
      this.maptrack.push({ dom: op.dom, ref: op.ref, readonly, table });
    } else {
      const m = this.maptrack[handle]!;
      m.dom = op.dom;
      m.ref = op.ref;
      m.readonly = readonly;
      m.table = table;
    }
    return { status: GNTST_okay, handle, gpa, page: view };
  }

  unmap(handle: number): GrantStatus {
    this.hv.hypercall(this.domid, "gnttab_unmap_grant_ref");
    return this.unmapOne(handle);
  }

  unmapBatch(handles: readonly number[]): GrantStatus[] {
    if (handles.length) this.hv.hypercall(this.domid, "gnttab_unmap_grant_ref");
    const out: GrantStatus[] = [];
    for (let i = 0; i < handles.length; i++) out.push(this.unmapOne(handles[i]!));
    return out;
  }

  private unmapOne(handle: number): GrantStatus {
    const m = Number.isInteger(handle) && handle >= 0 ? this.maptrack[handle] : undefined;
    const table = m?.table;
    if (!m || !table) return GNTST_bad_handle;
    m.table = null;
    this.freeHandles.push(handle);
    table.unpin(m.ref, m.readonly);
    return GNTST_okay;
  }

  /**
   * GNTTABOP_copy for a batch (one hypercall). A side with GNTCOPY_*_gref names a grant of another domain;
   * the other side is the caller's own buffer. Offsets and length must stay inside one page.
   */
  copy(ops: readonly GrantCopyOp[]): GrantStatus[] {
    if (ops.length) this.hv.hypercall(this.domid, "gnttab_copy");
    return ops.map((op) => this.copyOne(op));
  }

  private copyOne(op: GrantCopyOp): GrantStatus {
    const srcGref = (op.flags & GNTCOPY_source_gref) !== 0;
    const dstGref = (op.flags & GNTCOPY_dest_gref) !== 0;
    if (!(op.len >= 0 && op.len <= PAGE_SIZE)) return GNTST_bad_copy_arg;
    for (const s of [op.source, op.dest]) {
      if (!(s.offset >= 0 && s.offset + op.len <= PAGE_SIZE)) return GNTST_bad_copy_arg;
    }
    const pinned: { table: GrantTable; ref: number; readonly: boolean }[] = [];
    try {
      type Resolved = { view: Uint8Array; mem: GuestMemory | null; gpa: number };
      const resolve = (side: GrantCopySide, isGref: boolean, write: boolean): Resolved | GrantStatus => {
        if (!isGref) {
          if (!side.buf || side.buf.length < side.offset + op.len) return GNTST_bad_copy_arg;
          return { view: side.buf.subarray(side.offset, side.offset + op.len), mem: null, gpa: 0 };
        }
        const table = side.dom === undefined ? undefined : this.tables(side.dom);
        if (!table || side.dom === this.domid) return GNTST_bad_domain;
        const { status, gpa } = table.pin(side.ref ?? -1, this.domid, !write);
        if (status !== GNTST_okay) return status;
        pinned.push({ table, ref: side.ref!, readonly: !write });
        const v = table.mem.view(gpa + side.offset, op.len);
        return isFault(v) ? GNTST_bad_page : { view: v, mem: table.mem, gpa: gpa + side.offset };
      };
      const src = resolve(op.source, srcGref, false);
      if (typeof src === "number") return src;
      const dst = resolve(op.dest, dstGref, true);
      if (typeof dst === "number") return dst;
      dst.view.set(src.view);
      dst.mem?.written(dst.gpa, op.len);
      this.hv.acct.counts.grantCopy++;
      return GNTST_okay;
    } finally {
      for (const p of pinned) p.table.unpin(p.ref, p.readonly);
    }
  }
}
