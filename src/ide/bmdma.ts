/**
 * The Bus Master IDE engine of one channel (BMIDE §2, PIIX3 datasheet §2.7): the command, status and PRD table
 * address registers, the walk of the Physical Region Descriptor table, and, as the channel's `IdeDmaOps`, the
 * memory side of its DMA commands: PRD segments go to storage as views of guest memory (no copy, no allocation
 * per command), or through a bounce buffer when a segment is not whole sectors.
 *
 * Register write semantics are those observed on QEMU 7.2 (which match the BMIDE text): command keeps bits 0
 * (start) and 3 (direction); status bits 1-2 are write-one-to-clear, 5-6 read/write, 0 read-only; the PRD
 * table address drops its low two bits; command and status are byte registers (wider reads float high, wider
 * writes are ignored).
 */

import { sizeMask } from "../hypervisor/bus.ts";
import { type GuestMemory, isFault } from "../hypervisor/memory.ts";
import { type QemuIdeTrace, qemuIdeTraceText } from "./qemu-trace.ts";
import {
  BM_CMD_READ,
  BM_CMD_START,
  BM_REG_COMMAND,
  BM_REG_PRDT,
  BM_REG_STATUS,
  BM_ST_ACTIVE,
  BM_ST_DMA0_CAP,
  BM_ST_DMA1_CAP,
  BM_ST_ERROR,
  BM_ST_INTR,
  PRD_ENTRY_BYTES,
  PRD_EOT,
} from "../spec/ata.ts";
import { DmaPrepared, type IdeDmaOps } from "./dma-ops.ts";

/** QEMU walks at most one 4 KiB page of PRD entries per transfer (BMDMA_PAGE_SIZE), i.e. 512 entries. */
export const PRD_MAX_ENTRIES = 512;

/** The bounce buffer is at least one 256-sector command (128 KiB), so most unaligned commands reuse it. */
const BOUNCE_MIN_BYTES = 256 * 512;

/**
 * Scatter-gather list of one transfer, reused from transfer to transfer: only the views of guest memory are
 * new for each command. `views` holds exactly `count` entries, so it can go to storage as a request's buffers.
 * PRD entries that continue each other in guest memory (a buffer larger than 64 KiB, or one that crosses a
 * 64 KiB boundary, needs several) become one segment: storage then gets one buffer instead of an iovec.
 */
export class Segments {
  gpa: number[] = [];
  len: number[] = [];
  /** The guest memory of each segment (the walk obtains them to check the range anyway). */
  readonly views: Uint8Array[] = [];
  count = 0;
  /** Every segment is a whole number of sectors, so storage can use guest-memory views directly. */
  sectorAligned = true;
  /** Segments made of more than one PRD entry, whose view is made by `finish`. */
  private merged: boolean[] = [];
  /** A view standing for memory that is not there (a void segment: reads as zero, writes are dropped). */
  private static readonly NOWHERE = new Uint8Array(0);
  reset(): void {
    this.count = 0;
    // pop() rather than `length = 0`, which is a runtime call in V8 and shows in a profile of this path.
    while (this.views.length > 0) this.views.pop();
    this.sectorAligned = true;
  }
  /**
   * Add the PRD entry [gpa, gpa + len), extending the last segment when it ends at `gpa`. Each entry is
   * checked against guest memory on its own (false: memory refuses it).
   */
  push(mem: GuestMemory, gpa: number, len: number): boolean {
    const v = mem.view(gpa, len);
    if (isFault(v)) return false;
    const last = this.count - 1;
    if (last >= 0 && this.gpa[last]! >= 0 && this.gpa[last]! + this.len[last]! === gpa) {
      this.len[last] = this.len[last]! + len;
      this.merged[last] = true;
      return true;
    }
    this.gpa[this.count] = gpa;
    this.len[this.count] = len;
    this.merged[this.count] = false;
    this.views.push(v);
    this.count++;
    return true;
  }
  /**
   * Add `len` bytes of memory that is not there (QEMU 7.2's unassigned memory: reads give zeros, writes go
   * nowhere). The transfer then goes through the bounce buffer, which `gather`/`scatter` fill and drain.
   */
  pushVoid(len: number): void {
    this.gpa[this.count] = -1;
    this.len[this.count] = len;
    this.merged[this.count] = false;
    this.views.push(Segments.NOWHERE);
    this.count++;
    this.sectorAligned = false;
  }
  /** Complete the list: one view per merged segment, and whether every segment is whole sectors. */
  finish(mem: GuestMemory): boolean {
    for (let i = 0; i < this.count; i++) {
      if (this.merged[i]) {
        const v = mem.view(this.gpa[i]!, this.len[i]!);
        if (isFault(v)) return false;
        this.views[i] = v;
      }
      if (this.len[i]! % 512 !== 0) this.sectorAligned = false;
    }
    return true;
  }
}

