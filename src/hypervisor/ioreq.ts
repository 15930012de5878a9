/**
 * Xen's HVM ioreq ABI (`xen/include/public/hvm/ioreq.h`, Xen 4.17): the 32-byte packet a vCPU exit becomes,
 * the shared ioreq page with one slot per vCPU, and the buffered ioreq page for fire-and-forget writes.
 * Offsets and bit positions are the ones the real header produces on both x86_64 and x86_32 (the layout is
 * identical; only alignof differs).
 */

// ioreq_t field offsets (hvm/ioreq.h, struct ioreq)
export const IOREQ_SIZE = 32;
export const IOREQ_OFF_ADDR = 0; // u64: port, GPA, or SBDF<<32|reg
export const IOREQ_OFF_DATA = 8; // u64: value, or GPA of the buffer when data_is_ptr
export const IOREQ_OFF_COUNT = 16; // u32: repetitions
export const IOREQ_OFF_SIZE = 20; // u32: bytes per item
export const IOREQ_OFF_VP_EPORT = 24; // u32: this vCPU's event channel
export const IOREQ_OFF_FLAGS = 30; // u8 bit-field: state:4, data_is_ptr:1, dir:1, df:1, pad:1
export const IOREQ_OFF_TYPE = 31; // u8

// Bit-field byte 30 (hvm/ioreq.h: `uint8_t state:4; uint8_t data_is_ptr:1; uint8_t dir:1; uint8_t df:1;`)
export const IOREQ_STATE_MASK = 0x0f;
export const IOREQ_DATA_IS_PTR = 1 << 4;
export const IOREQ_DIR_READ_BIT = 1 << 5;
export const IOREQ_DF = 1 << 6;

// The exit path below (publishPio, take, step, data32, setData32) writes these layout constants as literals,
// each with the name it stands for: the bundle turns module constants into variables, which optimized code
// loads and type-checks at every use, tens of millions of times a second. test/hypervisor/ioreq.test.ts checks
// the bytes they produce against Xen's header.

// ioreq states (hvm/ioreq.h STATE_*)
export const STATE_IOREQ_NONE = 0;
export const STATE_IOREQ_READY = 1;
export const STATE_IOREQ_INPROCESS = 2;
export const STATE_IORESP_READY = 3;

// dir (hvm/ioreq.h IOREQ_READ / IOREQ_WRITE)
export const IOREQ_READ = 1;
export const IOREQ_WRITE = 0;

// type (hvm/ioreq.h IOREQ_TYPE_*)
export const IOREQ_TYPE_PIO = 0;
export const IOREQ_TYPE_COPY = 1;
export const IOREQ_TYPE_PCI_CONFIG = 2;
export const IOREQ_TYPE_TIMEOFFSET = 7;
export const IOREQ_TYPE_INVALIDATE = 8;

// shared_iopage_t: one ioreq_t per vCPU, indexed by vcpu_id
export const IOREQ_PAGE_SIZE = 4096;
export const MAX_VCPUS_PER_IOREQ_PAGE = IOREQ_PAGE_SIZE / IOREQ_SIZE;

// buffered_iopage_t (hvm/ioreq.h): read_pointer u32 @0, write_pointer u32 @4, buf_ioreq_t[511] @8
export const IOREQ_BUFFER_SLOT_NUM = 511;
export const BUF_IOREQ_SIZE = 8;
export const BUFIOREQ_OFF_READ_POINTER = 0;
export const BUFIOREQ_OFF_WRITE_POINTER = 4;
export const BUFIOREQ_OFF_SLOTS = 8;

/** A decoded ioreq_t. Numbers are used for addr/data; guest addresses here stay below 2^53. */
export interface Ioreq {
  addr: number;
  data: number;
  count: number;
  size: number;
  vpEport: number;
  state: number;
  dataIsPtr: boolean;
  dir: 0 | 1;
  df: boolean;
  type: number;
}

export function stateName(state: number): string {
  return ["NONE", "READY", "INPROCESS", "IORESP_READY"][state] ?? `UNKNOWN(${state})`;
}

/** Raised when someone steps a slot's state machine backwards or out of order; Xen crashes the domain then. */
export class IoreqStateError extends Error {
  constructor(
    readonly vcpu: number,
    readonly from: number,
    readonly to: number,
  ) {
    super(`ioreq slot of vCPU ${vcpu}: transition ${stateName(from)} -> ${stateName(to)} is not allowed`);
    this.name = "IoreqStateError";
  }
}

