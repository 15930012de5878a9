/**
 * One IDE channel (primary 0x1F0-0x1F7 + 0x3F6, IRQ 14; secondary 0x170-0x177 + 0x376, IRQ 15): two device
 * positions sharing the register interface, the device control register, the interrupt line and the channel's
 * Bus Master engine. This file holds the ATA protocol engine: register reads and writes, the data port, command
 * dispatch through the table in commands.ts with one completion epilogue, and the storage requests behind PIO,
 * DMA, flush and TRIM, which complete at once with the sync engine and later with the async one.
 */

import type { AccessSize, PortIoDevice } from "../hypervisor/bus.ts";
import { type GuestMemory, isFault, type MemoryFault } from "../hypervisor/memory.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import type { IoError, IoRequest } from "../storage/types.ts";
import {
  BM_ST_ACTIVE,
  BM_ST_ERROR,
  BM_ST_INTR,
  CTL_HOB,
  CTL_NIEN,
  CTL_SRST,
  DEV_ALWAYS_ON,
  DEV_DEV,
  ERR_ABRT,
  ERR_IDNF,
  ERR_UNC,
  REG_DEVICE,
  REG_ERROR,
  REG_LBAH,
  REG_LBAL,
  REG_LBAM,
  REG_NSECT,
  REG_STATUS,
  ST_BSY,
  ST_DF,
  ST_DRDY,
  ST_DRQ,
  ST_DSC,
  ST_ERR,
} from "./ata.ts";
import { BusMaster, PrdWalk, Segments } from "./bmdma.ts";
import { CMD_FLAG_DSC, COMMAND_TABLE } from "./commands.ts";
import { type DriveConfig, EndTransfer, IdeDevice, IO_BUF_SECTORS } from "./device.ts";

const CMD_DIAG = 0x90;

export interface ChannelOptions {
  index: 0 | 1;
  master?: DriveConfig;
  slave?: DriveConfig;
  mem: GuestMemory;
  /** Drive the channel's interrupt line (level). */
  setIrq: (level: boolean) => void;
  /** PCI command register bit 2: may the bus master engine access memory? */
  busMasterEnabled: () => boolean;
  tracer?: () => Tracer | null;
}

/** The control block port (0x3F6/0x376): Alternate Status on read, Device Control on write. */
class ControlPort implements PortIoDevice {
  constructor(private readonly ch: IdeChannel) {}
  ioRead(_port: number, size: AccessSize): number {
    const v = this.ch.altStatus();
    return size === 1 ? v : v | (size === 2 ? 0xff00 : 0xffffff00);
  }
  ioWrite(_port: number, _size: AccessSize, value: number): void {
    this.ch.writeControl(value & 0xff);
  }
}

export class IdeChannel implements PortIoDevice {
  readonly index: 0 | 1;
  readonly devices: [IdeDevice, IdeDevice];
  /** No drive at all: every register reads 0 and writes do nothing visible (observed on QEMU 7.2). */
  readonly empty: boolean;
  readonly bm: BusMaster;
  readonly control: PortIoDevice;
  readonly mem: GuestMemory;
  /** Device Control register as last written. */
  ctl = 0;
  /** Selected device position (Device register bit 4). */
  unit: 0 | 1 = 0;
  private lineLevel = false;
  private readonly setIrq: (level: boolean) => void;
  private readonly busMasterEnabled: () => boolean;
  private readonly tracer: () => Tracer | null;
  /** The device whose DMA command owns the bus master engine. */
  private dmaDev: IdeDevice | null = null;
  private readonly segs = new Segments();
  private readonly req: IoRequest = { op: "read", tag: 0, sector: 0 };
  /** The DMA transfer in flight: its first sector, its sector count, whether Active stays set at the end. */
  private dmaLba = 0;
  private dmaCount = 0;
  private dmaStayActive = false;
  /** The bounce buffer of the DMA in flight (PRD segments that are not whole sectors), or null. */
  private dmaBounce: Uint8Array | null = null;
  /** Kept from command to command; dropped when a cancelled request might still write into it. */
  private bounceBuf: Uint8Array | null = null;