/**
 * A register read as QEMU 7.2 traces it: the table address register (any width) as bmdma_addr_read with the
 * value read (hw/ide/pci.c); a byte of the command/status region as bmdma_read with its offset in that region
 * (hw/ide/piix.c; a wider access returns all ones untraced).
 */
function traceRead(t: QemuIdeTrace, off: number, size: 1 | 2 | 4, v: number): void {
  if (off >= BM_REG_PRDT) {
    if (t.on("bmdma_addr_read")) t.emit("bmdma_addr_read", qemuIdeTraceText.bmdmaAddr(v));
  } else if (size === 1 && t.on("bmdma_read")) t.emit("bmdma_read", qemuIdeTraceText.bmdma(false, off, v));
}

/**
 * A register write as QEMU 7.2 traces it, before it takes effect: bmdma_addr_write with the value written; a
 * byte of the command/status region as bmdma_write, and the command byte also as bmdma_cmd_writeb.
 */
function traceWrite(t: QemuIdeTrace, off: number, size: 1 | 2 | 4, value: number): void {
  const v = (value & sizeMask(size)) >>> 0;
  if (off >= BM_REG_PRDT) {
    if (t.on("bmdma_addr_write")) t.emit("bmdma_addr_write", qemuIdeTraceText.bmdmaAddr(v));
    return;
  }
  if (size !== 1) return;
  if (t.on("bmdma_write")) t.emit("bmdma_write", qemuIdeTraceText.bmdma(true, off, v));
  if (off === BM_REG_COMMAND && t.on("bmdma_cmd_writeb"))
    t.emit("bmdma_cmd_writeb", qemuIdeTraceText.bmdmaCmd(v));
}

export class BusMaster implements IdeDmaOps {
  cmd = 0;
  status = 0;
  prdt = 0;
  /** The drive whose DMA command waits for (or is served by) the engine, and what to call when it runs. */
  private owner: unknown = null;
  private run: ((owner: unknown) => void) | null = null;
  private readonly segs = new Segments();
  /** Bytes of the last `prepare`. */
  private need = 0;
  /** The last walk used every byte of the table's end-of-table entry (the engine then goes inactive). */
  private tableExhausted = false;
  /** The bounce buffer of the transfer in flight (segments that are not whole sectors), or null. */
  private bounce: Uint8Array | null = null;
  /** Kept from command to command; dropped when a cancelled request might still write into it. */
  private bounceBuf: Uint8Array | null = null;
  /**
   * The "qemu-7.2" profile: the engine was stopped while its transfer's storage request was in flight. QEMU
   * drains that request inside the stop write (ide_cancel_dma_sync), so whoever serves the vCPU answers the
   * write only once device work has settled (`takeDrainRequest`; docs/conformance.md D1).
   */
  private drainRequest = false;
  /** QEMU's Bus Master trace events (`-trace bmdma_*` on the launcher; qemu-trace.ts), or null. */
  qemuTrace: QemuIdeTrace | null = null;

  /**
   * @param mem guest memory the PRD table and its buffers are in
   * @param busMasterEnabled PCI command register bit 2: may the engine access memory? (PCI §6.2.2)
   * @param qemu the "qemu-7.2" profile: the engine runs whatever the enable bit says, and memory that is not
   *   there (or not reachable, with bus mastering off) reads as zeros and drops writes, as QEMU 7.2's DMA to
   *   unassigned addresses does; PRD base addresses are used with bit 0 (docs/conformance.md C4, D2, D3)
   */
  constructor(
    private readonly mem: GuestMemory,
    private readonly busMasterEnabled: () => boolean,
    private readonly qemu = false,
  ) {}

  get active(): boolean {
    return (this.status & BM_ST_ACTIVE) !== 0;
  }
  /** Direction bit: the engine writes memory (a disk read). */
  get toMemory(): boolean {
    return (this.cmd & BM_CMD_READ) !== 0;
  }

  /**
   * PIIX3/QEMU reset values (QEMU's bmdma_reset): every register zero, the drive capability bits included, and
   * the command the engine was serving forgotten (its drive has cancelled it).
   */
  reset(): void {
    this.cmd = 0;
    this.status = 0;
    this.prdt = 0;
    this.owner = null;
    this.run = null;
    this.bounce = null;
    this.drainRequest = false;
  }

  /** Whether a stop write asked for a drain since the last call (and forget it). */
  takeDrainRequest(): boolean {
    const r = this.drainRequest;
    this.drainRequest = false;
    return r;
  }

  // ------------------------------------------------------------------------------------------------
  // Registers.

