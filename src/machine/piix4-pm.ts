/**
 * The PIIX4 power-management function (00:01.3) as QEMU 7.2's pc machine has it ("qemu-7.2" profile,
 * docs/conformance.md A5): its configuration space, the ACPI PM I/O block a guest maps by writing PMBA (40h)
 * and enabling it with PMREGMISC (80h) bit 0, and the GPE0 block at AFE0h.
 *
 * The PM I/O block (64 ports at PMBA bits 15:6) holds PM1a_STS/PM1a_EN (+0, ACPI 6.0 §4.8.3.1), PM1a_CNT (+4,
 * §4.8.3.2) and the 24-bit PM timer (+8, §4.8.3.3) counting at 3.579545 MHz from the machine's virtual clock;
 * the other ports of the block are not decoded. PM1a_STS bit 0 (TMR_STS) sets when the timer's bit 23 changes
 * (QEMU computes the next such overflow when the bit is cleared); the SCI is GSI 9, asserted while an enabled
 * status bit is set. Accesses are split and widened as QEMU's memory core does for these registers (status
 * and enable take 16-bit accesses, so a byte access at an odd port reads 0 or is dropped; PM1a_CNT takes any
 * byte written as the whole register; the timer answers every access with its count). Sleep requests (SLP_EN)
 * are handed to `onSleepRequest`; QEMU 7.2 powers off (type 0 or S4) or suspends (type 1) there.
 *
 * Not modelled (QEMU 7.2 has them; see A5): the SMBus host controller (decoded at B100h from reset), the PCI
 * and CPU hotplug registers (AE00h, AF00h) and the APM ports (B2h/B3h, an SMI).
 */

import type { PortBus } from "../hypervisor/bus.ts";
import type { InterruptController } from "../hypervisor/irq.ts";
import type { VirtualClock, VirtualTimer } from "./clock.ts";
import { PlainPciFunction } from "./pci-host.ts";

/** ACPI PM timer frequency, ACPI 6.0 §4.8.3.3 Table 4-19 (QEMU's PM_TIMER_FREQUENCY). */
const PM_TIMER_HZ = 3_579_545n;
const NS_PER_S = 1_000_000_000n;
/** The timer is 24 bits wide; TMR_STS sets when its top bit changes (ACPI 6.0 Table 4-16). */
const TMR_WRAP = 0x800000n;

/** PM1 status/enable bit 0: the timer's (ACPI 6.0 §4.8.3.1). */
const TMR_STS = 0x0001;
const TMR_EN = 0x0001;
/** The enables QEMU lets raise an SCI: timer, global lock, power button, RTC (ACPI_BITMASK_PM1_COMMON_ENABLED). */
const PM1_SCI_ENABLES = 0x0001 | 0x0020 | 0x0100 | 0x0400;
/** PM1_CNT: SLP_TYP bits 12:10 and SLP_EN (write-only), ACPI 6.0 §4.8.3.2. */
const SLP_EN = 0x2000;
const SLP_TYP_SHIFT = 10;
/** QEMU's pc machine: S4 is sleep type 2 (PIIX4 PM's "s4_val" default). */
const S4_TYPE = 2;

/** Where QEMU's PIIX4 PM puts its GPE0 block, and its length (2 status + 2 enable bytes). */
export const GPE0_BASE = 0xafe0;
const GPE0_LEN = 4;
/** The PM I/O block: 64 ports, base in PMBA (function 3, 40h) bits 15:6 (82371AB PIIX4 datasheet). */
const PM_BLOCK_LEN = 64;
const PMBA = 0x40;
const PMREGMISC = 0x80;
/** The SCI, wired to ISA IRQ 9 on QEMU's pc machine. */
export const SCI_LINE = 9;

/** A register of QEMU's memory API: its access rules (MemoryRegionOps valid/impl sizes) and handlers. */
interface Register {
  readonly offset: number;
  readonly length: number;
  /** Widest access it takes (valid.max_access_size); wider ones are split. */
  readonly validMax: number;
  /** Narrowest access its handler takes (impl.min_access_size); narrower ones are widened. */
  readonly implMin: number;
  /** Widest access its handler takes (impl.max_access_size). */
  readonly implMax: number;
  read(addr: number, size: number): number;
  write(addr: number, size: number, value: number): void;
}

const mask = (bytes: number): number => (bytes >= 4 ? 0xffffffff : (1 << (bytes * 8)) - 1);

/**
 * A read of `size` bytes at `off` of a block of `regs`, as QEMU's flatview_read_continue, memory_access_size and
 * access_with_adjusted_size compose it; ports no register covers read all-ones (unassigned I/O).
 */