  constructor(opts: ChannelOptions) {
    this.index = opts.index;
    const name = opts.index === 0 ? "primary" : "secondary";
    this.devices = [
      new IdeDevice(0, opts.master, `${name}-master`),
      new IdeDevice(1, opts.slave, `${name}-slave`),
    ];
    this.empty = !this.devices[0].present && !this.devices[1].present;
    this.mem = opts.mem;
    this.setIrq = opts.setIrq;
    this.busMasterEnabled = opts.busMasterEnabled;
    this.tracer = opts.tracer ?? (() => null);
    this.bm = new BusMaster({ bmStart: () => this.runDma(), bmStop: () => this.bmStopped() });
    this.control = new ControlPort(this);
    for (const d of this.devices) {
      // Every submit is followed by a reap, which is all a sync engine needs (its completions are ready
      // when submit returns); only the async engine must call back from the event loop.
      if (d.engine && d.engine.kind !== "sync") {
        const dev = d;
        d.engine.onReady = () => this.reap(dev);
      }
    }
  }

  get selected(): IdeDevice {
    return this.devices[this.unit];
  }

  // ------------------------------------------------------------------------------------------------
  // Interrupt line, as QEMU 7.2 drives it: a completion raises the line unless nIEN is set at that moment (then
  // nothing is remembered); reading Status or writing a command lowers it; nIEN changes never move it. (ATA
  // would keep the interrupt pending behind nIEN; see docs/conformance.md A3.) Every raise also sets the Bus
  // Master Interrupt bit (BMIDE §2.2: "set when the IDE device asserts its interrupt line").

