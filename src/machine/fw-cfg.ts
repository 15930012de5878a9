/**
 * QEMU's firmware configuration device (fw_cfg) on the PC's I/O ports, as QEMU 7.2's pc machine has it: what
 * firmware and test harnesses read to learn the machine (libqos's `pc_alloc_init` reads the RAM size here, and
 * without it takes RAM to reach 3.5 GiB). The interface is QEMU's docs/specs/fw_cfg.txt:
 *
 * - 0x510, selector: a 16-bit write selects an item (bit 14, the write channel, and the rest of the key beyond bit
 *   15 select the same item) and rewinds it. 0x511, data: each byte read returns the item's next byte, 0 past its
 *   end or for an item that does not exist. Byte writes to either port do nothing (QEMU removed data writes in
 *   2.4); an 8-bit read of 0x510 reads data too.
 * - 0x514-0x51B, DMA address (big-endian): reads return "QEMU CFG"; a 32-bit write at 0x514 sets the high half of
 *   the address of an FWCfgDmaAccess (BE32 control, BE32 length, BE64 address), one at 0x518 the low half and
 *   runs it: select (control bits 31-16, with bit 3), then read (bit 1: the item's bytes to guest memory, zeros past
 *   its end), skip (bit 2) or write (bit 4: refused, no item is writable), and control written back as 0 or error
 *   (bit 0).
 *
 * Access widths as observed on QEMU 7.2 (qtest `in`/`out` of every width at every port): 16- and 32-bit reads at
 * 0x510 return 0, a 16-bit read at 0x511 is the data byte with 0xFF above it (0x512 is unassigned), a 32-bit one
 * adds 0xFF and the first signature byte; 16-bit writes elsewhere than 0x510 select nothing.
 *
 * Contents: the items whose bytes are not all zero on QEMU 7.2's pc (-nodefaults, qtest or TCG accelerator,
 * observed) — an item of zeros and an item that does not exist read the same, by port and by DMA. The file
 * directory lists the files this machine can give exactly as QEMU does, under QEMU's selectors; QEMU's ACPI
 * tables, table loader, SMBIOS tables and option ROM (etc/acpi/rsdp, etc/acpi/tables, etc/table-loader,
 * etc/smbios/*, genroms/kvmvapic.bin), which describe a firmware's machine xenide does not build, are not there
 * (docs/conformance.md).
 */

import type { AccessSize, PortBus, PortIoDevice } from "../hypervisor/bus.ts";
import type { GuestMemory } from "../hypervisor/memory.ts";

/** I/O ports (QEMU's FW_CFG_IO_BASE and the DMA register after it). */
export const FW_CFG_IO_BASE = 0x510;
export const FW_CFG_DMA_IO_BASE = 0x514;

/** Item keys (QEMU's include/standard-headers/linux/qemu_fw_cfg.h and hw/i386/fw_cfg.h). */
export const FW_CFG_SIGNATURE = 0x00;
export const FW_CFG_ID = 0x01;
export const FW_CFG_RAM_SIZE = 0x03;
export const FW_CFG_NB_CPUS = 0x05;
export const FW_CFG_MAX_CPUS = 0x0f;
export const FW_CFG_FILE_DIR = 0x19;
export const FW_CFG_FILE_FIRST = 0x20;
/** x86-specific items (FW_CFG_ARCH_LOCAL + n). */
export const FW_CFG_IRQ0_OVERRIDE = 0x8002;
export const FW_CFG_HPET = 0x8004;
/** Key bits that do not name the item: the write channel (14). Bit 15 (arch-local) names a second table. */
const FW_CFG_WRITE_CHANNEL = 0x4000;
/** Items per table: the fixed keys and QEMU's default 0x20 file slots (fw_cfg_max_entry). */
const FW_CFG_MAX_ENTRY = FW_CFG_FILE_FIRST + 0x20;

/** FW_CFG_ID feature bits: the traditional interface and DMA. */
const FW_CFG_VERSION = 0x01;
const FW_CFG_VERSION_DMA = 0x02;

/** FWCfgDmaAccess control bits. */
export const FW_CFG_DMA_CTL_ERROR = 0x01;
export const FW_CFG_DMA_CTL_READ = 0x02;
export const FW_CFG_DMA_CTL_SKIP = 0x04;
export const FW_CFG_DMA_CTL_SELECT = 0x08;
export const FW_CFG_DMA_CTL_WRITE = 0x10;

const ascii = new TextEncoder();

/** "QEMU CFG", what the DMA register reads as (FW_CFG_DMA_SIGNATURE, big-endian). */
const DMA_SIGNATURE = ascii.encode("QEMU CFG");

/** E820 entry types (etc/e820). */
const E820_RAM = 1;
const E820_RESERVED = 2;
/**
 * The HyperTransport range below 1 TiB QEMU 7.2 reserves in the E820 map of an AMD vCPU (its qemu64 model with
 * TCG or qtest) with 40 physical address bits (pc_memory_init: AMD_HT_START, AMD_HT_SIZE).
 */
