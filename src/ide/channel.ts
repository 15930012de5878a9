/**
 * One IDE channel (primary 0x1F0-0x1F7 + 0x3F6, IRQ 14; secondary 0x170-0x177 + 0x376, IRQ 15), as QEMU's
 * IDEBus: the register interface both device positions share, device selection, the Device Control register
 * (nIEN, SRST, HOB), the interrupt line and the channel's DMA engine. Each position is an ATA core (core.ts),
 * which runs its drive's commands and transfers; the channel routes register accesses to the selected one.
 */

import type { AccessSize, PortIoDevice } from "../hypervisor/bus.ts";
import { type GuestMemory, isFault, type MemoryFault } from "../hypervisor/memory.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import {
  ATA_CMD,
  CTL_HOB,
  CTL_NIEN,
  CTL_SRST,
  DEV_DEV,
  REG_DATA,
  REG_DEVICE,
  REG_ERROR,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS,
  ST_BSY,
  ST_DRQ,
} from "../spec/ata.ts";
import { type AtaBus, AtaCore } from "./core.ts";
import { Drive, type DriveConfig } from "./device.ts";
import type { IdeDmaOps } from "./dma-ops.ts";
import { attachAbsentDevice0, QEMU_ABSENT_DEVICE0_COMMANDS } from "./hd/absent.ts";
import { readData16, transferString, writeData16 } from "./pio.ts";
import { type QemuIdeTrace, qemuIdeTraceText } from "./qemu-trace.ts";
import { driveKind } from "./registry.ts";
import type { CompatProfile } from "./compat.ts";

export interface ChannelOptions {
  index: 0 | 1;
  master?: DriveConfig;
  slave?: DriveConfig;
  mem: GuestMemory;
  /** Drive the channel's interrupt line (level). */
  setIrq: (level: boolean) => void;
  /** The channel's DMA engine (the PIIX Bus Master, or another implementation). */
  dma: IdeDmaOps;
  tracer?: () => Tracer | null;
  /** Whose behaviour the channel follows where the standard and QEMU 7.2 differ (default "xenide"). */
  compat?: CompatProfile;
  /**
   * Run work on the host's next main-loop iteration (QEMU's bottom halves): the "qemu-7.2" profile's software
   * reset. Default: the next turn of the event loop.
   */
  defer?: (work: () => void) => void;
}

/** The control block port (0x3F6/0x376): Alternate Status on read, Device Control on write. */
class ControlPort implements PortIoDevice {
  constructor(private readonly ch: IdeChannel) {}
  ioRead(port: number, size: AccessSize): number {
    const v = this.ch.altStatus();
    const t = this.ch.qemuTrace;
    if (t !== null && t.on("ide_status_read"))
      t.emit("ide_status_read", qemuIdeTraceText.statusRead(port, v, this.ch.index, this.ch.unit));
    return size === 1 ? v : v | (size === 2 ? 0xff00 : 0xffffff00);
  }
  ioWrite(port: number, _size: AccessSize, value: number): void {
    const t = this.ch.qemuTrace;
    if (t !== null && t.on("ide_ctrl_write"))
      t.emit("ide_ctrl_write", qemuIdeTraceText.ctrlWrite(port, value & 0xff, this.ch.index));
    this.ch.writeControl(value & 0xff);
  }
}

function core(ch: IdeChannel, unit: 0 | 1, config: DriveConfig | undefined, position: string): AtaCore {
  if (!config) {
    if (unit === 1 || ch.compat !== "qemu-7.2") return new AtaCore(unit, ch, null, null);
    // QEMU 7.2 runs commands written to an empty device 0 as a hard disk without a backend (A4).
    const d = new AtaCore(unit, ch, null, null, QEMU_ABSENT_DEVICE0_COMMANDS);
    attachAbsentDevice0(d);
    return d;
  }
  const kind = driveKind(config.kind);
  return new AtaCore(unit, ch, new Drive(config, position, kind.medium), kind);
}