  raiseIrq(): void {
    if (this.ctl & CTL_NIEN) return;
    this.bm.status |= BM_ST_INTR;
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
    const reg = port & 7;
    if (reg === 0) {
      if (size === 2) return this.readData16();
      if (size === 4) return (this.readData16() | (this.readData16() << 16)) >>> 0;
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
    const reg = port & 7;
    if (reg === 0) {
      if (size === 2) this.writeData16(value);
      else if (size === 4) {
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

  readReg(reg: number): number {
    if (this.empty) return 0;
    const d = this.selected;
    const hob = (this.ctl & CTL_HOB) !== 0;
    switch (reg) {
      case REG_ERROR:
        if (!d.present) return 0;
        return hob ? d.hobFeature : d.error;
      case REG_NSECT:
        return hob ? d.hobNsector : d.nsector;
      case REG_LBAL:
        return hob ? d.hobSector : d.sector;
      case REG_LBAM:
        return hob ? d.hobLcyl : d.lcyl;
      case REG_LBAH:
        return hob ? d.hobHcyl : d.hcyl;
      case REG_DEVICE:
        return d.select;
      default: {
        const st = d.present ? d.status : 0;
        this.lowerIrq();
        return st;
      }
    }
  }

  altStatus(): number {
    if (this.empty) return 0;
    const d = this.selected;
    return d.present ? d.status : 0;
  }

  writeReg(reg: number, v: number): void {
    if (this.empty) return;
    if (reg === REG_STATUS) {
      this.ctl &= ~CTL_HOB;
      this.lowerIrq();
      this.execute(v);
      return;
    }
    // Writes to the command block are ignored while the selected device is busy or transferring data
    // (ATA/ATAPI-6 §7.1: "the host shall not write ... when BSY or DRQ is set"; QEMU 7.2 ignores them).
    if (this.selected.status & (ST_BSY | ST_DRQ)) return;
    this.ctl &= ~CTL_HOB; // any command block write clears HOB (ATA/ATAPI-6 §7.9)
    for (const d of this.devices) {
      switch (reg) {
        case REG_ERROR:
          d.hobFeature = d.feature;
          d.feature = v;
          break;
        case REG_NSECT:
          d.hobNsector = d.nsector;
          d.nsector = v;
          break;
        case REG_LBAL:
          d.hobSector = d.sector;
          d.sector = v;
          break;
        case REG_LBAM:
          d.hobLcyl = d.lcyl;
          d.lcyl = v;
          break;
        case REG_LBAH:
          d.hobHcyl = d.hcyl;
          d.hcyl = v;
          break;
        case REG_DEVICE:
          d.select = v | DEV_ALWAYS_ON;
          break;
      }
    }
    if (reg === REG_DEVICE) this.unit = v & DEV_DEV ? 1 : 0;
  }

  /** Device Control: SRST edges, nIEN (consulted when an interrupt is raised), HOB readback select. */
  writeControl(v: number): void {
    const old = this.ctl;
    this.ctl = v;
    if (!this.empty) {
      if (v & CTL_SRST && !(old & CTL_SRST)) this.assertSrst();
      else if (!(v & CTL_SRST) && old & CTL_SRST) this.releaseSrst();
    }
  }

  /**
   * SRST 0->1: every device stops what it does and shows BSY for as long as SRST stays set (ATA/ATAPI-6 §9.2;
   * QEMU 7.2 drops BSY early, see docs/conformance.md).
   */
  private assertSrst(): void {
    for (const d of this.devices) {
      if (!d.present) continue;
      this.cancel(d);
      d.status = ST_BSY | ST_DRDY | ST_DSC;
    }
  }

  /**
   * SRST 1->0: the reset runs; signature and diagnostic result; device 0 selected. Device 0 then signals the end
   * of its diagnostic with an interrupt, as QEMU 7.2 does (guests poll BSY after a reset and do not depend on it;
   * following QEMU keeps the Bus Master Interrupt bit the same on both).
   */
  private releaseSrst(): void {
    for (const d of this.devices) {
      if (!d.present) {
        // The empty position's shadow registers take the "no device" signature (LBA Mid/High FFh), which is
        // what a host reads after selecting it (as QEMU 7.2).
        d.resetRegisters();
        d.setSignature();
        d.lcyl = d.hcyl = 0xff;
        continue;
      }
      if (d.revertOnReset) d.revertSettings();
      d.resetRegisters();
      d.setSignature();
      d.power = "active";
      d.status = ST_DRDY | ST_DSC;
    }
    this.unit = 0;
    this.raiseIrq();
  }

  /** Abandon the device's command: storage completions still in flight are ignored when they arrive. */
  private cancel(d: IdeDevice): void {
    if (d.wbCount > 0 && !d.cont && d.engine) {
      // Blocks already acknowledged from the write cache still go to the medium (a reset does not drop the
      // cache); nobody waits for this request, its completion carries a tag outside any batch.
      d.engine.submit({
        op: "write",
        tag: ++d.tagSeq,
        sector: d.wbStart,
        bufs: [d.buf.subarray(0, d.wbCount * 512)],
      });
      d.buf = new Uint8Array(IO_BUF_SECTORS * 512);
      this.reap(d);
    }
    d.wbCount = 0;
    if (d.cont) {
      d.cont = null;
      d.batchFirst = d.tagSeq + 1;
      d.batchLast = d.tagSeq;
      // The old request may still write into the buffer: give the device a fresh one.
      d.buf = new Uint8Array(IO_BUF_SECTORS * 512);
    }
    d.stopTransfer();
    if (d.dmaInflight && this.dmaBounce) this.bounceBuf = null; // the old request may still write into it
    d.dmaPending = d.dmaInflight = d.dmaTrim = false;
    if (this.dmaDev === d) this.dmaDev = null;
    d.cmd = -1;
  }

  // ------------------------------------------------------------------------------------------------
  // Command dispatch (QEMU's ide_exec_cmd shape) and the common completion epilogue.

  private execute(op: number): void {
    const d = this.selected;
    if (!d.present) return; // commands to an absent device are ignored (observed on QEMU 7.2)
    if (d.status & (ST_BSY | ST_DRQ)) return; // ignored while busy (observed on QEMU 7.2)
    const t = this.tracer();
    if (t)
      t.emit({ ev: "note", text: `ata ch${this.index}.${d.unit} cmd 0x${op.toString(16).padStart(2, "0")}` });
    const entry = COMMAND_TABLE[op];
    d.cmd = op;
    d.error = 0;
    if (!entry) {
      this.abort(d);
      this.raiseIrq();
      return;
    }
    d.status = ST_DRDY | ST_BSY;
    if (entry.handler(this, d)) this.complete(d, (entry.flags & CMD_FLAG_DSC) !== 0);
  }

  /** The one epilogue: BSY off, DSC on success when the command asks for it, interrupt. */
  complete(d: IdeDevice, dsc: boolean): void {
    d.status &= ~ST_BSY;
    if (dsc && !(d.status & ST_ERR)) d.status |= ST_DSC;
    this.raiseIrq();
  }

  abort(d: IdeDevice): void {
    d.status = ST_DRDY | ST_ERR;
    d.error = ERR_ABRT;
  }

  /** End a command with an error pointing at `sector` (the task file holds the failing address). */
  fail(d: IdeDevice, error: number, sector: number, statusExtra = 0): void {
    d.stopTransfer();
    d.dmaPending = d.dmaInflight = d.dmaTrim = false;
    if (sector >= 0) {
      // Sectors still to do counted from the failing one (it may lie in an earlier, cached block).
      d.nsector = (d.remaining - (sector - d.lba)) & 0xff;
      d.setAddress(sector);
    }
    d.status = ST_DRDY | ST_ERR | statusExtra;
    d.error = error;
    this.raiseIrq();
  }

  /**
   * EXECUTE DEVICE DIAGNOSTIC (ATA/ATAPI-6 §8.11): both devices run it; each shows the signature and the
   * diagnostic code, and device 0 is selected afterwards (QEMU 7.2 likewise clears DEV).
   */
  diagnostic(): void {
    for (const d of this.devices) {
      if (d.present) {
        if (d.cmd !== CMD_DIAG) this.cancel(d);
        d.setSignature();
        d.status = ST_DRDY | ST_DSC;
      } else d.select = DEV_ALWAYS_ON;
    }
    this.unit = 0;
  }

  /**
   * A range the device refuses (ATA/ATAPI-6: IDNF, "address outside the user-accessible range"). Nothing of the
   * refused block or command was attempted, so the task file stays where it was at its start: the first sector
   * the device did not accept (this is also where QEMU 7.2 leaves it; only its error code, ABRT, differs).
   */
  private rangeError(d: IdeDevice): void {
    this.fail(d, ERR_IDNF, -1);
  }

  /** Storage failure mapped to ATA: out of range = IDNF, read = UNC, write/flush = device fault + ABRT. */
  private failIo(d: IdeDevice, err: IoError, write: boolean, fallbackSector: number): void {
    const s = err.sector ?? fallbackSector;
    if (err.code === "ERANGE") this.fail(d, ERR_IDNF, s);
    else if (write) this.fail(d, ERR_ABRT, s, ST_DF);
    else this.fail(d, ERR_UNC, s);
  }

  /** Highest sector + 1 a command may touch. */
  private capacity(d: IdeDevice): number {
    return d.sectorCount;
  }

  // ------------------------------------------------------------------------------------------------
  // Storage requests. One batch in flight per device; completions of older batches are ignored.

  private submit(d: IdeDevice, cont: (err: IoError | undefined) => void): number {
    const tag = ++d.tagSeq;
    d.batchFirst = tag;
    d.batchLast = tag;
    d.batchLeft = 1;
    d.batchError = undefined;
    d.cont = cont;
    return tag;
  }

  private io(
    d: IdeDevice,
    op: IoRequest["op"],
    sector: number,
    bufs: Uint8Array[] | undefined,
    cont: (err: IoError | undefined) => void,
    count?: number,
  ): void {
    const r = this.req;
    r.op = op;
    r.tag = this.submit(d, cont);
    r.sector = sector;
    r.bufs = bufs;
    r.count = count;
    d.engine!.submit(r);
    this.reap(d);
  }

  /** Take completions; run the continuation when its whole batch is done. */
  reap(d: IdeDevice): void {
    // The list is left empty after every reap (pop(): `length = 0` is a runtime call in V8, on every command).
    const list = d.comps;
    if (d.engine!.reap(list) === 0) return;
    let done = false;
    for (const c of list) {
      if (c.tag < d.batchFirst || c.tag > d.batchLast || !d.cont) continue;
      if (c.error && !d.batchError) d.batchError = c.error;
      if (--d.batchLeft === 0) done = true;
    }
    while (list.length > 0) list.pop();
    if (done) {
      const cont = d.cont!;
      const err = d.batchError;
      d.cont = null;
      d.batchError = undefined;
      cont(err);
    }
  }

  /** After a write completes: flush as well when the write cache is off (every write reaches the medium). */
  private afterWrite(
    d: IdeDevice,
    cont: (err: IoError | undefined) => void,
  ): (err: IoError | undefined) => void {
    return (err) => {
      if (err || d.writeCache) cont(err);
      else this.io(d, "flush", 0, undefined, cont);
    };
  }

  // ------------------------------------------------------------------------------------------------
  // PIO data-in (READ SECTORS / MULTIPLE, IDENTIFY-like single blocks).

  /** Start a single-block data-in transfer from `data` (IDENTIFY, SMART READ DATA). */
  startSingleIn(d: IdeDevice, data: Uint8Array): void {
    d.xfer = data;
    d.dataPtr = 0;
    d.dataEnd = data.length;
    d.dataOut = false;
    d.endTransfer = EndTransfer.Single;
    d.status = ST_DRDY | ST_DSC | ST_DRQ;
    this.raiseIrq();
  }

  startPioIn(d: IdeDevice, lba: number, count: number, blockSectors: number): void {
    d.lba = lba;
    d.remaining = count;
    d.blockSectors = blockSectors;
    d.pfStart = lba;
    d.pfValid = 0;
    d.pfError = -1;
    d.power = "active";
    this.nextBlockIn(d);
  }

  private nextBlockIn(d: IdeDevice): void {
    if (d.remaining === 0) {
      d.stopTransfer();
      d.status = ST_DRDY | ST_DSC;
      return;
    }
    const n = Math.min(d.blockSectors, d.remaining);
    const lba = d.lba;
    const cap = this.capacity(d);
    if (lba + n > cap) {
      this.rangeError(d);
      return;
    }
    if (lba >= d.pfStart && lba + n <= d.pfStart + d.pfValid) {
      const off = (lba - d.pfStart) * 512;
      d.xfer = d.buf;
      d.dataPtr = off;
      d.dataEnd = off + n * 512;
      d.dataOut = false;
      d.endTransfer = EndTransfer.ReadNext;
      d.lba = lba + n;
      d.remaining -= n;
      d.setAddress(d.lba);
      d.nsector = d.remaining & 0xff;
      d.status = ST_DRDY | ST_DSC | ST_DRQ;
      this.raiseIrq();
      return;
    }
    if (d.pfError >= lba && d.pfError < lba + n) {
      const code = d.pfErrorCode;
      this.fail(d, code === "ERANGE" ? ERR_IDNF : ERR_UNC, d.pfError);
      return;
    }
    // Fetch the rest of the command (up to the buffer) in one storage request.
    const count = Math.min(d.remaining, IO_BUF_SECTORS, cap - lba);
    d.stopTransfer();
    d.status = ST_DRDY | ST_DSC | ST_BSY;
    const bufs = [d.buf.subarray(0, count * 512)];
    this.io(d, "read", lba, bufs, (err) => {
      d.pfStart = lba;
      if (err) {
        const at =
          err.sector !== undefined && err.sector >= lba && err.sector < lba + count ? err.sector : lba;
        d.pfValid = at - lba;
        d.pfError = at;
        d.pfErrorCode = err.code;
      } else {
        d.pfValid = count;
        d.pfError = -1;
      }
      this.nextBlockIn(d);
    });
  }

  // ------------------------------------------------------------------------------------------------
  // PIO data-out (WRITE SECTORS / MULTIPLE).

  startPioOut(d: IdeDevice, lba: number, count: number, blockSectors: number): void {
    d.lba = lba;
    d.remaining = count;
    d.blockSectors = blockSectors;
    d.wbStart = lba;
    d.wbCount = 0;
    d.power = "active";
    this.offerBlockOut(d, false);
  }

  /** Open the DRQ window for the next data-out block, behind the blocks already held in the buffer. */
  private offerBlockOut(d: IdeDevice, irq: boolean): void {
    // The range is checked when the block is committed, after its data phase, as QEMU 7.2 does (the error is
    // reported at a DRQ block boundary either way, ATA/ATAPI-6 §9.8).
    const n = Math.min(d.blockSectors, d.remaining);
    const off = d.wbCount * 512;
    d.xfer = d.buf;
    d.dataPtr = off;
    d.dataEnd = off + n * 512;
    d.dataOut = true;
    d.endTransfer = EndTransfer.WriteCommit;
    d.status = ST_DRDY | ST_DSC | ST_DRQ;
    // ATA PIO data-out: no interrupt before the first block; one after every block written.
    if (irq) this.raiseIrq();
  }

  /**
   * A data-out block is complete. With the volatile write cache enabled, the block is acknowledged as soon as it
   * is in the drive's buffer (ACS §4.19: the cache may hold written data), and blocks are committed to storage
   * together when the buffer is full, the command ends, or the next block is out of range; a failure is then
   * reported for the first failing sector. With the cache off every block reaches the medium (written and
   * flushed) before its interrupt.
   */
  private commitBlockOut(d: IdeDevice): void {
    const n = (d.dataEnd - d.wbCount * 512) / 512;
    const lba = d.lba;
    d.stopTransfer();
    const cap = this.capacity(d);
    if (lba + n > cap) {
      // Blocks before it were committed already (caching stops short of a block that does not fit).
      this.rangeError(d);
      return;
    }
    d.wbCount += n;
    const left = d.remaining - n;
    const next = Math.min(d.blockSectors, left);
    if (
      d.writeCache &&
      left > 0 &&
      d.wbCount + next <= IO_BUF_SECTORS &&
      lba + n + next <= this.capacity(d)
    ) {
      d.lba = lba + n;
      d.remaining = left;
      d.setAddress(d.lba);
      d.nsector = d.remaining & 0xff;
      this.offerBlockOut(d, true);
      return;
    }
    d.status = ST_DRDY | ST_DSC | ST_BSY;
    const start = d.wbStart;
    const bufs = [d.buf.subarray(0, d.wbCount * 512)];
    this.io(
      d,
      "write",
      start,
      bufs,
      this.afterWrite(d, (err) => {
        d.wbCount = 0;
        if (err) {
          this.failIo(d, err, true, start);
          return;
        }
        d.lba = lba + n;
        d.remaining = left;
        d.wbStart = d.lba;
        d.setAddress(d.lba);
        d.nsector = d.remaining & 0xff;
        if (d.remaining === 0) {
          d.status = ST_DRDY | ST_DSC;
          this.raiseIrq();
        } else this.offerBlockOut(d, true);
      }),
    );
  }

  // ------------------------------------------------------------------------------------------------
  // Data port.

  private readData16(): number {
    if (this.empty) return 0;
    const d = this.selected;
    if (!(d.status & ST_DRQ) || d.dataOut) return 0;
    const p = d.dataPtr;
    if (p + 2 > d.dataEnd) return 0;
    const x = d.xfer;
    const v = x[p]! | (x[p + 1]! << 8);
    d.dataPtr = p + 2;
    if (d.dataPtr >= d.dataEnd) this.endOfBlock(d);
    return v;
  }

  private writeData16(v: number): void {
    if (this.empty) return;
    const d = this.selected;
    if (!(d.status & ST_DRQ) || !d.dataOut) return;
    const p = d.dataPtr;
    if (p + 2 > d.dataEnd) return;
    d.xfer[p] = v & 0xff;
    d.xfer[p + 1] = (v >>> 8) & 0xff;
    d.dataPtr = p + 2;
    if (d.dataPtr >= d.dataEnd) this.endOfBlock(d);
  }

  private endOfBlock(d: IdeDevice): void {
    const e = d.endTransfer;
    if (e === EndTransfer.ReadNext) {
      d.stopTransfer();
      this.nextBlockIn(d);
    } else if (e === EndTransfer.WriteCommit) this.commitBlockOut(d);
    else {
      d.stopTransfer();
      d.status = ST_DRDY | ST_DSC;
    }
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
    if ((port & 7) !== 0 || size === 1 || df) return this.stringSlow(port, size, dir, mem, gpa, count, df);
    const total = count * size;
    let done = 0;
    while (done < total && !this.empty) {
      const d = this.selected;
      if (!(d.status & ST_DRQ) || d.dataOut !== (dir === "out")) break;
      const p = d.dataPtr;
      const take = Math.min(d.dataEnd - p, total - done);
      if (take <= 0) break;
      const chunk = d.xfer.subarray(p, p + take);
      const f = dir === "in" ? mem.write(gpa + done, chunk) : mem.read(gpa + done, chunk);
      if (f) return f;
      d.dataPtr = p + take;
      done += take;
      if (d.dataPtr >= d.dataEnd) this.endOfBlock(d);
    }
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

  // ------------------------------------------------------------------------------------------------
  // Non-data commands that touch storage: FLUSH CACHE, READ VERIFY.

  flush(d: IdeDevice): void {
    // In flight: BSY|DRDY with DSC clear (QEMU 7.2 shows 0xC0 too).
    d.status = ST_DRDY | ST_BSY;
    this.io(d, "flush", 0, undefined, (err) => {
      if (err) {
        d.status = ST_DRDY | ST_DF | ST_ERR;
        d.error = ERR_ABRT;
        this.raiseIrq();
        return;
      }
      d.status = ST_DRDY | ST_DSC;
      this.raiseIrq();
    });
  }

  /** READ VERIFY: range-checked, and the sectors are really read so that a medium error reports UNC. */
  verify(d: IdeDevice, lba: number, count: number): boolean {
    const cap = this.capacity(d);
    d.lba = lba;
    d.remaining = count;
    d.power = "active";
    if (lba + count > cap) {
      this.rangeError(d);
      return false;
    }
    const regs = [d.nsector, d.sector, d.lcyl, d.hcyl, d.select, d.hobSector, d.hobLcyl, d.hobHcyl] as const;
    const step = (at: number, left: number): void => {
      if (left === 0) {
        // Success leaves the task file as the host wrote it (observed on QEMU 7.2).
        [d.nsector, d.sector, d.lcyl, d.hcyl, d.select, d.hobSector, d.hobLcyl, d.hobHcyl] = regs;
        d.status = ST_DRDY | ST_DSC;
        this.raiseIrq();
        return;
      }
      const n = Math.min(left, IO_BUF_SECTORS);
      this.io(d, "read", at, [d.buf.subarray(0, n * 512)], (err) => {
        if (err) {
          d.lba = at;
          d.remaining = left;
          this.failIo(d, err, false, at);
        } else step(at + n, left - n);
      });
    };
    d.status = ST_DRDY | ST_BSY;
    step(lba, count);
    return false;
  }

  // ------------------------------------------------------------------------------------------------
  // DMA (READ/WRITE DMA, DATA SET MANAGEMENT): the ATA side waits with DRQ set until the bus master runs.

  startDma(d: IdeDevice, write: boolean, lba: number, count: number, trim = false): void {
    d.lba = lba;
    d.remaining = count;
    d.dmaPending = true;
    d.dmaWrite = write;
    d.dmaTrim = trim;
    d.dmaInflight = false;
    d.power = "active";
    d.status = ST_DRDY | ST_DSC | ST_DRQ;
    this.dmaDev = d;
    this.runDma();
  }

  /** PCI bus-master enable changed (the engine may resume a transfer it could not start). */
  busMasterEnableChanged(): void {
    this.runDma();
  }

  private bmStopped(): void {
    // Stopping the engine while storage is still working does not abort the command (QEMU drains it); the
    // completion still sets the Interrupt bit and ends the ATA command. Active is already clear.
  }

  private runDma(): void {
    const d = this.dmaDev;
    if (!d || !d.dmaPending || d.dmaInflight || !this.bm.active || !this.busMasterEnabled()) return;
    const bytes = d.remaining * 512;
    const w = this.bm.walk(this.mem, bytes, this.segs);
    if (w === PrdWalk.Fault) {
      // A PRD entry or buffer outside guest memory: Bus Master error bit, engine stops, command aborted.
      this.bm.status = (this.bm.status | BM_ST_ERROR) & ~BM_ST_ACTIVE;
      d.dmaPending = false;
      this.dmaDev = null;
      this.abort(d);
      this.raiseIrq();
      return;
    }
    if (w === PrdWalk.Short) {
      // PRD table shorter than the transfer: nothing moves, Active clears, no interrupt (QEMU 7.2,
      // BMIDE §3.1 "Interrupt 0, Active 0: the PRD table was smaller than the transfer").
      this.bm.status &= ~BM_ST_ACTIVE;
      d.dmaPending = false;
      this.dmaDev = null;
      d.status = ST_DRDY | ST_DSC;
      return;
    }
    if (d.dmaTrim) {
      this.runTrim(d);
      return;
    }
    const cap = this.capacity(d);
    const lba = d.lba;
    // A range that does not fit moves nothing (as QEMU 7.2; a DMA command has no block boundary to stop at)
    // and fails with IDNF at the first sector beyond the capacity.
    const valid = lba + d.remaining <= cap ? d.remaining : 0;
    if (valid === 0) {
      this.dmaEnd(d, false);
      this.rangeError(d);
      return;
    }
    // The segments cover exactly the transfer's bytes (the range check above is all or nothing). Whole
    // sectors go to storage as the guest memory itself; anything else through a bounce buffer.
    this.dmaLba = lba;
    this.dmaCount = valid;
    this.dmaStayActive = this.segs.prdBytes > bytes;
    let bufs: Uint8Array[];
    if (this.segs.sectorAligned) {
      this.dmaBounce = null;
      bufs = this.segs.views;
    } else {
      let b = this.bounceBuf;
      if (!b || b.length < bytes) this.bounceBuf = b = new Uint8Array(Math.max(bytes, d.buf.length));
      b = b.subarray(0, bytes);
      this.dmaBounce = b;
      if (d.dmaWrite) this.gather(b);
      bufs = [b];
    }
    d.dmaInflight = true;
    if (d.dmaWrite) this.io(d, "write", lba, bufs, this.dmaWritten);
    else this.io(d, "read", lba, bufs, this.dmaDone);
  }

  /** A DMA write reached storage: flush too when the write cache is off, then end the command. */
  private readonly dmaWritten = (err: IoError | undefined): void => {
    const d = this.dmaDev;
    if (!err && d && !d.writeCache) this.io(d, "flush", 0, undefined, this.dmaDone);
    else this.dmaDone(err);
  };

  /** The end of a DMA read or write: data into guest memory (reads), task file, Active, interrupt. */
  private readonly dmaDone = (err: IoError | undefined): void => {
    const d = this.dmaDev;
    if (!d) return;
    d.dmaInflight = false;
    const lba = this.dmaLba;
    const valid = this.dmaCount;
    if (!d.dmaWrite) {
      if (this.dmaBounce) this.scatter(this.dmaBounce);
      else for (let i = 0; i < this.segs.count; i++) this.mem.written(this.segs.gpa[i]!, this.segs.len[i]!);
    }
    this.dmaBounce = null;
    if (err) {
      this.dmaEnd(d, false);
      this.failIo(d, err, d.dmaWrite, lba);
      return;
    }
    d.lba = lba + valid;
    d.remaining -= valid;
    d.setAddress(d.lba);
    d.nsector = d.remaining & 0xff;
    this.dmaEnd(d, this.dmaStayActive);
    d.status = ST_DRDY | ST_DSC;
    this.raiseIrq();
  };

  /** The DMA command is over: the engine drops Active unless the PRD table still has bytes (QEMU 7.2). */
  private dmaEnd(d: IdeDevice, stayActive: boolean): void {
    d.dmaPending = false;
    d.dmaInflight = false;
    if (this.dmaDev === d) this.dmaDev = null;
    if (!stayActive) this.bm.status &= ~BM_ST_ACTIVE;
  }

  private gather(dst: Uint8Array): void {
    let off = 0;
    for (let i = 0; i < this.segs.count && off < dst.length; i++) {
      const len = Math.min(this.segs.len[i]!, dst.length - off);
      this.mem.read(this.segs.gpa[i]!, dst.subarray(off, off + len));
      off += len;
    }
  }

  private scatter(src: Uint8Array): void {
    let off = 0;
    for (let i = 0; i < this.segs.count && off < src.length; i++) {
      const len = Math.min(this.segs.len[i]!, src.length - off);
      this.mem.write(this.segs.gpa[i]!, src.subarray(off, off + len));
      off += len;
    }
  }

  /**
   * DATA SET MANAGEMENT / TRIM (ACS §7.10): the payload is `count` 512-byte blocks of 8-byte LBA range
   * entries (bits 47:0 LBA, 63:48 length, length 0 = unused). Every range is checked before anything is
   * discarded; one beyond the capacity aborts the command (ACS §7.10.3.2, QEMU ide-test /ide/bmdma/trim).
   */
  private runTrim(d: IdeDevice): void {
    const bytes = d.remaining * 512;
    const payload = bytes <= d.buf.length ? d.buf.subarray(0, bytes) : new Uint8Array(bytes);
    this.gather(payload);
    const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const cap = this.capacity(d);
    const ranges: number[] = [];
    for (let off = 0; off < bytes; off += 8) {
      const lo = dv.getUint32(off, true);
      const hi = dv.getUint32(off + 4, true);
      const len = hi >>> 16;
      if (len === 0) continue;
      const lba = (hi & 0xffff) * 0x100000000 + lo;
      if (lba + len > cap) {
        this.dmaEnd(d, false);
        this.abort(d);
        this.raiseIrq();
        return;
      }
      ranges.push(lba, len);
    }
    const stayActive = this.segs.prdBytes > bytes;
    const done = (err: IoError | undefined): void => {
      if (err) {
        this.dmaEnd(d, false);
        this.fail(d, ERR_ABRT, -1, ST_DF);
        return;
      }
      d.remaining = 0;
      d.nsector = 0;
      this.dmaEnd(d, stayActive);
      d.status = ST_DRDY | ST_DSC;
      this.raiseIrq();
    };
    if (ranges.length === 0) {
      done(undefined);
      return;
    }
    d.dmaInflight = true;
    // All discards go out as one batch; the command completes when the last one does.
    const first = d.tagSeq + 1;
    d.tagSeq += ranges.length / 2;
    d.batchFirst = first;
    d.batchLast = d.tagSeq;
    d.batchLeft = ranges.length / 2;
    d.batchError = undefined;
    d.cont = done;
    for (let i = 0; i < ranges.length; i += 2) {
      d.engine!.submit({ op: "discard", tag: first + i / 2, sector: ranges[i]!, count: ranges[i + 1]! });
    }
    this.reap(d);
  }

  /** True when a storage request of this channel is still outstanding. */
  get busy(): boolean {
    return this.devices.some((d) => d.cont !== null);
  }
}