const AMD_HT_START = 0xfd_0000_0000;
const AMD_HT_SIZE = 0x3_0000_0000;

export interface FwCfgOptions {
  /** Guest RAM in bytes (QEMU's ram_size: FW_CFG_RAM_SIZE and etc/e820). */
  ramSize: number;
  /** Where a DMA transfer reads its FWCfgDmaAccess and moves its data. */
  mem: GuestMemory;
}

interface FwCfgFile {
  name: string;
  select: number;
  data: Uint8Array;
}

function le(bytes: number, value: number | bigint): Uint8Array {
  const b = new Uint8Array(bytes);
  let v = BigInt(value);
  for (let i = 0; i < bytes; i++, v >>= 8n) b[i] = Number(v & 0xffn);
  return b;
}

/** QEMU 7.2's etc/e820 for a pc-i440fx-7.2 machine with `ram` bytes (20-byte entries: addr, length, type). */
export function e820Table(ram: number): Uint8Array {
  // gigabyte_align: with 3.5 GiB or more, RAM below 4 GiB stops at 3 GiB and the rest goes above 4 GiB.
  const below = ram >= 0xe000_0000 ? 0xc000_0000 : ram;
  const entries: [number, number, number][] = [
    [AMD_HT_START, AMD_HT_SIZE, E820_RESERVED],
    [0, below, E820_RAM],
  ];
  if (ram > below) entries.push([0x1_0000_0000, ram - below, E820_RAM]);
  const out = new Uint8Array(entries.length * 20);
  entries.forEach(([addr, len, type], i) => {
    out.set(le(8, addr), i * 20);
    out.set(le(8, len), i * 20 + 8);
    out.set(le(4, type), i * 20 + 16);
  });
  return out;
}

export class FwCfg implements PortIoDevice {
  private readonly items = new Map<number, Uint8Array>();
  private cur: Uint8Array | null = null;
  private offset = 0;
  private dmaHigh = 0;

  constructor(private readonly opts: FwCfgOptions) {
    const id = FW_CFG_VERSION | FW_CFG_VERSION_DMA;
    this.items.set(FW_CFG_SIGNATURE, ascii.encode("QEMU"));
    this.items.set(FW_CFG_ID, le(4, id));
    this.items.set(FW_CFG_RAM_SIZE, le(8, opts.ramSize));
    this.items.set(FW_CFG_NB_CPUS, le(2, 1));
    this.items.set(FW_CFG_MAX_CPUS, le(2, 1));
    this.items.set(FW_CFG_IRQ0_OVERRIDE, le(4, 1));
    // One HPET block at 0xFED00000 (struct hpet_fw_config: count, then per block its id, address, min tick and
    // page protection, packed; QEMU's array has 8 blocks).
    const hpet = new Uint8Array(1 + 8 * 15);
    hpet[0] = 1;
    hpet.set(le(4, 0x8086a201), 1);
    hpet.set(le(8, 0xfed0_0000), 5);
    this.items.set(FW_CFG_HPET, hpet);
    // Files, under the selectors QEMU 7.2 gives them (its files sorted by name from 0x20).
    const files: FwCfgFile[] = [
      { name: "bios-geometry", select: 0x20, data: new Uint8Array(0) },
      { name: "bootorder", select: 0x21, data: new Uint8Array(0) },
      // -boot reboot-timeout's default: -1, no reboot after a failed boot.
      { name: "etc/boot-fail-wait", select: 0x24, data: le(4, 0xffffffff) },
      { name: "etc/e820", select: 0x25, data: e820Table(opts.ramSize) },
      // PIIX4 sleep states S0-S5 as the pc machine reports them (S3 and S4 enabled).
      { name: "etc/system-states", select: 0x28, data: Uint8Array.of(0x80, 0, 0, 0x81, 0x82, 0x80) },
      { name: "etc/tpm/log", select: 0x2a, data: new Uint8Array(0) },
    ];
    // FWCfgFiles: BE32 count, then per file BE32 size, BE16 select, 2 reserved bytes and a 56-byte name.
    const dir = new Uint8Array(4 + files.length * 64);
    const dv = new DataView(dir.buffer);
    dv.setUint32(0, files.length);
    files.forEach((f, i) => {
      const at = 4 + i * 64;
      dv.setUint32(at, f.data.length);
      dv.setUint16(at + 4, f.select);
      dir.set(ascii.encode(f.name), at + 8);
      this.items.set(f.select, f.data);
    });
    this.items.set(FW_CFG_FILE_DIR, dir);
    this.reset();
  }

