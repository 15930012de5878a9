/**
 * The port-I/O bus of the device model: a range bus in the style of rust-vmm's `vm-device`. Devices claim
 * port ranges; a second claim on any port already owned is refused; an access to an unclaimed port reads
 * all-ones and drops writes, as an ISA bus with nothing driving it does (floating bus, pulled up).
 */

import type { GuestMemory, MemoryFault } from "./memory.ts";

export type AccessSize = 1 | 2 | 4;

export interface PortIoDevice {
  /** Read `size` bytes at `port` (a port inside one of the device's ranges). */
  ioRead(port: number, size: AccessSize): number;
  /** Write the low `size` bytes of `value` at `port`. */
  ioWrite(port: number, size: AccessSize, value: number): void;
  /**
   * Optional fast path for string I/O (INS/OUTS with REP), so that a device can move a whole sector between
   * its buffer and guest memory in one copy. Returns the number of items moved, or a fault when guest memory
   * rejected the access. Without it the ioreq server loops over ioRead/ioWrite.
   */
  ioString?(
    port: number,
    size: AccessSize,
    dir: "in" | "out",
    mem: GuestMemory,
    gpa: number,
    count: number,
    df: boolean,
  ): number | MemoryFault;
}

export interface PortRangeOptions {
  /** Writes to this range may travel through Xen's buffered ioreq page (fire-and-forget, no round trip). */
  bufferedWrites?: boolean;
}

export class PortConflictError extends Error {
  constructor(
    readonly base: number,
    readonly length: number,
    readonly owner: string,
    readonly conflictingPort: number,
  ) {
    super(
      `port range 0x${base.toString(16)}+${length} overlaps port 0x${conflictingPort.toString(16)} owned by ${owner}`,
    );
    this.name = "PortConflictError";
  }
}

interface Claim {
  base: number;
  length: number;
  device: PortIoDevice;
  name: string;
  buffered: boolean;
}

export const PORT_SPACE = 0x10000;

export function sizeMask(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
}

export class PortBus {
  /** Claim index + 1 per port; 0 = unclaimed. A flat table keeps dispatch to one indexed load. */
  private readonly owner = new Uint16Array(PORT_SPACE);
  /** 1 where writes may be buffered: checked on every OUT, so a flat table rather than a claim lookup. */
  private readonly buffered = new Uint8Array(PORT_SPACE);
  private readonly claims: Claim[] = [];
  /** The device of each claim by claim index + 1 (`owner`'s values): dispatch is two indexed loads. */
  private readonly devices: (PortIoDevice | null)[] = [null];

  register(
    base: number,
    length: number,
    device: PortIoDevice,
    name: string,
    opts: PortRangeOptions = {},
  ): void {
    if (
      !Number.isInteger(base) ||
      !Number.isInteger(length) ||
      length <= 0 ||
      base < 0 ||
      base + length > PORT_SPACE
    ) {
      throw new RangeError(`bad port range 0x${base.toString(16)}+${length} for ${name}`);
    }
    for (let p = base; p < base + length; p++) {
      const o = this.owner[p]!;
      if (o !== 0) throw new PortConflictError(base, length, this.claims[o - 1]!.name, p);
    }
    this.claims.push({ base, length, device, name, buffered: opts.bufferedWrites === true });
    this.devices.push(device);
    const id = this.claims.length;
    this.owner.fill(id, base, base + length);
    this.buffered.fill(opts.bufferedWrites === true ? 1 : 0, base, base + length);
  }

  /** Remove the claim that starts at `base` (used when a PCI BAR moves). */
  unregister(base: number): boolean {
    const id = this.owner[base]!;
    const c = id ? this.claims[id - 1] : undefined;
    if (!c || c.base !== base) return false;
    this.owner.fill(0, c.base, c.base + c.length);
    this.buffered.fill(0, c.base, c.base + c.length);
    return true;
  }

  /** The device that owns `port`, if any. */
  deviceAt(port: number): PortIoDevice | undefined {
    const id = this.owner[port & 0xffff]!;
    return id ? this.claims[id - 1]!.device : undefined;
  }

  nameAt(port: number): string | undefined {
    const id = this.owner[port & 0xffff]!;
    return id ? this.claims[id - 1]!.name : undefined;
  }