function blockRead(regs: readonly Register[], blockLen: number, off: number, size: number): number {
  let result = 0;
  let done = 0;
  while (done < size) {
    const a = off + done;
    const r = regs.find((x) => a >= x.offset && a < x.offset + x.length);
    let l = size - done;
    let v: number;
    if (!r) {
      const next = regs.filter((x) => x.offset > a).reduce((m, x) => Math.min(m, x.offset), blockLen);
      l = Math.max(1, Math.min(l, next - a));
      v = 0xffffffff;
    } else {
      l = pieceSize(r, a, l);
      const access = Math.max(Math.min(l, r.implMax), r.implMin);
      v = 0;
      for (let i = 0; i < l; i += access)
        v = (v | ((r.read(a - r.offset + i, access) & mask(access)) << (i * 8))) >>> 0;
    }
    result = (result | ((v & mask(l)) << (done * 8))) >>> 0;
    done += l;
  }
  return result >>> 0;
}

function blockWrite(regs: readonly Register[], off: number, size: number, value: number): void {
  let done = 0;
  while (done < size) {
    const a = off + done;
    const r = regs.find((x) => a >= x.offset && a < x.offset + x.length);
    if (!r) {
      done++; // unassigned: dropped
      continue;
    }
    const l = pieceSize(r, a, size - done);
    const v = (value >>> (done * 8)) & mask(l);
    const access = Math.max(Math.min(l, r.implMax), r.implMin);
    for (let i = 0; i < l; i += access) r.write(a - r.offset + i, access, (v >>> (i * 8)) & mask(access));
    done += l;
  }
}

/** One piece of an access: what is left of the register, no wider than it takes nor than its alignment. */
function pieceSize(r: Register, a: number, left: number): number {
  const inReg = a - r.offset;
  let l = Math.min(left, r.offset + r.length - a);
  let max = r.validMax;
  const align = inReg & -inReg;
  if (align !== 0 && align < max) max = align;
  if (l > max) l = max;
  return l >= 4 ? 4 : l >= 2 ? 2 : 1;
}

export class Piix4Pm extends PlainPciFunction {
  /** PM1a_STS as stored (TMR_STS also follows the clock, `pm1Status`), PM1a_EN, PM1a_CNT. */
  private sts = 0;
  private en = 0;
  private cnt = 0;
  /** The next timer overflow, in timer ticks (QEMU's tmr.overflow_time; 0 at reset: TMR_STS reads set). */
  private overflow = 0n;
  private readonly gpeSts = new Uint8Array(GPE0_LEN / 2);
  private readonly gpeEn = new Uint8Array(GPE0_LEN / 2);
  private sciLevel = false;
  private readonly timer: VirtualTimer;
  /** Where the PM I/O block is decoded now (-1: not decoded). */
  private pmBase = -1;
  private readonly pmRegs: readonly Register[];
  private readonly gpeRegs: readonly Register[];
  /** SLP_EN written with sleep type `type`; "shutdown" for QEMU's soft-off and S4, "suspend" for type 1. */
  onSleepRequest: ((kind: "shutdown" | "suspend", type: number) => void) | null = null;

  constructor(
    private readonly bus: PortBus,
    private readonly irq: InterruptController,
    private readonly clock: VirtualClock,
    ids: { subsystemVendor?: number; subsystem?: number } = {},
  ) {
    super({ vendor: 0x8086, device: 0x7113, classCode: 0x068000, revision: 0x03, status: 0x0280, ...ids });
    const c = this.config;
    c[0x3d] = 0x01; // INTA
    c[PMBA] = 0x01; // PMBA: I/O space indicator (read as written otherwise, as QEMU)
    // As read from QEMU 7.2: DEVRESB, DEVACTB, the SMBus base (B100h) and host configuration (enabled).
    c[0x5f] = 0x10;
    c[0x63] = 0x60;
    c[0x90] = 0x01;
    c[0x91] = 0xb1;
    c[0xd2] = 0x09;
    this.captureResetState();
    this.timer = clock.timer(() => this.updateSci());
    this.pmRegs = [
      {
        offset: 0,
        length: 4,
        validMax: 2,
        implMin: 2,
        implMax: 4,
        read: (addr) => (addr === 0 ? this.pm1Status() : addr === 2 ? this.en : 0),
        write: (addr, _size, v) => {
          if (addr === 0) this.writeStatus(v & 0xffff);
          else if (addr === 2) this.en = v & 0xffff;
          else return;
          this.updateSci();
        },
      },
      {
        offset: 4,
        length: 2,
        validMax: 2,
        implMin: 2,
        implMax: 4,
        read: () => this.cnt,
        write: (_addr, _size, v) => this.writeControl(v & 0xffff),
      },
      {
        offset: 8,
        length: 4,
        validMax: 4,
        implMin: 4,
        implMax: 4,
        read: () => Number(this.ticks() & 0xffffffn),
        write: () => {},
      },
    ];
    this.gpeRegs = [
      {
        offset: 0,
        length: GPE0_LEN,
        validMax: 4,
        implMin: 1,
        implMax: 1,
        read: (addr) => (addr < 2 ? this.gpeSts[addr]! : this.gpeEn[addr - 2]!),
        write: (addr, _size, v) => {
          if (addr < 2) this.gpeSts[addr] = this.gpeSts[addr]! & ~v;
          else this.gpeEn[addr - 2] = v & 0xff;
          this.updateSci();
        },
      },
    ];
    bus.register(
      GPE0_BASE,
      GPE0_LEN,
      {
        ioRead: (port, size) => blockRead(this.gpeRegs, GPE0_LEN, port - GPE0_BASE, size),
        ioWrite: (port, size, value) => blockWrite(this.gpeRegs, port - GPE0_BASE, size, value),
      },
      "piix4-gpe0",
    );
  }