  /** Put the ports on `bus` (0x510-0x511 and 0x514-0x51B; 0x512-0x513 stay unassigned, as on QEMU). */
  attach(bus: PortBus): void {
    bus.register(FW_CFG_IO_BASE, 2, this, "fw-cfg");
    bus.register(FW_CFG_DMA_IO_BASE, 8, this, "fw-cfg-dma");
  }

  /** fw_cfg_reset: the signature selected, from its first byte (also the state at power-on). */
  reset(): void {
    this.select(FW_CFG_SIGNATURE);
    this.dmaHigh = 0;
  }

  /** fw_cfg_select: an item (or none, past the last key) from its first byte. */
  select(key: number): void {
    const k = key & ~FW_CFG_WRITE_CHANNEL & 0xffff;
    this.offset = 0;
    this.cur = (k & 0x3fff) < FW_CFG_MAX_ENTRY ? (this.items.get(k) ?? null) : null;
  }

  /** fw_cfg_read: the selected item's next byte, 0 past its end or without one. */
  private dataByte(): number {
    const c = this.cur;
    if (c === null || this.offset >= c.length) return 0;
    return c[this.offset++]!;
  }

  ioRead(port: number, size: AccessSize): number {
    if (port >= FW_CFG_DMA_IO_BASE) {
      let v = 0;
      for (let i = 0; i < size; i++) {
        const at = port - FW_CFG_DMA_IO_BASE + i;
        v |= (at < 8 ? DMA_SIGNATURE[at]! : 0xff) << (8 * i);
      }
      return v >>> 0;
    }
    if (size === 1) return this.dataByte();
    // Observed on QEMU 7.2: wider reads of the selector port are refused (0); one at the data port reads the data
    // byte, then unassigned 0x512-0x513 (0xFF each), then the DMA register's first byte.
    if (port === FW_CFG_IO_BASE) return 0;
    const data = this.dataByte();
    return size === 2 ? data | 0xff00 : (data | 0xffff00 | (DMA_SIGNATURE[0]! << 24)) >>> 0;
  }

  ioWrite(port: number, size: AccessSize, value: number): void {
    if (port === FW_CFG_IO_BASE) {
      if (size === 2) this.select(value);
      return;
    }
    if (size !== 4) return;
    // The DMA register is big-endian: the port's little-endian value is byte-swapped.
    const be = swap32(value);
    if (port === FW_CFG_DMA_IO_BASE) this.dmaHigh = be;
    else if (port === FW_CFG_DMA_IO_BASE + 4) this.dma(this.dmaHigh * 0x1_0000_0000 + be);
  }

  /** fw_cfg_dma_transfer: run the FWCfgDmaAccess at `addr` and write its control word back. */
  private dma(addr: number): void {
    this.dmaHigh = 0;
    const mem = this.opts.mem;
    const head = new Uint8Array(16);
    if (mem.read(addr, head)) {
      mem.write(addr, be32(FW_CFG_DMA_CTL_ERROR));
      return;
    }
    const hv = new DataView(head.buffer);
    const control = hv.getUint32(0);
    let length = hv.getUint32(4);
    let address = Number(hv.getBigUint64(8));
    if (control & FW_CFG_DMA_CTL_SELECT) this.select(control >>> 16);
    const read = (control & FW_CFG_DMA_CTL_READ) !== 0;
    const write = !read && (control & FW_CFG_DMA_CTL_WRITE) !== 0;
    if (!read && !write && !(control & FW_CFG_DMA_CTL_SKIP)) length = 0;
    let result = 0;
    while (length > 0 && !(result & FW_CFG_DMA_CTL_ERROR)) {
      const c = this.cur;
      let len: number;
      if (c === null || this.offset >= c.length) {
        // Past the item (or none): a read fills zeros, a write fails, a skip has nothing to skip.
        len = length;
        if (read && !zeroFill(mem, address, len)) result |= FW_CFG_DMA_CTL_ERROR;
        if (write) result |= FW_CFG_DMA_CTL_ERROR;
      } else {
        len = Math.min(length, c.length - this.offset);
        if (read && mem.write(address, c.subarray(this.offset, this.offset + len)))
          result |= FW_CFG_DMA_CTL_ERROR;
        // No item is writable here (QEMU's are only with a write callback the pc machine does not add).
        if (write) result |= FW_CFG_DMA_CTL_ERROR;
        this.offset += len;
      }
      address += len;
      length -= len;
    }
    mem.write(addr, be32(result));
  }
}

const ZEROS = new Uint8Array(64 * 1024);

/** Zero `len` bytes of guest memory at `gpa` in bounded pieces; false when the range leaves RAM (nothing written). */
function zeroFill(mem: GuestMemory, gpa: number, len: number): boolean {
  if (gpa + len > mem.size) return false;
  for (let done = 0; done < len; done += ZEROS.length) {
    mem.write(gpa + done, ZEROS.subarray(0, Math.min(ZEROS.length, len - done)));
  }
  return true;
}

function swap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

function be32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v);
  return b;
}
