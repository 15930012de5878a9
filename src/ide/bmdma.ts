/**
 * The Bus Master IDE engine of one channel (BMIDE rev 1.0 §2, PIIX3 datasheet §2.7): the command, status and
 * PRD table address registers, and the walk of the Physical Region Descriptor table.
 *
 * Register write semantics are those observed on QEMU 7.2 (which match the BMIDE text): command keeps bits 0
 * (start) and 3 (direction); status bits 1-2 are write-one-to-clear, 5-6 read/write, 0 read-only; the PRD
 * table address drops its low two bits; command and status are byte registers (wider reads float high, wider
 * writes are ignored).
 */

import { type GuestMemory, isFault } from "../hypervisor/memory.ts";
import {
  BM_CMD,
  BM_CMD_READ,
  BM_CMD_START,
  BM_PRDT,
  BM_ST_ACTIVE,
  BM_ST_DMA0_CAP,
  BM_ST_DMA1_CAP,
  BM_ST_ERROR,
  BM_ST_INTR,
  BM_STATUS,
  PRD_EOT,
  PRD_MAX_ENTRIES,
} from "./ata.ts";

/** What the channel does when the host starts or stops the engine. */
export interface BusMasterOwner {
  bmStart(): void;
  bmStop(): void;
}

/** Result of a PRD walk. */
export const enum PrdWalk {
  /** The table describes at least the bytes needed; `segments` cover exactly them. */
  Ok,
  /** The table ends (EOT or the one-page limit) before the transfer's bytes. */
  Short,
  /** A PRD entry or a data buffer lies outside guest memory. */
  Fault,
}

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
  /** Bytes the consumed PRD entries describe in full (QEMU keeps Active set when this exceeds the transfer). */
  prdBytes = 0;
  /** Every segment is a whole number of sectors, so storage can use guest-memory views directly. */
  sectorAligned = true;
  /** Segments made of more than one PRD entry, whose view is made by `finish`. */
  private merged: boolean[] = [];
  reset(): void {
    this.count = 0;
    // pop() rather than `length = 0`, which is a runtime call in V8 and shows in a profile of this path.
    while (this.views.length > 0) this.views.pop();
    this.prdBytes = 0;
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
    if (last >= 0 && this.gpa[last]! + this.len[last]! === gpa) {
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

export class BusMaster {
  cmd = 0;
  status = 0;
  prdt = 0;

  constructor(private readonly owner: BusMasterOwner) {}

  get active(): boolean {
    return (this.status & BM_ST_ACTIVE) !== 0;
  }
  /** Direction bit: the engine writes memory (a disk read). */
  get toMemory(): boolean {
    return (this.cmd & BM_CMD_READ) !== 0;
  }

  /** PIIX3/QEMU reset values: everything zero. */
  reset(): void {
    this.cmd = 0;
    this.status = 0;
    this.prdt = 0;
  }

  /** Read `size` bytes at offset `off` (0-7) of this channel's block. */
  read(off: number, size: 1 | 2 | 4): number {
    if (off >= BM_PRDT)
      return (this.prdt >>> ((off - BM_PRDT) * 8)) & (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1);
    if (size !== 1) return size === 2 ? 0xffff : 0xffffffff;
    if (off === BM_CMD) return this.cmd;
    if (off === BM_STATUS) return this.status;
    return 0xff; // offsets 1 and 3: device-specific, nothing there on PIIX3
  }

  write(off: number, size: 1 | 2 | 4, value: number): void {
    if (off >= BM_PRDT) {
      const shift = (off - BM_PRDT) * 8;
      const mask = (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1) << shift;
      this.prdt = (((this.prdt & ~mask) | ((value << shift) & mask)) & ~3) >>> 0;
      return;
    }
    if (size !== 1) return;
    if (off === BM_CMD) this.writeCmd(value & 0xff);
    else if (off === BM_STATUS) {
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
      this.owner.bmStart();
    } else if (!(value & BM_CMD_START) && was) {
      this.status &= ~BM_ST_ACTIVE;
      this.owner.bmStop();
    }
  }

  /**
   * Walk the PRD table for a transfer of `need` bytes into `out`. Entry: 32-bit base (bit 0 ignored), 16-bit
   * byte count (bit 0 ignored, 0 = 64 KiB), bit 15 of the last word = end of table.
   */
  walk(mem: GuestMemory, need: number, out: Segments): PrdWalk {
    out.reset();
    let got = 0;
    for (let i = 0; i < PRD_MAX_ENTRIES; i++) {
      const at = this.prdt + 8 * i;
      const base = mem.readU32(at);
      const ctl = mem.readU32(at + 4);
      if (isFault(base) || isFault(ctl)) return PrdWalk.Fault;
      const len = ctl & 0xfffe || 0x10000;
      const take = Math.min(len, need - got);
      if (!out.push(mem, (base & ~1) >>> 0, take)) return PrdWalk.Fault;
      out.prdBytes += len;
      got += take;
      if (got >= need) return out.finish(mem) ? PrdWalk.Ok : PrdWalk.Fault;
      if ((ctl >>> 16) & PRD_EOT) return PrdWalk.Short;
    }
    return PrdWalk.Short;
  }
}
