/**
 * Guest-physical memory.
 *
 * Modelled on rust-vmm's `vm-memory`: a small, access-only interface. Devices never hold a pointer into the
 * guest; they ask for bytes at a guest-physical address (GPA), and an address outside RAM comes back as a
 * `MemoryFault` value that the caller must handle (a DMA engine turns it into a bus error, a ring backend into
 * an error status). Nothing here throws for a bad guest address.
 */

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT; // x86 4 KiB page, the unit of grants and of Xen's string-I/O clamping

/** A guest-physical access that does not lie wholly inside RAM. */
export class MemoryFault {
  readonly kind = "memory-fault" as const;
  constructor(
    readonly gpa: number,
    readonly length: number,
    readonly ramSize: number,
  ) {}
  get message(): string {
    return `guest-physical access [0x${this.gpa.toString(16)}, +${this.length}) outside RAM of ${this.ramSize} bytes`;
  }
}

export function isFault(x: unknown): x is MemoryFault {
  return x instanceof MemoryFault;
}

/**
 * What a device may do to guest memory. Implemented by `GuestRam` (our own SharedArrayBuffer RAM) and by
 * hosts that own the guest's RAM themselves (for example an x86 emulator whose writes must go through its own
 * API to keep its code cache coherent).
 */
export interface GuestMemory {
  /** RAM size in bytes (a multiple of PAGE_SIZE). */
  readonly size: number;
  /** Copy guest bytes at `gpa` into `dst`. */
  read(gpa: number, dst: Uint8Array): MemoryFault | undefined;
  /** Copy `src` into guest memory at `gpa`. */
  write(gpa: number, src: Uint8Array): MemoryFault | undefined;
  /**
   * A zero-copy view of guest bytes, for I/O straight into or out of guest RAM. Whoever writes through the
   * view must call `written(gpa, length)` afterwards.
   */
  view(gpa: number, length: number): Uint8Array | MemoryFault;
  /** Tell the memory that bytes obtained with `view` were modified (a no-op for plain RAM). */
  written(gpa: number, length: number): void;
  readU8(gpa: number): number | MemoryFault;
  readU16(gpa: number): number | MemoryFault;
  readU32(gpa: number): number | MemoryFault;
  /** 64-bit little-endian load as a bigint (grant frames, PRD and blkif sector numbers use 64 bits). */
  readU64(gpa: number): bigint | MemoryFault;
  writeU8(gpa: number, value: number): MemoryFault | undefined;
  writeU16(gpa: number, value: number): MemoryFault | undefined;
  writeU32(gpa: number, value: number): MemoryFault | undefined;
  writeU64(gpa: number, value: bigint): MemoryFault | undefined;
}

export interface GuestRamOptions {
  /** Use this buffer as RAM (for example a shared `WebAssembly.Memory`'s buffer) instead of allocating one. */
  buffer?: SharedArrayBuffer | ArrayBuffer;
}

/**
 * Page-aligned memory.
 *
 * JS cannot see addresses. A large SharedArrayBuffer comes from malloc and its first byte is typically 16 bytes
 * past a page boundary (the allocator's chunk header); a `readSync` into memory that is not 64-byte aligned
 * costs the kernel's copy several times more on x86 (measured here: 4 KiB 5.6 vs 3.1 us, 64 KiB 44.6 vs 8.5
 * us), and O_DIRECT refuses it. V8 allocates the backing store of a `WebAssembly.Memory` through its page
 * allocator instead, so its first byte is always page-aligned. Guest RAM is allocated that way by default.
 *
 * Which buffers are page-aligned is recorded in one registry per process, found under a well-known symbol, so
 * that the storage layer (which must not import this one) and a second copy of the library loaded beside the
 * first (the bundle and the sources) agree on it.
 */
const ALIGNED_REGISTRY = Symbol.for("xenide.page-aligned-buffers");