export class IdeChannel implements PortIoDevice, AtaBus {
  readonly index: 0 | 1;
  readonly devices: [AtaCore, AtaCore];
  /** No drive at all: every register reads 0 (observed on QEMU 7.2). */
  readonly empty: boolean;
  /**
   * No drive, and nothing runs: writes and commands go nowhere. QEMU 7.2 still runs commands written to an empty
   * channel's device 0 (A4: interrupts, the Bus Master's Interrupt bit, SMART data through the data port), so
   * in the "qemu-7.2" profile an empty channel is not inert.
   */
  private readonly inert: boolean;
  readonly dma: IdeDmaOps;
  readonly control: PortIoDevice;
  readonly mem: GuestMemory;
  /** Device Control register as last written. */
  ctl = 0;
  /** Selected device position (Device register bit 4). */
  unit: 0 | 1 = 0;
  private lineLevel = false;
  private readonly setIrq: (level: boolean) => void;
  private readonly tracer: () => Tracer | null;
  readonly compat: CompatProfile;
  /** The "qemu-7.2" profile (decided once, here). */
  private readonly qemu: boolean;
  private readonly defer: (work: () => void) => void;
  /**
   * QEMU's IDE trace events (`-trace ide_*` on the launcher; qemu-trace.ts), or null: port accesses then take
   * the untraced path after one comparison.
   */
  qemuTrace: QemuIdeTrace | null = null;

  constructor(opts: ChannelOptions) {
    this.compat = opts.compat ?? "xenide";
    this.qemu = this.compat === "qemu-7.2";
    this.defer = opts.defer ?? ((work) => setImmediate(work));
    this.index = opts.index;
    this.dma = opts.dma;
    this.mem = opts.mem;
    this.setIrq = opts.setIrq;
    this.tracer = opts.tracer ?? (() => null);
    const name = opts.index === 0 ? "primary" : "secondary";
    this.devices = [core(this, 0, opts.master, `${name}-master`), core(this, 1, opts.slave, `${name}-slave`)];
    this.empty = !this.devices[0].present && !this.devices[1].present;
    this.inert = this.empty && !this.qemu;
    this.control = new ControlPort(this);
  }

  get selected(): AtaCore {
    return this.devices[this.unit];
  }

  // ------------------------------------------------------------------------------------------------
  // Interrupt line, as QEMU 7.2 drives it: a completion raises the line unless nIEN is set at that moment (then
  // nothing is remembered); reading Status or writing a command lowers it; nIEN changes never move it. (ATA
  // would keep the interrupt pending behind nIEN; see docs/conformance.md A3.) Every raise also reaches the DMA
  // engine (the Bus Master's Interrupt bit, BMIDE §2.2: "set when the IDE device asserts its interrupt line").

  raiseIrq(): void {
    if (this.ctl & CTL_NIEN) return;
    this.dma.interrupt();
    this.setLine(true);
  }

  private lowerIrq(): void {
    this.setLine(false);
  }

  private setLine(level: boolean): void {
    if (level !== this.lineLevel) {
      this.lineLevel = level;
      this.setIrq(level);
    }
  }

  /** The line level as the interrupt controller sees it. */
  get irqLevel(): boolean {
    return this.lineLevel;
  }

  // ------------------------------------------------------------------------------------------------
  // Command block registers.

  ioRead(port: number, size: AccessSize): number {
    if (this.qemuTrace !== null) return this.tracedRead(port, size, this.qemuTrace);
    const reg = port & 7;
    if (reg === 0 /* REG_DATA: a literal on the hottest path */) {
      if (size === 2) return this.readData16();
      if (size === 4) {
        // QEMU 7.2's ide_data_readl: fewer than 4 bytes left in a data-in block read 0 and move nothing (A8).
        if (this.qemu === true && this.shortDword(false)) return 0;
        return (this.readData16() | (this.readData16() << 16)) >>> 0;
      }
      // An 8-bit read of the data port takes a whole word and returns its low byte (QEMU 7.2, for the
      // Solaris loader; the drive sees one 16-bit cycle).
      return this.readData16() & 0xff;
    }
    if (size === 1) return this.readReg(reg);
    // Wider accesses to the 8-bit registers: split into byte accesses (QEMU: inw 0x1F2 = NSECT | LBAL << 8);
    // a dword read has no handler off the data port and floats high.
    if (size === 2) return this.readReg(reg) | ((reg < 7 ? this.readReg(reg + 1) : 0xff) << 8);
    return 0xffffffff;
  }