/** Legal forward steps of a synchronous ioreq slot (xen-protocol §9.3). */
function legal(from: number, to: number): boolean {
  return (
    (from === STATE_IOREQ_NONE && to === STATE_IOREQ_READY) ||
    (from === STATE_IOREQ_READY && to === STATE_IOREQ_INPROCESS) ||
    (from === STATE_IOREQ_INPROCESS && to === STATE_IORESP_READY) ||
    (from === STATE_IORESP_READY && to === STATE_IOREQ_NONE)
  );
}

/**
 * The shared ioreq page: bytes on a SharedArrayBuffer, one 32-byte slot per vCPU. Both the hypervisor side and
 * the device-model side work only through these bytes, so the device model could run on another thread.
 */
export class SharedIoreqPage {
  /**
   * Use Atomics for the state byte (a device model on another thread). In-process, plain typed-array accesses
   * are already sequentially ordered and several times cheaper, which matters at tens of millions of exits/s.
   */
  atomic = false; // tested as `=== true` on the exit path: a bare boolean test is a generic truthiness check
  readonly buffer: SharedArrayBuffer;
  readonly u8: Uint8Array;
  /** 32-bit view for the hot path; the ABI is little-endian and so is every host xenide runs on (checked below). */
  readonly u32: Uint32Array;
  readonly dv: DataView;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(IOREQ_PAGE_SIZE)) {
    this.buffer = buffer;
    this.u8 = new Uint8Array(buffer, 0, IOREQ_PAGE_SIZE);
    this.u32 = new Uint32Array(buffer, 0, IOREQ_PAGE_SIZE / 4);
    this.dv = new DataView(buffer, 0, IOREQ_PAGE_SIZE);
  }

  slot(vcpu: number): number {
    if (!(vcpu >= 0 && vcpu < MAX_VCPUS_PER_IOREQ_PAGE))
      throw new RangeError(`no ioreq slot for vCPU ${vcpu}`);
    return vcpu * IOREQ_SIZE;
  }

  state(vcpu: number): number {
    const off = this.slot(vcpu) + IOREQ_OFF_FLAGS;
    return (this.atomic ? Atomics.load(this.u8, off) : this.u8[off]!) & IOREQ_STATE_MASK;
  }

  /** Step the slot's state, refusing anything but the next state in the cycle. */
  setState(vcpu: number, to: number): void {
    const from = this.state(vcpu);
    if (!legal(from, to)) throw new IoreqStateError(vcpu, from, to);
    this.storeState(this.slot(vcpu) + IOREQ_OFF_FLAGS, to);
  }

  /**
   * The one forward step `from` -> `from + 1` (mod 4) on the hot path: a single compare instead of the full
   * transition table, still refusing any slot that is not in `from`.
   */
  step(vcpu: number, from: number): void {
    if (!(vcpu >= 0 && vcpu < 128 /* MAX_VCPUS_PER_IOREQ_PAGE */))
      throw new RangeError(`no ioreq slot for vCPU ${vcpu}`);
    const u8 = this.u8;
    const off = (vcpu << 5) + 30; // vcpu * IOREQ_SIZE + IOREQ_OFF_FLAGS
    const atomic = this.atomic === true;
    const byte = atomic ? Atomics.load(u8, off) : u8[off]!;
    if ((byte & 0x0f) /* IOREQ_STATE_MASK */ !== from)
      throw new IoreqStateError(vcpu, byte & IOREQ_STATE_MASK, (from + 1) & 3);
    // Atomics.store orders the preceding field writes before the state change (Xen's wmb before a state change).
    const v = (byte & 0xf0) | ((from + 1) & 3);
    if (atomic) Atomics.store(u8, off, v);
    else u8[off] = v;
  }

  private storeState(off: number, to: number): void {
    const v = (this.u8[off]! & ~IOREQ_STATE_MASK) | to;
    // Atomics.store orders the preceding field writes before the state change (Xen's wmb before state=READY).
    if (this.atomic) Atomics.store(this.u8, off, v);
    else this.u8[off] = v;
  }

  vpEport(vcpu: number): number {
    return this.dv.getUint32(this.slot(vcpu) + IOREQ_OFF_VP_EPORT, true);
  }

  setVpEport(vcpu: number, port: number): void {
    this.dv.setUint32(this.slot(vcpu) + IOREQ_OFF_VP_EPORT, port >>> 0, true);
  }

  /**
   * Publish a request as Xen's hvm_send_ioreq does: fields written while the state is NONE, then state =
   * READY. vp_eport is kept (Xen fills it when the server is enabled). Positional arguments and 32-bit halves
   * keep this allocation-free: it runs once per exit.
   */
  publish(
    vcpu: number,
    type: number,
    addr: number,
    data: number,
    count: number,
    size: number,
    dir: number,
    dataIsPtr: boolean,
    df: boolean,
  ): void {
    const o = this.slot(vcpu);
    const flagsOff = o + IOREQ_OFF_FLAGS;
    const from = (this.atomic ? Atomics.load(this.u8, flagsOff) : this.u8[flagsOff]!) & IOREQ_STATE_MASK;
    if (from !== STATE_IOREQ_NONE) throw new IoreqStateError(vcpu, from, STATE_IOREQ_READY);
    const u32 = this.u32;
    const w = o >>> 2;
    u32[w] = addr;
    u32[w + 1] = addr > 0xffffffff ? Math.floor(addr / 0x1_0000_0000) : 0;
    u32[w + 2] = data;
    u32[w + 3] = data > 0xffffffff ? Math.floor(data / 0x1_0000_0000) : 0;
    u32[w + 4] = count;
    u32[w + 5] = size;
    this.u8[o + 28] = 0; // _pad0
    this.u8[o + 29] = 0;
    const flags =
      (dataIsPtr ? IOREQ_DATA_IS_PTR : 0) |
      (dir === IOREQ_READ ? IOREQ_DIR_READ_BIT : 0) |
      (df ? IOREQ_DF : 0);
    this.u8[o + IOREQ_OFF_TYPE] = type;
    // The state was checked NONE above; READY goes in last, with the flags. Atomics.store orders the field writes
    // before it for a device model on another thread (Xen's wmb before state=READY).
    if (this.atomic) {
      this.u8[flagsOff] = flags;
      Atomics.store(this.u8, flagsOff, flags | STATE_IOREQ_READY);
    } else this.u8[flagsOff] = flags | STATE_IOREQ_READY;
  }

  /**
   * `publish` for the commonest exit, an IN or OUT of one item (type PIO, count 1, no pointer, df clear): the
   * same 32 bytes, written as 32-bit words of small integers. `port` is 16 bits and `data` 32 bits, so both high
   * words are 0. Bytes 28-31 (_pad0, the flags byte with state READY, type) go in as one word, last: the state
   * and the fields it guards become visible together.
   */
  publishPio(vcpu: number, port: number, size: number, dir: number, data: number): void {
    if (!(vcpu >= 0 && vcpu < 128 /* MAX_VCPUS_PER_IOREQ_PAGE */))
      throw new RangeError(`no ioreq slot for vCPU ${vcpu}`);
    const u32 = this.u32;
    const w = vcpu << 3; // vcpu * IOREQ_SIZE / 4
    // Word 7 is bytes 28-31: _pad0 (2 bytes), the flags byte (state in its low 4 bits) at bits 16-23, type.
    const from = (u32[w + 7]! >>> 16) & 0x0f; // IOREQ_STATE_MASK
    if (from !== 0 /* STATE_IOREQ_NONE */) throw new IoreqStateError(vcpu, from, STATE_IOREQ_READY);
    u32[w] = port; // addr
    u32[w + 1] = 0;
    u32[w + 2] = data; // data
    u32[w + 3] = 0;
    u32[w + 4] = 1; // count
    u32[w + 5] = size; // size; vp_eport (word 6) stays as Xen set it
    // Flags: STATE_IOREQ_READY (1), IOREQ_DIR_READ_BIT (0x20) for IN; type IOREQ_TYPE_PIO (0).
    const tail = dir === 1 /* IOREQ_READ */ ? 0x21 << 16 : 0x01 << 16;
    if (this.atomic === true) Atomics.store(u32, w + 7, tail);
    else u32[w + 7] = tail;
  }

  /**
   * The device model takes a READY slot (READY -> INPROCESS, refusing any other state) and gets bytes 28-31 of
   * it as one little-endian word: flags byte (with the state it found) at bits 16-23, type at bits 24-31.
   */
  take(vcpu: number): number {
    if (!(vcpu >= 0 && vcpu < 128 /* MAX_VCPUS_PER_IOREQ_PAGE */))
      throw new RangeError(`no ioreq slot for vCPU ${vcpu}`);
    const w = (vcpu << 3) + 7; // bytes 28-31 of the slot
    const atomic = this.atomic === true;
    const tail = atomic ? Atomics.load(this.u32, w) : this.u32[w]!;
    const state = (tail >>> 16) & 0x0f; // IOREQ_STATE_MASK of the flags byte
    if (state !== 1 /* STATE_IOREQ_READY */) throw new IoreqStateError(vcpu, state, STATE_IOREQ_INPROCESS);
    const off = (vcpu << 5) + 30; // IOREQ_OFF_FLAGS
    const v = ((tail >>> 16) & 0xf0) | 2; // STATE_IOREQ_INPROCESS
    if (atomic) Atomics.store(this.u8, off, v);
    else this.u8[off] = v;
    return tail;
  }

  /** Data of a request whose value fits 32 bits (a port access): the low word of the data field. */
  data32(vcpu: number): number {
    return this.u32[(vcpu << 3) + 2]!; // IOREQ_OFF_DATA / 4
  }

  /** An answer of at most 32 bits (a port read): the data field as a 64-bit value with a zero high word. */
  setData32(vcpu: number, data: number): void {
    const w = (vcpu << 3) + 2; // IOREQ_OFF_DATA / 4
    const u32 = this.u32;
    u32[w] = data;
    u32[w + 1] = 0;
  }

  /** Decode a slot's bytes. */
  read(vcpu: number): Ioreq {
    return decodeIoreq(this.u8, this.slot(vcpu));
  }

  data(vcpu: number): number {
    const w = (vcpu * IOREQ_SIZE + IOREQ_OFF_DATA) >>> 2;
    return this.u32[w]! + this.u32[w + 1]! * 0x1_0000_0000;
  }

  setData(vcpu: number, data: number): void {
    const w = (vcpu * IOREQ_SIZE + IOREQ_OFF_DATA) >>> 2;
    this.u32[w] = data;
    this.u32[w + 1] = data > 0xffffffff ? Math.floor(data / 0x1_0000_0000) : 0;
  }

  /** The 32 bytes of a slot, copied (for tests and traces). */
  bytes(vcpu: number): Uint8Array {
    const o = this.slot(vcpu);
    return this.u8.slice(o, o + IOREQ_SIZE);
  }
}

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error("xenide needs a little-endian host: Xen's shared pages are little-endian");
}