  override configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    super.configWrite(offset, size, value);
    // QEMU's pm_write_config: PMBA or PMREGMISC written, the block moves or turns on or off.
    if ((offset <= PMREGMISC && offset + size > PMREGMISC) || (offset < PMBA + 4 && offset + size > PMBA))
      this.mapPmBlock();
  }

  /** The reset (QEMU's piix4_pm_reset): registers cleared, timer stopped, SCI low, the block unmapped. */
  override reset(deviceArea: boolean): void {
    super.reset(deviceArea);
    this.sts = this.en = this.cnt = 0;
    this.overflow = 0n;
    this.timer.del();
    this.gpeSts.fill(0);
    this.gpeEn.fill(0);
    this.updateSci();
    this.mapPmBlock();
  }

  private mapPmBlock(): void {
    const c = this.config;
    const base = (c[PMBA]! | (c[PMBA + 1]! << 8)) & 0xffc0;
    const want = c[PMREGMISC]! & 1 ? base : -1;
    if (want === this.pmBase) return;
    if (this.pmBase >= 0) this.bus.unregister(this.pmBase);
    this.pmBase = -1;
    if (want < 0) return;
    try {
      this.bus.register(
        want,
        PM_BLOCK_LEN,
        {
          ioRead: (port, size) => blockRead(this.pmRegs, PM_BLOCK_LEN, port - want, size),
          ioWrite: (port, size, value) => blockWrite(this.pmRegs, port - want, size, value),
        },
        "piix4-pm",
      );
      this.pmBase = want;
    } catch {
      // Over ports another device decodes: QEMU overlaps the regions; here the block stays off (A5).
    }
  }

  /** The timer count: the virtual clock in 3.579545 MHz ticks (QEMU's acpi_pm_tmr_get_clock). */
  private ticks(): bigint {
    return (this.clock.ns * PM_TIMER_HZ) / NS_PER_S;
  }

  private overflowNs(): bigint {
    return (this.overflow * NS_PER_S) / PM_TIMER_HZ;
  }

  /** PM1a_STS: TMR_STS sets once the clock reaches the next overflow (QEMU's acpi_pm1_evt_get_sts). */
  private pm1Status(): number {
    if (this.clock.ns >= this.overflowNs()) this.sts |= TMR_STS;
    return this.sts;
  }

  /** Write-one-to-clear; clearing TMR_STS computes the next overflow (bit 23 of the count changing). */
  private writeStatus(v: number): void {
    if (this.pm1Status() & v & TMR_STS) this.overflow = (this.ticks() + TMR_WRAP) & ~(TMR_WRAP - 1n);
    this.sts &= ~v;
  }

  private writeControl(v: number): void {
    this.cnt = v & ~SLP_EN;
    if (!(v & SLP_EN)) return;
    const type = (v >> SLP_TYP_SHIFT) & 7;
    if (type === 0 || type === S4_TYPE) this.onSleepRequest?.("shutdown", type);
    else if (type === 1) this.onSleepRequest?.("suspend", type);
  }

  /** QEMU's acpi_update_sci: the SCI level, and the timer armed for the next overflow while it can signal. */
  private updateSci(): void {
    const sts = this.pm1Status();
    const level = (sts & this.en & PM1_SCI_ENABLES) !== 0 || (this.gpeSts[0]! & this.gpeEn[0]!) !== 0;
    if (level !== this.sciLevel) {
      this.sciLevel = level;
      if (level) this.irq.raise(SCI_LINE);
      else this.irq.lower(SCI_LINE);
    }
    if (this.en & TMR_EN && !(sts & TMR_STS)) this.timer.mod(this.overflowNs());
    else this.timer.del();
  }
}