  ioWrite(port: number, size: AccessSize, value: number): void {
    if (this.qemuTrace !== null) return this.tracedWrite(port, size, value, this.qemuTrace);
    const reg = port & 7;
    if (reg === 0 /* REG_DATA */) {
      if (size === 2) this.writeData16(value);
      else if (size === 4) {
        // QEMU 7.2's ide_data_writel drops a dword that does not fit in the rest of a data-out block (A8).
        if (this.qemu === true && this.shortDword(true)) return;
        this.writeData16(value & 0xffff);
        this.writeData16(value >>> 16);
      }
      // 8-bit writes to the data port are ignored (observed on QEMU 7.2).
      return;
    }
    if (size === 1) this.writeReg(reg, value);
    else if (size === 2) {
      this.writeReg(reg, value & 0xff);
      if (reg < 7) this.writeReg(reg + 1, (value >>> 8) & 0xff);
    }
  }

  /**
   * `ioRead` with QEMU's trace events, emitted where QEMU 7.2's handlers emit them (hw/ide/core.c): a byte
   * register read as ide_ioport_read (a word read of the byte registers is two of them, as QEMU's port I/O
   * splits it); a data word as ide_data_readw only when it comes out of a data-in block (ide_data_readw returns 0
   * untraced otherwise); a data dword as ide_data_readl, also outside a data-in block (its 0 is traced), but not
   * when the block has fewer than 4 bytes left; a data byte as the word read it makes plus ide_ioport_read.
   */
  private tracedRead(port: number, size: AccessSize, t: QemuIdeTrace): number {
    const reg = port & 7;
    if (reg === REG_DATA) {
      const unit = this.unit;
      const d = this.devices[unit];
      const dataIn = !this.inert && (d.status & ST_DRQ) !== 0 && !d.dataOut;
      const left = d.dataEnd - d.dataPtr;
      if (size === 4) {
        if (this.qemu && this.shortDword(false)) return 0; // A8, as the untraced path
        const v = (this.readData16() | (this.readData16() << 16)) >>> 0;
        if ((!dataIn || left >= 4) && t.on("ide_data_readl"))
          t.emit("ide_data_readl", qemuIdeTraceText.data(false, true, port, v, this.index, unit));
        return v;
      }
      const w = this.readData16();
      if (dataIn && left >= 2 && t.on("ide_data_readw"))
        t.emit("ide_data_readw", qemuIdeTraceText.data(false, false, port, w, this.index, unit));
      if (size === 2) return w;
      if (t.on("ide_ioport_read"))
        t.emit("ide_ioport_read", qemuIdeTraceText.ioportRead(port, REG_DATA, w & 0xff, this.index, unit));
      return w & 0xff;
    }
    if (size === 1) return this.tracedReadReg(port, reg, t);
    if (size === 2)
      return (
        this.tracedReadReg(port, reg, t) | ((reg < 7 ? this.tracedReadReg(port + 1, reg + 1, t) : 0xff) << 8)
      );
    return 0xffffffff;
  }

  private tracedReadReg(port: number, reg: number, t: QemuIdeTrace): number {
    const unit = this.unit;
    const v = this.readReg(reg);
    if (t.on("ide_ioport_read"))
      t.emit("ide_ioport_read", qemuIdeTraceText.ioportRead(port, reg, v, this.index, unit));
    return v;
  }