function getU64(dv: DataView, off: number): number {
  return dv.getUint32(off, true) + dv.getUint32(off + 4, true) * 0x1_0000_0000;
}

export function decodeIoreq(u8: Uint8Array, offset = 0): Ioreq {
  const dv = new DataView(u8.buffer, u8.byteOffset + offset, IOREQ_SIZE);
  const flags = dv.getUint8(IOREQ_OFF_FLAGS);
  return {
    addr: getU64(dv, IOREQ_OFF_ADDR),
    data: getU64(dv, IOREQ_OFF_DATA),
    count: dv.getUint32(IOREQ_OFF_COUNT, true),
    size: dv.getUint32(IOREQ_OFF_SIZE, true),
    vpEport: dv.getUint32(IOREQ_OFF_VP_EPORT, true),
    state: flags & IOREQ_STATE_MASK,
    dataIsPtr: (flags & IOREQ_DATA_IS_PTR) !== 0,
    dir: flags & IOREQ_DIR_READ_BIT ? 1 : 0,
    df: (flags & IOREQ_DF) !== 0,
    type: dv.getUint8(IOREQ_OFF_TYPE),
  };
}

export function encodeIoreq(req: Ioreq): Uint8Array {
  const out = new Uint8Array(IOREQ_SIZE);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(IOREQ_OFF_ADDR, BigInt.asUintN(64, BigInt(req.addr)), true);
  dv.setBigUint64(IOREQ_OFF_DATA, BigInt.asUintN(64, BigInt(req.data)), true);
  dv.setUint32(IOREQ_OFF_COUNT, req.count >>> 0, true);
  dv.setUint32(IOREQ_OFF_SIZE, req.size >>> 0, true);
  dv.setUint32(IOREQ_OFF_VP_EPORT, req.vpEport >>> 0, true);
  dv.setUint8(
    IOREQ_OFF_FLAGS,
    (req.state & IOREQ_STATE_MASK) |
      (req.dataIsPtr ? IOREQ_DATA_IS_PTR : 0) |
      (req.dir ? IOREQ_DIR_READ_BIT : 0) |
      (req.df ? IOREQ_DF : 0),
  );
  dv.setUint8(IOREQ_OFF_TYPE, req.type);
  return out;
}