/** The process's registry of page-aligned buffers (shared with `src/storage/aligned.ts` through the symbol). */
function alignedRegistry(): WeakSet<ArrayBufferLike> {
  const g = globalThis as { [ALIGNED_REGISTRY]?: WeakSet<ArrayBufferLike> };
  return (g[ALIGNED_REGISTRY] ??= new WeakSet<ArrayBufferLike>());
}

/** WebAssembly page: the unit a `WebAssembly.Memory` is allocated in. */
const WASM_PAGE = 65536;

/**
 * A zeroed buffer of at least `bytes` bytes (rounded up to 64 KiB) whose first byte is page-aligned, or null
 * when the engine refuses a `WebAssembly.Memory` of that size (the caller falls back to a plain buffer).
 */
export function allocPageAligned(bytes: number, shared = true): SharedArrayBuffer | ArrayBuffer | null {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  try {
    const buffer = new WebAssembly.Memory({ initial: pages, maximum: pages, shared }).buffer;
    alignedRegistry().add(buffer);
    return buffer;
  } catch {
    return null;
  }
}

/** True when `buffer` is known to start on a page boundary (made by `allocPageAligned` or `allocAligned`). */
export function isPageAligned(buffer: ArrayBufferLike): boolean {
  return alignedRegistry().has(buffer);
}

/**
 * Guest RAM on a SharedArrayBuffer, so that a device model or a backend on another worker thread can share it,
 * as Xen's dom0 maps guest pages. Hot paths use the typed-array views directly (`u8`, `dv`), which measured
 * about twice as fast as Buffer's read/write methods on this kind of machine.
 */
/**
 * The largest guest RAM: below 4 GiB, the 32-bit guest-physical space the PC's low memory lives in (page
 * numbers and PRD addresses are 32-bit here).
 */
export const MAX_GUEST_RAM = 0x1_0000_0000 - PAGE_SIZE;

export class GuestRam implements GuestMemory {
  readonly size: number;
  readonly buffer: SharedArrayBuffer | ArrayBuffer;
  readonly u8: Uint8Array;
  readonly dv: DataView;

  constructor(size: number, options: GuestRamOptions = {}) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`guest RAM size must be a positive multiple of ${PAGE_SIZE} bytes, got ${size}`);
    }
    // Page-aligned by default (see allocPageAligned); a plain SharedArrayBuffer only if the engine refuses.
    const buffer = options.buffer ?? allocPageAligned(size) ?? new SharedArrayBuffer(size);
    if (buffer.byteLength < size) {
      throw new RangeError(`guest RAM buffer holds ${buffer.byteLength} bytes, ${size} needed`);
    }
    this.size = size;
    this.buffer = buffer;
    this.u8 = new Uint8Array(buffer, 0, size);
    this.dv = new DataView(buffer, 0, size);
  }

  get pages(): number {
    return this.size >>> PAGE_SHIFT;
  }

  /** Whether guest address 0 is known to sit on a host page boundary (so every guest page is host-aligned). */
  get pageAligned(): boolean {
    return isPageAligned(this.buffer);
  }

  /** The fault for [gpa, gpa+length), or undefined when the range is inside RAM. */
  check(gpa: number, length: number): MemoryFault | undefined {
    if (!(gpa >= 0 && length >= 0 && gpa + length <= this.size) || !Number.isInteger(gpa)) {
      return new MemoryFault(gpa, length, this.size);
    }
    return undefined;
  }

  read(gpa: number, dst: Uint8Array): MemoryFault | undefined {
    const f = this.check(gpa, dst.length);
    if (f) return f;
    dst.set(this.u8.subarray(gpa, gpa + dst.length));
    return undefined;
  }

  write(gpa: number, src: Uint8Array): MemoryFault | undefined {
    const f = this.check(gpa, src.length);
    if (f) return f;
    this.u8.set(src, gpa);
    return undefined;
  }

  view(gpa: number, length: number): Uint8Array | MemoryFault {
    return this.check(gpa, length) ?? this.u8.subarray(gpa, gpa + length);
  }

  written(_gpa: number, _length: number): void {}

  readU8(gpa: number): number | MemoryFault {
    return this.check(gpa, 1) ?? this.u8[gpa]!;
  }
  readU16(gpa: number): number | MemoryFault {
    return this.check(gpa, 2) ?? this.dv.getUint16(gpa, true);
  }
  readU32(gpa: number): number | MemoryFault {
    return this.check(gpa, 4) ?? this.dv.getUint32(gpa, true);
  }
  readU64(gpa: number): bigint | MemoryFault {
    return this.check(gpa, 8) ?? this.dv.getBigUint64(gpa, true);
  }
  writeU8(gpa: number, value: number): MemoryFault | undefined {
    const f = this.check(gpa, 1);
    if (!f) this.u8[gpa] = value;
    return f;
  }
  writeU16(gpa: number, value: number): MemoryFault | undefined {
    const f = this.check(gpa, 2);
    if (!f) this.dv.setUint16(gpa, value, true);
    return f;
  }
  writeU32(gpa: number, value: number): MemoryFault | undefined {
    const f = this.check(gpa, 4);
    if (!f) this.dv.setUint32(gpa, value >>> 0, true);
    return f;
  }
  writeU64(gpa: number, value: bigint): MemoryFault | undefined {
    const f = this.check(gpa, 8);
    if (!f) this.dv.setBigUint64(gpa, BigInt.asUintN(64, value), true);
    return f;
  }

  /** A simple page allocator for guest drivers and tests: hands out page-aligned guest-physical ranges. */
  allocator(startGpa = 0x10_0000): PageAllocator {
    return new PageAllocator(this, startGpa);
  }
}

