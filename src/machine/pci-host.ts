/**
 * PCI configuration mechanism #1 (PCI Local Bus Specification 2.1 §3.7.4.1): CONFIG_ADDRESS at 0xCF8 (dword
 * accesses only; bit 31 enables, bus 23:16, device 15:11, function 10:8, register 7:2) and CONFIG_DATA at
 * 0xCFC-0xCFF (byte, word and dword accesses, the low two port bits selecting the byte in the dword).
 * Also port 0xCF9, the PIIX3 Reset Control Register (byte access; 82371SB datasheet §4.1.5, QEMU 7.2's
 * rcr_write): bit 1 (System Reset type) is kept and reads back; a write with bit 2 (Reset CPU) set asks for a
 * machine reset (`onResetRequest`) and stores nothing.
 */

import type { AccessSize, PortIoDevice } from "../hypervisor/bus.ts";
import { type PciFunction, maskedWrite, put16, readLE } from "../hypervisor/pci-function.ts";
import type { CompatProfile } from "../ide/compat.ts";

export type { PciFunction } from "../hypervisor/pci-function.ts";

export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_DATA = 0xcfc;

/** Bus/device/function → a 16-bit key as in CONFIG_ADDRESS bits 23:8. */
export function bdf(bus: number, device: number, fn: number): number {
  return ((bus & 0xff) << 8) | ((device & 0x1f) << 3) | (fn & 7);
}

export class PciHost implements PortIoDevice {
  /** CONFIG_ADDRESS as last written (bits 1:0 read back as 0; kept in the "qemu-7.2" profile). */
  address = 0;
  /** PIIX3 Reset Control Register (0xCF9): bit 1 as last written; 0 after a reset. */
  rcr = 0;
  /**
   * A write to 0xCF9 with Reset CPU (bit 2) set: `hard` is bit 1 (full reset rather than CPU-only; both reset
   * this machine, as in QEMU 7.2, whose shutdown cause is "guest-reset" either way). Null: nothing happens.
   */
  onResetRequest: ((hard: boolean) => void) | null = null;
  private readonly functions = new Map<number, PciFunction>();
  /**
   * QEMU 7.2's pci_host.c instead of the specification: CONFIG_ADDRESS keeps every bit written, and
   * CONFIG_DATA reaches register `(CONFIG_ADDRESS | port & 3) & 0xFF`, so bits 1:0 offset the access (libqos
   * reads the device ID with 0x80000902 and a word read of 0xCFC); the index reads back at any width.
   */
  private readonly qemu: boolean;

  constructor(opts: { compat?: CompatProfile } = {}) {
    this.qemu = opts.compat === "qemu-7.2";
  }

  add(bus: number, device: number, fn: number, f: PciFunction): void {
    const key = bdf(bus, device, fn);
    if (this.functions.has(key)) throw new Error(`PCI function ${bus}:${device}.${fn} already present`);
    this.functions.set(key, f);
  }

  functionAt(bus: number, device: number, fn: number): PciFunction | undefined {
    return this.functions.get(bdf(bus, device, fn));
  }

  private target(): PciFunction | undefined {
    if (!(this.address & 0x80000000)) return undefined;
    return this.functions.get((this.address >>> 8) & 0xffff);
  }

  ioRead(port: number, size: AccessSize): number {
    if (this.qemu) return this.qemuRead(port, size);
    if (port >= PCI_CONFIG_DATA) {
      const f = this.target();
      const off = (this.address & 0xfc) + (port & 3);
      if (!f) return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
      return f.configRead(off, size);
    }
    if (port === PCI_CONFIG_ADDRESS && size === 4) return this.address;
    if (port === PCI_CONFIG_ADDRESS + 1 && size === 1) return this.rcr;
    return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
  }

  ioWrite(port: number, size: AccessSize, value: number): void {
    if (this.qemu) {
      this.qemuWrite(port, size, value);
      return;
    }
    if (port >= PCI_CONFIG_DATA) {
      const f = this.target();
      if (f) f.configWrite((this.address & 0xfc) + (port & 3), size, value);
      return;
    }
    if (port === PCI_CONFIG_ADDRESS && size === 4) this.address = (value & 0x80fffffc) >>> 0;
    else if (port === PCI_CONFIG_ADDRESS + 1 && size === 1) this.writeRcr(value);
  }

  /** Reset Control: Reset CPU (bit 2) asks for the reset and stores nothing; otherwise keep System Reset (bit 1). */
  private writeRcr(value: number): void {
    if (value & 0x04) this.onResetRequest?.((value & 0x02) !== 0);
    else this.rcr = value & 0x02;
  }

  /** The host's part of a machine reset: Reset Control back to 0 (QEMU's piix3_reset). */
  reset(): void {
    this.rcr = 0;
  }

  // QEMU 7.2's pci_host_config_* and pci_host_data_* (hw/pci/pci_host.c).