/** One decoded buf_ioreq_t: always a write. */
export interface BufIoreq {
  type: number;
  /** Bytes per write: 1, 2, 4 or 8 (8 takes two slots). */
  size: 1 | 2 | 4 | 8;
  /** 20-bit address (port or GPA below 1 MiB). */
  addr: number;
  /** Value; for size 8 a bigint-free pair is kept as lo/hi. */
  data: number;
  dataHi: number;
}

const SIZE_CODE: Record<number, number> = { 1: 0, 2: 1, 4: 2, 8: 3 };

/**
 * The buffered ioreq page (hvm/ioreq.h buffered_iopage_t). Xen is the producer (write_pointer), the device
 * model the consumer (read_pointer); pointers run freely and slots are indexed modulo 511.
 */
export class BufferedIoreqPage {
  readonly buffer: SharedArrayBuffer;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  private readonly ptrs: Uint32Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(IOREQ_PAGE_SIZE)) {
    this.buffer = buffer;
    this.u8 = new Uint8Array(buffer, 0, IOREQ_PAGE_SIZE);
    this.dv = new DataView(buffer, 0, IOREQ_PAGE_SIZE);
    this.ptrs = new Uint32Array(buffer, 0, 2);
  }

  get readPointer(): number {
    return Atomics.load(this.ptrs, 0);
  }
  get writePointer(): number {
    return Atomics.load(this.ptrs, 1);
  }
  /** Slots in use. */
  get pending(): number {
    return (this.writePointer - this.readPointer) >>> 0;
  }

  /** True when there is something to drain: a plain read first, so the common empty case costs two loads. */
  hasPending(): boolean {
    return this.ptrs[0] !== this.ptrs[1];
  }

  /**
   * Xen's hvm_send_buffered_ioreq: only writes of 1/2/4/8 bytes to addresses <= 0xfffff. Returns false when
   * the request cannot be buffered or the page is full; the caller then takes the synchronous path.
   */
  push(type: number, addr: number, size: number, data: number, dataHi = 0): boolean {
    const code = SIZE_CODE[size];
    if (code === undefined || addr < 0 || addr > 0xfffff) return false;
    const qw = size === 8 ? 1 : 0;
    const wp = this.writePointer;
    if ((wp - this.readPointer) >>> 0 >= IOREQ_BUFFER_SLOT_NUM - qw) return false;
    this.writeSlot(wp, type, code, addr, data);
    if (qw) this.writeSlot(wp + 1, type, code, addr, dataHi);
    Atomics.store(this.ptrs, 1, (wp + 1 + qw) >>> 0);
    return true;
  }

  private writeSlot(ptr: number, type: number, code: number, addr: number, data: number): void {
    const o = BUFIOREQ_OFF_SLOTS + (ptr % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE;
    // First u32, little endian: type:8, pad:1, dir:1, size:2, addr:20. dir is always IOREQ_WRITE (0).
    this.dv.setUint32(o, (type & 0xff) | (code << 10) | ((addr & 0xfffff) << 12), true);
    this.dv.setUint32(o + 4, data >>> 0, true);
  }

  /** Consume one buffered write (two slots for 8 bytes), or undefined when empty. */
  pop(): BufIoreq | undefined {
    const rp = this.readPointer;
    if (rp === this.writePointer) return undefined;
    const o = BUFIOREQ_OFF_SLOTS + (rp % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE;
    const w = this.dv.getUint32(o, true);
    const size = (1 << ((w >>> 10) & 3)) as 1 | 2 | 4 | 8;
    const data = this.dv.getUint32(o + 4, true);
    let dataHi = 0;
    let step = 1;
    if (size === 8) {
      const o2 = BUFIOREQ_OFF_SLOTS + ((rp + 1) % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE;
      dataHi = this.dv.getUint32(o2 + 4, true);
      step = 2;
    }
    Atomics.store(this.ptrs, 0, (rp + step) >>> 0);
    return { type: w & 0xff, size, addr: w >>> 12, data, dataHi };
  }

  /** The 8 bytes of the slot that pointer `ptr` designates (for tests). */
  slotBytes(ptr: number): Uint8Array {
    const o = BUFIOREQ_OFF_SLOTS + (ptr % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE;
    return this.u8.slice(o, o + BUF_IOREQ_SIZE);
  }
}