/**
 * Recognises a driver's buffers that are views of guest RAM (allocated in the guest's own memory, as a kernel's
 * pages are) and gives their guest-physical address, so DMA and grants can use them in place. Guest RAM is
 * one buffer, so a view of it shares that buffer and its offset from guest address 0 is its GPA.
 */
export class GuestViews {
  /** A zero-length view of guest address 0; relearnt when a host replaces its RAM's buffer (grown wasm). */
  private base: Uint8Array | null = null;
  private lastBuf: Uint8Array | null = null;
  private lastLength = 0;
  private lastGpa = -1;

  constructor(private readonly mem: GuestMemory) {}

  /** The GPA of `buf` when it lies wholly in guest RAM, else -1. */
  gpaOf(buf: Uint8Array): number {
    // Drivers reuse their buffers: the last one answered is remembered (reading `.buffer` is not cheap).
    if (buf === this.lastBuf && buf.length === this.lastLength) return this.lastGpa;
    const gpa = this.find(buf);
    this.lastBuf = buf;
    this.lastLength = buf.length;
    this.lastGpa = gpa;
    return gpa;
  }

  private find(buf: Uint8Array): number {
    let base = this.base;
    if (base === null || base.buffer !== buf.buffer) {
      const v = this.mem.view(0, 0);
      if (isFault(v)) return -1;
      this.base = base = v;
      if (base.buffer !== buf.buffer) return -1;
    }
    const gpa = buf.byteOffset - base.byteOffset;
    return gpa >= 0 && gpa + buf.length <= this.mem.size ? gpa : -1;
  }
}

/** Bump allocator of guest pages (guest drivers need somewhere to put PRD tables, rings and buffers). */
export class PageAllocator {
  private next: number;
  constructor(
    private readonly mem: GuestMemory,
    startGpa: number,
  ) {
    this.next = alignUp(startGpa, PAGE_SIZE);
  }
  /** Allocate `bytes` rounded up to whole pages; throws when guest RAM is exhausted (a guest-driver bug). */
  alloc(bytes: number, align = PAGE_SIZE): number {
    const gpa = alignUp(this.next, align);
    const end = gpa + alignUp(Math.max(bytes, 1), PAGE_SIZE);
    if (end > this.mem.size) {
      throw new RangeError(
        `guest page allocator: ${bytes} bytes do not fit below 0x${this.mem.size.toString(16)}`,
      );
    }
    this.next = end;
    return gpa;
  }
}

export function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}