  private qemuRead(port: number, size: AccessSize): number {
    if (port >= PCI_CONFIG_DATA) {
      const f = this.target();
      if (!f) return ones(size);
      // QEMU's memory core splits an access into naturally aligned pieces, and each piece reaches register
      // `CONFIG_ADDRESS | (its port & 3)`: with bits 1:0 = 3, `inw 0xCFD` reads register 3 twice.
      let v = 0;
      for (let at = port & 3, done = 0; done < size;) {
        const piece = dataPiece(at, size - done);
        v += this.qemuDataRead(f, at, piece) * 2 ** (8 * done);
        at += piece;
        done += piece;
      }
      return v >>> 0;
    }
    if (port === PCI_CONFIG_ADDRESS + 1 && size === 1) return this.rcr;
    // pci-conf-idx returns the whole register whatever the offset; the access width keeps its low bytes.
    return (this.address & ones(size)) >>> 0;
  }

  private qemuWrite(port: number, size: AccessSize, value: number): void {
    if (port >= PCI_CONFIG_DATA) {
      const f = this.target();
      if (!f) return;
      for (let at = port & 3, done = 0; done < size;) {
        const piece = dataPiece(at, size - done);
        this.qemuDataWrite(f, at, piece, Math.floor(value / 2 ** (8 * done)) % 2 ** (8 * piece));
        at += piece;
        done += piece;
      }
      return;
    }
    if (port === PCI_CONFIG_ADDRESS && size === 4) this.address = value >>> 0;
    else if (port === PCI_CONFIG_ADDRESS + 1 && size === 1) this.writeRcr(value);
  }

  /** One aligned piece at byte `at` (0-3) of CONFIG_DATA; past 0xCFF nothing answers (all ones). */
  private qemuDataRead(f: PciFunction, at: number, piece: 1 | 2 | 4): number {
    if (at > 3) return ones(piece);
    const off = (this.address | at) & 0xff;
    // The access is cut at the end of the 256-byte space (pci_host_config_read_common).
    if (off + piece <= 256) return f.configRead(off, piece);
    let v = 0;
    for (let i = 0; off + i < 256; i++) v |= f.configRead(off + i, 1) << (8 * i);
    return v >>> 0;
  }

  private qemuDataWrite(f: PciFunction, at: number, piece: 1 | 2 | 4, value: number): void {
    if (at > 3) return;
    const off = (this.address | at) & 0xff;
    if (off + piece <= 256) f.configWrite(off, piece, value);
    else for (let i = 0; off + i < 256; i++) f.configWrite(off + i, 1, (value >>> (8 * i)) & 0xff);
  }
}

/** The largest naturally aligned access at byte `at` that `left` bytes allow (QEMU's memory_access_size). */
function dataPiece(at: number, left: number): 1 | 2 | 4 {
  if (left >= 4 && at % 4 === 0) return 4;
  if (left >= 2 && at % 2 === 0) return 2;
  return 1;
}

/** All ones of an access of `size` bytes. */
function ones(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
}

/**
 * A function whose configuration space is plain storage behind a write mask (bytes with mask 0 are read-only).
 * Used for the i440FX host bridge and the PIIX3 ISA bridge, which the IDE model does not otherwise emulate.
 */
export class PlainPciFunction implements PciFunction {
  readonly config = new Uint8Array(256);
  readonly wmask = new Uint8Array(256);
  /** The configuration space a reset restores (`captureResetState`; by default the constructor's). */
  private resetState: Uint8Array;

  constructor(init: {
    vendor: number;
    device: number;
    classCode: number;
    revision: number;
    headerType?: number;
    command?: number;
    status?: number;
    subsystemVendor?: number;
    subsystem?: number;
  }) {
    const c = this.config;
    put16(c, 0x00, init.vendor);
    put16(c, 0x02, init.device);
    put16(c, 0x04, init.command ?? 0);
    put16(c, 0x06, init.status ?? 0);
    c[0x08] = init.revision;
    c[0x09] = init.classCode & 0xff;
    c[0x0a] = (init.classCode >> 8) & 0xff;
    c[0x0b] = (init.classCode >> 16) & 0xff;
    c[0x0e] = init.headerType ?? 0;
    put16(c, 0x2c, init.subsystemVendor ?? 0);
    put16(c, 0x2e, init.subsystem ?? 0);
    // Writable as in QEMU's generic PCI code: command bits IO/MEM/MASTER/INTx-disable, cache line size,
    // interrupt line, and the whole device-specific area 0x40-0xFF.
    put16(this.wmask, 0x04, 0x0407);
    this.wmask[0x0c] = 0xff;
    this.wmask[0x3c] = 0xff;
    this.wmask.fill(0xff, 0x40);
    this.resetState = c.slice();
  }

  /** Take the current configuration space as the one a reset restores (after the builder's own settings). */
  captureResetState(): void {
    this.resetState = this.config.slice();
  }

  /**
   * A reset (QEMU's pci_do_device_reset plus the device's own reset): the header back to its reset values, and
   * the device-specific area 0x40-0xFF too when `deviceArea` (a function whose reset handler rewrites it, as
   * QEMU's PIIX3 and PIIX4 do; the i440FX's PAM and SMRAM registers have none and keep their values).
   */
  reset(deviceArea: boolean): void {
    this.config.set(this.resetState.subarray(0, deviceArea ? 256 : 0x40));
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    return readLE(this.config, offset, size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    maskedWrite(this.config, this.wmask, offset, size, value);
  }
}