  /**
   * `ioWrite` with QEMU's trace events: every byte register write as ide_ioport_write, before anything is
   * decided (a write the busy device ignores is traced too), naming the device selected before it; a command
   * also as ide_exec_cmd; data words and dwords as ide_data_writew/writel, before the DRQ check; a data byte as
   * ide_ioport_write (the write itself goes nowhere).
   */
  private tracedWrite(port: number, size: AccessSize, value: number, t: QemuIdeTrace): void {
    const reg = port & 7;
    if (reg === REG_DATA) {
      const unit = this.unit;
      if (size === 2) {
        if (t.on("ide_data_writew"))
          t.emit(
            "ide_data_writew",
            qemuIdeTraceText.data(true, false, port, value & 0xffff, this.index, unit),
          );
        this.writeData16(value & 0xffff);
      } else if (size === 4) {
        if (t.on("ide_data_writel"))
          t.emit("ide_data_writel", qemuIdeTraceText.data(true, true, port, value >>> 0, this.index, unit));
        if (this.qemu && this.shortDword(true)) return;
        this.writeData16(value & 0xffff);
        this.writeData16(value >>> 16);
      } else if (t.on("ide_ioport_write")) {
        t.emit(
          "ide_ioport_write",
          qemuIdeTraceText.ioportWrite(port, REG_DATA, value & 0xff, this.index, unit),
        );
      }
      return;
    }
    if (size === 1) this.tracedWriteReg(port, reg, value & 0xff, t);
    else if (size === 2) {
      this.tracedWriteReg(port, reg, value & 0xff, t);
      if (reg < 7) this.tracedWriteReg(port + 1, reg + 1, (value >>> 8) & 0xff, t);
    }
  }

  private tracedWriteReg(port: number, reg: number, v: number, t: QemuIdeTrace): void {
    const unit = this.unit;
    if (t.on("ide_ioport_write"))
      t.emit("ide_ioport_write", qemuIdeTraceText.ioportWrite(port, reg, v, this.index, unit));
    if (reg === REG_STATUS && t.on("ide_exec_cmd"))
      t.emit("ide_exec_cmd", qemuIdeTraceText.execCmd(v, this.index, unit));
    this.writeReg(reg, v);
  }

  readReg(reg: number): number {
    if (this.empty) return 0;
    const d = this.devices[this.unit];
    const tf = d.tf;
    const hob = (this.ctl & CTL_HOB) !== 0;
    switch (reg) {
      case REG_ERROR:
        // An absent device does not drive the bus; QEMU 7.2 shows an absent device 0's stale registers (A4).
        if (!d.present && (d.unit === 1 || !this.qemu)) return 0;
        return hob ? tf.hobFeatures : d.error;
      case REG_SECTOR_COUNT:
        return hob ? tf.hobSectorCount : tf.sectorCount;
      case REG_LBA_LOW:
        return hob ? tf.hobLbaLow : tf.lbaLow;
      case REG_LBA_MID:
        return hob ? tf.hobLbaMid : tf.lbaMid;
      case REG_LBA_HIGH:
        return hob ? tf.hobLbaHigh : tf.lbaHigh;
      case REG_DEVICE:
        return tf.device;
      default: {
        const st = d.present || (d.unit === 0 && this.qemu) ? d.status : 0;
        this.lowerIrq();
        return st;
      }
    }
  }

  altStatus(): number {
    if (this.empty) return 0;
    const d = this.devices[this.unit];
    return d.present || (d.unit === 0 && this.qemu) ? d.status : 0;
  }

  writeReg(reg: number, v: number): void {
    if (this.inert) return;
    if (reg === REG_STATUS) {
      this.ctl &= ~CTL_HOB;
      this.lowerIrq();
      this.command(v);
      return;
    }
    // Writes to the command block are ignored while the selected device is busy or transferring data
    // (ATA-6 §7.1: "the host shall not write ... when BSY or DRQ is set"; QEMU 7.2 ignores them).
    if (this.devices[this.unit].status & (ST_BSY | ST_DRQ)) return;
    this.ctl &= ~CTL_HOB; // any command block write clears HOB (ATA-6 §7.9)
    this.devices[0].tf.latch(reg, v);
    this.devices[1].tf.latch(reg, v);
    if (reg === REG_DEVICE) this.unit = v & DEV_DEV ? 1 : 0;
  }

