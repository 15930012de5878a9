/**
 * The parts of v86's internals this host uses. v86's build keeps its property names (Closure Compiler ran
 * without property renaming), so `emulator.v86.cpu` and the objects below are stable in the 0.5.x package;
 * the published typings cover only the public emulator API, hence these declarations. Names are v86's own.
 */

/** One entry of v86's port table (src/io.js): handlers are called with `device` as `this`. */
export interface V86PortEntry {
  read8: (this: unknown, port: number) => number;
  read16: (this: unknown, port: number) => number;
  read32: (this: unknown, port: number) => number;
  write8: (this: unknown, value: number) => void;
  write16: (this: unknown, value: number) => void;
  write32: (this: unknown, value: number) => void;
  device: unknown;
}

export interface V86Io {
  ports: V86PortEntry[];
  register_read(
    port: number,
    device: object,
    r8?: (port: number) => number,
    r16?: (port: number) => number,
    r32?: (port: number) => number,
  ): void;
  register_write(
    port: number,
    device: object,
    w8?: (value: number) => void,
    w16?: (value: number) => void,
    w32?: (value: number) => void,
  ): void;
  create_empty_entry(): V86PortEntry;
}

/** v86's PCI host (src/pci.js): configuration mechanism #1 at 0xCF8/0xCFC over per-function spaces. */
export interface V86Pci {
  /** Config address register as last written to 0xCF8 (byte 0: register, 1: devfn, 2: bus, 3: enable). */
  pci_addr: Uint8Array;
  pci_addr32: Int32Array;
  /** Indexed by bus<<8|devfn for bus 0: the 256-byte configuration space as 64 dwords. */
  device_spaces: (Int32Array | undefined)[];
  devices: (object | undefined)[];
}

export interface V86Cpu {
  io: V86Io;
  devices: { pci: V86Pci; [name: string]: unknown };
  /**
   * Guest RAM. Like the register views below, this is a Proxy that builds a fresh typed array over the wasm
   * memory on EVERY property access (so that it survives memory growth): fine for a bulk `set`, ruinous per
   * element. Hot paths use `directView` instead.
   */
  mem8: Uint8Array;
  wasm_memory: WebAssembly.Memory;
  memory_size: Uint32Array;
  /** Copy into guest RAM and invalidate v86's compiled code for the pages written. */
  write_blob(blob: Uint8Array, offset: number): void;
  /** True for addresses that v86 maps to devices (VGA memory, the APIC, ...), not RAM. */
  in_mapped_range(addr: number): boolean;
  /** ISA interrupt lines through v86's PIC (and IOAPIC when enabled). */
  device_raise_irq(line: number): void;
  device_lower_irq(line: number): void;
  /** General registers EAX..EDI. */
  reg32: Int32Array;
  /** EFLAGS (DF is bit 10). */
  flags: Int32Array;
  /** Linear address of the instruction being executed (kept current for string instructions, which re-enter). */
  previous_ip: Int32Array;
  /** Code segment default size: nonzero for 32-bit operands and addresses. */
  is_32: Int32Array;
  /** Segment bases, indexed ES, CS, SS, DS, FS, GS. */
  segment_offsets: Int32Array;
  /** Linear to physical through the guest's page tables (the address must be mapped). */
  translate_address_system_read(linear: number): number;
}

/** v86's general-register indices (x86 encoding order). */
export const REG_ECX = 1;
export const REG_EDX = 2;
export const REG_ESI = 6;
export const REG_EDI = 7;

/** The emulator object's internal field (`emulator.v86`). */
export interface V86Machine {
  cpu: V86Cpu;
}

/** Bus/device/function of v86's own IDE function (00:1e.0, src/ide.js). */
export const V86_IDE_DEVFN = (0x1e << 3) | 0;

/**
 * A plain typed array over the same bytes as one of v86's Proxy views, rebuilt only when the wasm memory's
 * buffer changes (growth detaches the old one).
 */
export class DirectView<T extends Uint8Array | Int32Array | Uint32Array> {
  private buffer: ArrayBuffer | null = null;
  private view: T | null = null;
  private readonly offset: number;

  constructor(
    private readonly memory: WebAssembly.Memory,
    proxy: { byteOffset: number },
    private readonly make: (buffer: ArrayBuffer, offset: number) => T,
  ) {
    this.offset = proxy.byteOffset;
  }

  get(): T {
    const b = this.memory.buffer;
    if (b !== this.buffer || !this.view) {
      this.buffer = b;
      this.view = this.make(b, this.offset);
    }
    return this.view;
  }
}
