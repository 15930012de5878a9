/**
 * xenide's `GuestMemory` over v86's guest RAM. Reads copy out of v86's memory view; every write goes through
 * v86's `write_blob`, which also invalidates the code v86 compiled from the pages written (a DMA transfer into
 * a page the guest later executes, such as a kernel module read from disk, must not run stale code).
 * Addresses outside RAM, or inside a range v86 maps to a device (VGA memory, APIC), come back as a
 * `MemoryFault`, which the bus-master engine turns into its error status.
 */

import { type GuestMemory, MemoryFault } from "../../hypervisor/memory.ts";
import { DirectView, type V86Cpu } from "./internals.ts";

export class V86GuestMemory implements GuestMemory {
  readonly size: number;
  private readonly ram: DirectView<Uint8Array>;

  constructor(private readonly cpu: V86Cpu) {
    this.size = cpu.memory_size[0]!;
    const size = this.size;
    this.ram = new DirectView(cpu.wasm_memory, cpu.mem8, (b, off) => new Uint8Array(b, off, size));
  }

  /** Guest RAM as a plain view (v86's own `mem8` is a Proxy that allocates on every access). */
  get u8(): Uint8Array {
    return this.ram.get();
  }

  private check(gpa: number, length: number): MemoryFault | undefined {
    if (!(Number.isInteger(gpa) && gpa >= 0 && length >= 0 && gpa + length <= this.size)) {
      return new MemoryFault(gpa, length, this.size);
    }
    if (length > 0 && (this.cpu.in_mapped_range(gpa) || this.cpu.in_mapped_range(gpa + length - 1))) {
      return new MemoryFault(gpa, length, this.size);
    }
    return undefined;
  }

  read(gpa: number, dst: Uint8Array): MemoryFault | undefined {
    const f = this.check(gpa, dst.length);
    if (f) return f;
    dst.set(this.ram.get().subarray(gpa, gpa + dst.length));
    return undefined;
  }

  write(gpa: number, src: Uint8Array): MemoryFault | undefined {
    const f = this.check(gpa, src.length);
    if (f) return f;
    if (src.length) this.cpu.write_blob(src, gpa);
    return undefined;
  }

  view(gpa: number, length: number): Uint8Array | MemoryFault {
    return this.check(gpa, length) ?? this.ram.get().subarray(gpa, gpa + length);
  }

  written(gpa: number, length: number): void {
    // The bytes are already in place; writing them onto themselves through write_blob is what marks the
    // pages dirty for v86's code cache.
    if (length > 0 && !this.check(gpa, length))
      this.cpu.write_blob(this.ram.get().subarray(gpa, gpa + length), gpa);
  }

  readU8(gpa: number): number | MemoryFault {
    return this.check(gpa, 1) ?? this.ram.get()[gpa]!;
  }
  readU16(gpa: number): number | MemoryFault {
    const m = this.ram.get();
    return this.check(gpa, 2) ?? m[gpa]! | (m[gpa + 1]! << 8);
  }
  readU32(gpa: number): number | MemoryFault {
    const m = this.ram.get();
    return (
      this.check(gpa, 4) ?? (m[gpa]! | (m[gpa + 1]! << 8) | (m[gpa + 2]! << 16) | (m[gpa + 3]! << 24)) >>> 0
    );
  }
  readU64(gpa: number): bigint | MemoryFault {
    const f = this.check(gpa, 8);
    if (f) return f;
    const m = this.ram.get();
    return new DataView(m.buffer, m.byteOffset + gpa, 8).getBigUint64(0, true);
  }

  private put(gpa: number, bytes: Uint8Array): MemoryFault | undefined {
    return this.write(gpa, bytes);
  }
  writeU8(gpa: number, value: number): MemoryFault | undefined {
    return this.put(gpa, Uint8Array.of(value & 0xff));
  }
  writeU16(gpa: number, value: number): MemoryFault | undefined {
    return this.put(gpa, Uint8Array.of(value & 0xff, (value >>> 8) & 0xff));
  }
  writeU32(gpa: number, value: number): MemoryFault | undefined {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    return this.put(gpa, b);
  }
  writeU64(gpa: number, value: bigint): MemoryFault | undefined {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
    return this.put(gpa, b);
  }
}