  /** A command written to the selected device. */
  private command(op: number): void {
    const d = this.devices[this.unit];
    // Commands to an absent device are ignored (observed on QEMU 7.2), except QEMU's to an absent device 0,
    // which has a command table of its own (A4).
    if (!d.commands) return;
    // Ignored while busy (observed on QEMU 7.2), except DEVICE RESET to a PACKET device (ATA-6 §8.7).
    if (d.status & (ST_BSY | ST_DRQ) && !(op === ATA_CMD.DEVICE_RESET && d.kind?.packet)) return;
    const t = this.tracer();
    if (t)
      t.emit({ ev: "note", text: `ata ch${this.index}.${d.unit} cmd 0x${op.toString(16).padStart(2, "0")}` });
    d.execute(op);
  }

  // ------------------------------------------------------------------------------------------------
  // Device Control and resets.

  /** Device Control: SRST edges, nIEN (consulted when an interrupt is raised), HOB readback select. */
  writeControl(v: number): void {
    const old = this.ctl;
    this.ctl = v;
    if (this.qemu) {
      if (v & CTL_SRST && !(old & CTL_SRST)) this.qemuSrst();
      return;
    }
    if (!this.empty) {
      if (v & CTL_SRST && !(old & CTL_SRST)) this.assertSrst();
      else if (!(v & CTL_SRST) && old & CTL_SRST) this.releaseSrst();
    }
  }

  /**
   * SRST 0->1: every device stops what it does and shows BSY for as long as SRST stays set (ATA-6 §9.2;
   * QEMU 7.2 drops BSY early, see docs/conformance.md B1).
   */
  private assertSrst(): void {
    for (const d of this.devices) {
      if (!d.kind) continue;
      d.cancel();
      d.status = ST_BSY | d.kind.readyStatus;
    }
  }

  /**
   * SRST 1->0: the reset runs; signature and diagnostic result; device 0 selected. Device 0 then signals the end
   * of its diagnostic with an interrupt, as QEMU 7.2 does (guests poll BSY after a reset and do not depend on it;
   * following QEMU keeps the Bus Master Interrupt bit the same on both).
   */
  private releaseSrst(): void {
    for (const d of this.devices) d.reset();
    this.unit = 0;
    this.raiseIrq();
  }

  /**
   * QEMU 7.2's software reset (docs/conformance.md B1-B3): the 0->1 edge of SRST only sets BSY; the reset itself
   * runs on the next main-loop iteration (a bottom half), whether SRST is still 1 or not, and then clears the
   * SRST bit QEMU keeps, so that the next write with SRST set is a new edge. Each device is reset and runs its
   * diagnostic, which raises the interrupt; the selected device stays selected.
   */
  private qemuSrst(): void {
    for (const d of this.devices) d.status |= ST_BSY;
    this.defer(() => {
      for (const d of this.devices) {
        if (d.kind) d.cancel();
        d.reset();
      }
      this.raiseIrq();
      this.ctl &= ~CTL_SRST;
    });
  }

  /**
   * A hardware reset of the channel (the machine's RESET; QEMU's ide_bus_reset): device 0 selected, Device
   * Control cleared (nIEN, SRST, HOB), both positions reset (`AtaCore.hardReset`), and the interrupt line low,
   * as RESET leaves INTRQ deasserted (ATA-6 §5.2.9). QEMU 7.2 does not lower it: an interrupt raised before the
   * reset stays asserted until the guest reads Status or writes a command (observed over qtest), so the
   * "qemu-7.2" profile leaves the line as it is. No interrupt follows. The DMA engine is its owner's to reset.
   */
  hardReset(): void {
    this.unit = 0;
    this.ctl = 0;
    for (const d of this.devices) d.hardReset();
    if (!this.qemu) this.lowerIrq();
  }