  /** Read `size` bytes at offset `off` (0-7) of this channel's block. */
  read(off: number, size: 1 | 2 | 4): number {
    const v = this.readReg(off, size);
    if (this.qemuTrace !== null) traceRead(this.qemuTrace, off, size, v);
    return v;
  }

  private readReg(off: number, size: 1 | 2 | 4): number {
    if (off >= BM_REG_PRDT)
      return (this.prdt >>> ((off - BM_REG_PRDT) * 8)) & (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1);
    if (size !== 1) return size === 2 ? 0xffff : 0xffffffff;
    if (off === BM_REG_COMMAND) return this.cmd;
    if (off === BM_REG_STATUS) return this.status;
    return 0xff; // offsets 1 and 3: device-specific, nothing there on PIIX3
  }

  write(off: number, size: 1 | 2 | 4, value: number): void {
    if (this.qemuTrace !== null) traceWrite(this.qemuTrace, off, size, value);
    if (off >= BM_REG_PRDT) {
      const shift = (off - BM_REG_PRDT) * 8;
      const mask = (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1) << shift;
      this.prdt = (((this.prdt & ~mask) | ((value << shift) & mask)) & ~3) >>> 0;
      return;
    }
    if (size !== 1) return;
    if (off === BM_REG_COMMAND) this.writeCmd(value & 0xff);
    else if (off === BM_REG_STATUS) {
      const old = this.status;
      this.status =
        (value & (BM_ST_DMA0_CAP | BM_ST_DMA1_CAP)) |
        (old & BM_ST_ACTIVE) |
        (old & ~value & (BM_ST_ERROR | BM_ST_INTR));
    }
  }

  private writeCmd(value: number): void {
    const was = this.cmd & BM_CMD_START;
    this.cmd = value & (BM_CMD_START | BM_CMD_READ);
    if (value & BM_CMD_START && !was) {
      this.status |= BM_ST_ACTIVE;
      this.kick();
    } else if (!(value & BM_CMD_START) && was) {
      // Stopping the engine while storage is still working does not abort the command (QEMU drains it); the
      // completion still sets the Interrupt bit and ends the ATA command (docs/conformance.md D1). QEMU 7.2 does
      // that before the write returns: the profile asks the vCPU's server to wait for it. A started transfer
      // whose engine has not ended it (`owner` still set) has its request in flight: in that profile the engine
      // runs as soon as it is started.
      this.status &= ~BM_ST_ACTIVE;
      if (this.qemu && this.owner !== null) this.drainRequest = true;
    }
  }

  /** PCI bus-master enable changed: a transfer that could not start may run now. */
  enableChanged(): void {
    this.kick();
  }

  /** Run the waiting command if the engine is going: started, and allowed to master the bus. */
  private kick(): void {
    const run = this.run;
    if (run && this.owner !== null && this.active && (this.qemu || this.busMasterEnabled())) run(this.owner);
  }

  // ------------------------------------------------------------------------------------------------
  // IdeDmaOps.

  start<T>(owner: T, run: (owner: T) => void): void {
    this.owner = owner;
    this.run = run as (owner: unknown) => void;
    this.kick();
  }

  prepare(bytes: number): DmaPrepared {
    this.need = bytes;
    const w = this.walk(bytes);
    // A PRD entry or buffer outside guest memory: "error in transferring data to/from memory" (BMIDE §2.2).
    if (w === DmaPrepared.Fault) this.status |= BM_ST_ERROR;
    return w;
  }

  buffers(toDevice: boolean): Uint8Array[] {
    const segs = this.segs;
    // The segments cover exactly the transfer's bytes. Whole sectors go to storage as the guest memory itself;
    // anything else through a bounce buffer.
    if (segs.sectorAligned) {
      this.bounce = null;
      return segs.views;
    }
    const bytes = this.need;
    let b = this.bounceBuf;
    if (!b || b.length < bytes) this.bounceBuf = b = new Uint8Array(Math.max(bytes, BOUNCE_MIN_BYTES));
    b = b.subarray(0, bytes);
    this.bounce = b;
    if (toDevice) this.gather(b);
    return [b];
  }

  rw(buf: Uint8Array, toDevice: boolean): void {
    if (toDevice) this.gather(buf);
    else this.scatter(buf);
  }

  commit(toMemory: boolean): void {
    if (toMemory) {
      const segs = this.segs;
      if (this.bounce) this.scatter(this.bounce);
      else
        for (let i = 0; i < segs.count; i++)
          if (segs.gpa[i]! >= 0) this.mem.written(segs.gpa[i]!, segs.len[i]!);
    }
    this.bounce = null;
  }

