/**
 * Guest-side PCI configuration access through configuration mechanism #1 (PCI Local Bus Specification 3.0,
 * §3.2.2.3.2): write an address dword to 0xCF8, then move data through 0xCFC-0xCFF. Every access is two port
 * exits, exactly what a guest kernel pays. Used to find the PIIX IDE function and to map its Bus Master BAR
 * the way firmware would when it did not run.
 */

import type { Vcpu } from "../hypervisor/hypervisor.ts";

export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_DATA = 0xcfc;

// Type 0 configuration header offsets (PCI 3.0 §6.1)
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BAR0 = 0x10;
/** BAR4 of the PIIX IDE function: the 16-byte Bus Master I/O block (82371SB datasheet, BMIBA at 0x20). */
export const PCI_BAR4 = 0x20;

export const PCI_COMMAND_IO = 0x0001;
export const PCI_COMMAND_MEMORY = 0x0002;
export const PCI_COMMAND_MASTER = 0x0004;

/** Intel 82371SB (PIIX3) IDE: vendor 8086, device 7010, class 01 01 (QEMU 7.2 `-machine pc`, 00:01.1). */
export const PIIX3_IDE_VENDOR = 0x8086;
export const PIIX3_IDE_DEVICE = 0x7010;
/** 82371AB (PIIX4) IDE, accepted too: same register set. */
export const PIIX4_IDE_DEVICE = 0x7111;
export const PCI_CLASS_STORAGE_IDE = 0x0101;

/** Where SeaBIOS-like firmware would put the Bus Master block when it assigns I/O BARs. */
export const DEFAULT_BM_BASE = 0xc000;

export interface PciAddress {
  bus: number;
  dev: number;
  fn: number;
}

function configAddress(a: PciAddress, off: number): number {
  // Bit 31 enable, bus 23:16, device 15:11, function 10:8, dword-aligned register 7:2.
  return (0x80000000 | (a.bus << 16) | (a.dev << 11) | (a.fn << 8) | (off & 0xfc)) >>> 0;
}

export function pciRead32(vcpu: Vcpu, a: PciAddress, off: number): number {
  vcpu.outl(PCI_CONFIG_ADDRESS, configAddress(a, off));
  return vcpu.inl(PCI_CONFIG_DATA) >>> 0;
}

export function pciRead16(vcpu: Vcpu, a: PciAddress, off: number): number {
  vcpu.outl(PCI_CONFIG_ADDRESS, configAddress(a, off));
  return vcpu.inw(PCI_CONFIG_DATA + (off & 2));
}

export function pciRead8(vcpu: Vcpu, a: PciAddress, off: number): number {
  vcpu.outl(PCI_CONFIG_ADDRESS, configAddress(a, off));
  return vcpu.inb(PCI_CONFIG_DATA + (off & 3));
}

export function pciWrite32(vcpu: Vcpu, a: PciAddress, off: number, value: number): void {
  vcpu.outl(PCI_CONFIG_ADDRESS, configAddress(a, off));
  vcpu.outl(PCI_CONFIG_DATA, value >>> 0);
}

export function pciWrite16(vcpu: Vcpu, a: PciAddress, off: number, value: number): void {
  vcpu.outl(PCI_CONFIG_ADDRESS, configAddress(a, off));
  vcpu.outw(PCI_CONFIG_DATA + (off & 2), value & 0xffff);
}

/**
 * Scan bus 0 for an IDE controller function of the PIIX family (what the guest's PCI core would do). Bus 0 is
 * enough: the i440FX machine has no bridges. Returns null when none answers.
 */
export function findPiixIde(vcpu: Vcpu): PciAddress | null {
  for (let dev = 0; dev < 32; dev++) {
    const fn0 = { bus: 0, dev, fn: 0 };
    const id0 = pciRead32(vcpu, fn0, PCI_VENDOR_ID);
    if ((id0 & 0xffff) === 0xffff) continue; // nothing at this slot
    // Multi-function devices (header type bit 7) have functions 1-7; the PIIX IDE is function 1.
    const multi = (pciRead8(vcpu, fn0, PCI_HEADER_TYPE) & 0x80) !== 0;
    for (let fn = 0; fn < (multi ? 8 : 1); fn++) {
      const a = { bus: 0, dev, fn };
      const id = fn === 0 ? id0 : pciRead32(vcpu, a, PCI_VENDOR_ID);
      if ((id & 0xffff) !== PIIX3_IDE_VENDOR) continue;
      const device = id >>> 16;
      if (device !== PIIX3_IDE_DEVICE && device !== PIIX4_IDE_DEVICE) continue;
      if (pciRead16(vcpu, a, PCI_CLASS_DEVICE) !== PCI_CLASS_STORAGE_IDE) continue;
      return a;
    }
  }
  return null;
}

/**
 * The Bus Master I/O base of the IDE function. When no firmware assigned BAR4 (it reads back as just the I/O
 * space indicator bit), program it to `defaultBase` and enable I/O decoding and bus mastering in the command
 * register, as SeaBIOS does at boot. Returns the base port.
 */
export function setupBusMaster(vcpu: Vcpu, a: PciAddress, defaultBase = DEFAULT_BM_BASE): number {
  let bar = pciRead32(vcpu, a, PCI_BAR4);
  let base = bar & 0xfffc;
  if (base === 0) {
    pciWrite32(vcpu, a, PCI_BAR4, defaultBase | 1);
    bar = pciRead32(vcpu, a, PCI_BAR4);
    base = bar & 0xfffc;
    if (base === 0) throw new Error("PCI IDE function refused a Bus Master base address (BAR4 stays 0)");
  }
  const cmd = pciRead16(vcpu, a, PCI_COMMAND);
  const want = cmd | PCI_COMMAND_IO | PCI_COMMAND_MASTER;
  if (want !== cmd) pciWrite16(vcpu, a, PCI_COMMAND, want);
  return base;
}