  /** True when writes to `port` may be buffered (the owner declared them fire-and-forget). */
  isBuffered(port: number): boolean {
    return this.buffered[port & 0xffff] === 1;
  }

  read(port: number, size: AccessSize): number {
    const d = this.devices[this.owner[port & 0xffff]!] as PortIoDevice | null;
    // Unclaimed: the bus floats high. Else the low `size` bytes, in integer operations (sizeMask(4) is a double).
    const v = d === null ? -1 : d.ioRead(port, size);
    return size === 1 ? v & 0xff : size === 2 ? v & 0xffff : v >>> 0;
  }

  write(port: number, size: AccessSize, value: number): void {
    const d = this.devices[this.owner[port & 0xffff]!] as PortIoDevice | null;
    if (d !== null)
      d.ioWrite(port, size, size === 1 ? value & 0xff : size === 2 ? value & 0xffff : value >>> 0);
  }
}

/**
 * A device on the MMIO bus: loads and stores of 1, 2 or 4 bytes at guest-physical addresses inside its
 * ranges. Under Xen such an access is emulated by the hypervisor and sent to the ioreq server as an
 * `IOREQ_TYPE_COPY` request, the same round trip a port access makes.
 */
export interface MmioDevice {
  mmioRead(addr: number, size: MmioSize): number;
  mmioWrite(addr: number, size: MmioSize, value: number): void;
}

/** MMIO access widths this bus carries. */
export type MmioSize = AccessSize;

/** An MMIO range that overlaps one already claimed. */
export class MmioConflictError extends Error {
  constructor(
    readonly base: number,
    readonly length: number,
    readonly owner: string,
  ) {
    super(`MMIO range 0x${base.toString(16)}+0x${length.toString(16)} overlaps ${owner}`);
    this.name = "MmioConflictError";
  }
}

interface MmioClaim {
  base: number;
  end: number;
  device: MmioDevice;
  name: string;
}

/** Guest-physical addresses this bus decodes: below 2^52, the x86-64 physical address limit. */
export const MMIO_LIMIT = 2 ** 52;

/**
 * The MMIO side of the device model's bus, a range bus as rust-vmm's: sparse claims kept sorted, so a lookup is
 * a binary search; overlaps refused; an unclaimed address reads all-ones and drops writes.
 */
export class MmioBus {
  private readonly claims: MmioClaim[] = [];

  register(base: number, length: number, device: MmioDevice, name: string): void {
    const end = base + length;
    if (
      !Number.isSafeInteger(base) ||
      !Number.isSafeInteger(length) ||
      base < 0 ||
      length <= 0 ||
      end > MMIO_LIMIT
    )
      throw new RangeError(`bad MMIO range 0x${base.toString(16)}+0x${length.toString(16)} for ${name}`);
    let i = 0;
    while (i < this.claims.length && this.claims[i]!.base < base) i++;
    const prev = this.claims[i - 1];
    const next = this.claims[i];
    if (prev && prev.end > base) throw new MmioConflictError(base, length, prev.name);
    if (next && next.base < end) throw new MmioConflictError(base, length, next.name);
    this.claims.splice(i, 0, { base, end, device, name });
  }

  /** Remove the claim that starts at `base` (a BAR moved). */
  unregister(base: number): boolean {
    const i = this.claims.findIndex((c) => c.base === base);
    if (i < 0) return false;
    this.claims.splice(i, 1);
    return true;
  }

  private find(addr: number): MmioClaim | undefined {
    const c = this.claims;
    let lo = 0;
    let hi = c.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = c[mid]!;
      if (addr < m.base) hi = mid - 1;
      else if (addr >= m.end) lo = mid + 1;
      else return m;
    }
    return undefined;
  }

  nameAt(addr: number): string | undefined {
    return this.find(addr)?.name;
  }

  read(addr: number, size: MmioSize): number {
    const c = this.find(addr);
    if (!c) return sizeMask(size) >>> 0;
    return (c.device.mmioRead(addr, size) & sizeMask(size)) >>> 0;
  }

  write(addr: number, size: MmioSize, value: number): void {
    const c = this.find(addr);
    if (c) c.device.mmioWrite(addr, size, (value & sizeMask(size)) >>> 0);
  }
}