  end(transferred: boolean): void {
    this.owner = null;
    this.run = null;
    // The engine stays active unless the transfer exhausted the table — used every byte of its end-of-table
    // entry (BMIDE §3.1: "Interrupt 1, Active 1: the PRD table was larger than the transfer"). That includes a
    // transfer ending exactly at the end of an entry that is not the last one, as QEMU 7.2 shows (BM 0x05).
    if (!transferred || this.tableExhausted) this.status &= ~BM_ST_ACTIVE;
  }

  cancel(owner: unknown, inFlight: boolean): void {
    if (inFlight && this.bounce) this.bounceBuf = null; // the old request may still write into it
    if (this.owner === owner) {
      this.owner = null;
      this.run = null;
    }
  }

  interrupt(): void {
    this.status |= BM_ST_INTR;
  }

  // ------------------------------------------------------------------------------------------------
  // The PRD table.

  /**
   * Walk the PRD table for a transfer of `need` bytes into the segment list. Entry: 32-bit base (bit 0
   * ignored), 16-bit byte count (bit 0 ignored, 0 = 64 KiB), bit 15 of the last word = end of table (BMIDE §1.2).
   */
  private walk(need: number): DmaPrepared {
    if (this.qemu) return this.walkQemu(need);
    const mem = this.mem;
    const out = this.segs;
    out.reset();
    this.tableExhausted = false;
    let got = 0;
    for (let i = 0; i < PRD_MAX_ENTRIES; i++) {
      const at = this.prdt + PRD_ENTRY_BYTES * i;
      const base = mem.readU32(at);
      const ctl = mem.readU32(at + 4);
      if (isFault(base) || isFault(ctl)) return DmaPrepared.Fault;
      const len = ctl & 0xfffe || 0x10000;
      const take = Math.min(len, need - got);
      if (!out.push(mem, (base & ~1) >>> 0, take)) return DmaPrepared.Fault;
      got += take;
      if (got >= need) {
        this.tableExhausted = ((ctl >>> 16) & PRD_EOT) !== 0 && take === len;
        return out.finish(mem) ? DmaPrepared.Ok : DmaPrepared.Fault;
      }
      if ((ctl >>> 16) & PRD_EOT) return DmaPrepared.Short;
    }
    return DmaPrepared.Short;
  }

  /**
   * The walk as QEMU 7.2's bmdma_prepare_buf does it: the base address as written (bit 0 included); an entry
   * that cannot be fetched reads as zeros (64 KiB, not the last); memory outside guest RAM is void. With bus
   * mastering disabled every fetch and every access goes nowhere: each entry reads as zeros, so the table never
   * ends and the transfer "completes" with the engine still active, memory untouched (QEMU 7.2 observations §4.i).
   */
  private walkQemu(need: number): DmaPrepared {
    const mem = this.mem;
    const out = this.segs;
    out.reset();
    this.tableExhausted = false;
    const enabled = this.busMasterEnabled();
    let got = 0;
    for (let i = 0; i < PRD_MAX_ENTRIES; i++) {
      const at = this.prdt + PRD_ENTRY_BYTES * i;
      let base = 0;
      let ctl = 0;
      if (enabled) {
        const b = mem.readU32(at);
        const c = mem.readU32(at + 4);
        base = isFault(b) ? 0 : b;
        ctl = isFault(c) ? 0 : c;
      }
      const len = ctl & 0xfffe || 0x10000;
      const take = Math.min(len, need - got);
      if (take > 0) {
        const inRam = enabled && base < mem.size ? Math.min(take, mem.size - base) : 0;
        if (inRam > 0 && !out.push(mem, base, inRam)) out.pushVoid(inRam);
        if (take > inRam) out.pushVoid(take - inRam);
      }
      got += take;
      if (got >= need) {
        this.tableExhausted = ((ctl >>> 16) & PRD_EOT) !== 0 && take === len;
        return out.finish(mem) ? DmaPrepared.Ok : DmaPrepared.Fault;
      }
      if ((ctl >>> 16) & PRD_EOT) return DmaPrepared.Short;
    }
    return DmaPrepared.Short;
  }

  private gather(dst: Uint8Array): void {
    const segs = this.segs;
    let off = 0;
    for (let i = 0; i < segs.count && off < dst.length; i++) {
      const len = Math.min(segs.len[i]!, dst.length - off);
      if (segs.gpa[i]! < 0) dst.fill(0, off, off + len);
      else this.mem.read(segs.gpa[i]!, dst.subarray(off, off + len));
      off += len;
    }
  }

  private scatter(src: Uint8Array): void {
    const segs = this.segs;
    let off = 0;
    for (let i = 0; i < segs.count && off < src.length; i++) {
      const len = Math.min(segs.len[i]!, src.length - off);
      if (segs.gpa[i]! >= 0) this.mem.write(segs.gpa[i]!, src.subarray(off, off + len));
      off += len;
    }
  }
}