  /**
   * EXECUTE DEVICE DIAGNOSTIC (ATA-6 §8.11): both devices run it; each shows the signature and the diagnostic
   * code, and device 0 is selected afterwards (QEMU 7.2 likewise clears DEV).
   */
  executeDiagnostic(): void {
    if (this.qemu) {
      // QEMU 7.2: only the executing device; the selected position stays (docs/conformance.md B4).
      this.devices[this.unit].diagnose();
      return;
    }
    for (const d of this.devices) d.diagnose();
    this.unit = 0;
  }

  // ------------------------------------------------------------------------------------------------
  // Data port.

  /**
   * The selected device offers a data block in the given direction (out: host to device) with fewer than 4
   * bytes of it left: where QEMU 7.2 refuses a dword access (A8).
   */
  private shortDword(out: boolean): boolean {
    const d = this.devices[this.unit];
    return (d.status & ST_DRQ) !== 0 && d.dataOut === out && d.dataEnd - d.dataPtr < 4;
  }

  private readData16(): number {
    if (this.inert === true) return 0; // strict: a bare boolean test is a generic truthiness check
    return readData16(this.devices[this.unit]);
  }

  private writeData16(v: number): void {
    if (this.inert) return;
    writeData16(this.devices[this.unit], v);
  }

  /**
   * REP INSW/INSD/OUTSW/OUTSD fast path: whole runs of the DRQ block move between the drive buffer and guest
   * memory in one copy per block. Items beyond the data the drive offers read as zero and are dropped on
   * write, exactly as the item-by-item path would do.
   */
  ioString(
    port: number,
    size: AccessSize,
    dir: "in" | "out",
    mem: GuestMemory,
    gpa: number,
    count: number,
    df: boolean,
  ): number | MemoryFault {
    // Traced, every item is a port access of its own, as QEMU serves string I/O item by item.
    if ((port & 7) !== REG_DATA || size === 1 || df || this.qemuTrace !== null)
      return this.stringSlow(port, size, dir, mem, gpa, count, df);
    const total = count * size;
    // QEMU 7.2 serves a dword item only from 4 bytes of the block (A8): runs move in whole dwords there.
    const granule = this.qemu && size === 4 ? 4 : 1;
    const done = this.inert
      ? 0
      : transferString(this.devices[this.unit], dir === "in", mem, gpa, total, granule);
    if (isFault(done)) return done;
    if (done < total && dir === "in") {
      const v = mem.view(gpa + done, total - done);
      if (isFault(v)) return v;
      v.fill(0);
      mem.written(gpa + done, total - done);
    }
    return count;
  }

  private stringSlow(
    port: number,
    size: AccessSize,
    dir: "in" | "out",
    mem: GuestMemory,
    gpa: number,
    count: number,
    df: boolean,
  ): number | MemoryFault {
    const step = df ? -size : size;
    for (let i = 0; i < count; i++) {
      const a = gpa + i * step;
      if (dir === "in") {
        const v = this.ioRead(port, size);
        const f = size === 1 ? mem.writeU8(a, v) : size === 2 ? mem.writeU16(a, v) : mem.writeU32(a, v);
        if (f) return f;
      } else {
        const v = size === 1 ? mem.readU8(a) : size === 2 ? mem.readU16(a) : mem.readU32(a);
        if (isFault(v)) return v;
        this.ioWrite(port, size, v);
      }
    }
    return count;
  }

  /** Orderly power-down: each drive writes back what its write cache holds (`AtaCore.writeBack`). */
  writeBack(): void {
    for (const d of this.devices) d.writeBack();
  }

  /** True when a storage request of this channel is still outstanding. */
  get busy(): boolean {
    return this.devices.some((d) => d.requests !== null && d.requests.pending);
  }
}
