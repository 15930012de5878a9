/**
 * A guest ATA driver for the legacy IDE channels of a PIIX controller, written as a kernel driver would be and
 * touching the hardware only through a `Vcpu`: port I/O (each access an exit), string I/O, its own RAM for
 * PRD tables and bounce buffers, and the channel's interrupt line.
 *
 * Register and protocol facts (register offsets and bits, opcodes, IDENTIFY words) come from src/spec/ata.ts,
 * which cites the standard for each; the protocols followed are PIO data-in, PIO data-out, DMA and non-data.
 * Bus Master IDE follows the Intel 82371SB datasheet §2.7 and SFF-8038i.
 */

import type { Vcpu } from "../hypervisor/hypervisor.ts";
import { GuestViews, isFault, PAGE_SIZE, PageAllocator } from "../hypervisor/memory.ts";
import {
  ATA_CMD,
  BM_CMD_READ,
  BM_CMD_START,
  BM_REG_COMMAND,
  BM_REG_PRDT,
  BM_REG_STATUS,
  BM_ST_ACTIVE,
  BM_ST_ERROR,
  BM_ST_INTR,
  CTL_HOB,
  CTL_NIEN,
  DEV_LBA,
  DEV_OBS,
  ERR_ABRT,
  ERR_IDNF,
  ERR_UNC,
  ID,
  ID_FIRMWARE_WORDS,
  ID_MODEL_WORDS,
  ID_SERIAL_WORDS,
  ID49_DMA,
  ID53_WORD88_VALID,
  ID59_MULTIPLE_VALID,
  ID82_WRITE_CACHE,
  ID83_FLUSH_CACHE,
  ID83_FLUSH_CACHE_EXT,
  ID83_LBA48,
  LBA28_LIMIT,
  MAX_COUNT_28,
  MAX_COUNT_48,
  PRD_ENTRY_BYTES,
  PRD_EOT,
  PRD_MAX_BYTES,
  REG_COMMAND,
  REG_DATA,
  REG_DEVICE,
  REG_ERROR,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS,
  ST_BSY,
  ST_DF,
  ST_DRQ,
  ST_ERR,
} from "../spec/ata.ts";
import { findPiixIde, setupBusMaster } from "./pci-scan.ts";

export const SECTOR = 512;

/**
 * PRD entries in the table: one 4 KiB page of 8-byte entries. The table must be dword-aligned and must not
 * cross a 64 KiB boundary (82371SB §2.7.2); a page-aligned page satisfies both, and QEMU's engine stops
 * reading descriptors at the end of that page.
 */
export const PRD_TABLE_ENTRIES = PAGE_SIZE / PRD_ENTRY_BYTES;
/** PRD entries address memory with 32 bits. */
const PRD_ADDR_LIMIT = 0x1_0000_0000;

export interface AtaChannel {
  /** Command block base (0x1F0 / 0x170). */
  cmd: number;
  /** Control block port: alternate status on read, device control on write (0x3F6 / 0x376). */
  ctl: number;
  /** ISA interrupt line (14 / 15). */
  irq: number;
  /** Offset of this channel's registers inside the Bus Master block. */
  bmOffset: number;
}

/** The two legacy-mode channels of a PIIX IDE function (prog-if 0x80: compatibility ports and IRQs). */
export const ATA_CHANNELS: readonly AtaChannel[] = [
  { cmd: 0x1f0, ctl: 0x3f6, irq: 14, bmOffset: 0 },
  { cmd: 0x170, ctl: 0x376, irq: 15, bmOffset: 8 },
];

/** How sector data crosses the data port. */
export type AtaVia = "pio" | "pio32" | "rep" | "dma";
export const ATA_VIAS: readonly AtaVia[] = ["pio", "pio32", "rep", "dma"];

export type AtaAddressing = "auto" | "lba28" | "lba48";

export type AtaErrorKind = "device" | "timeout" | "protocol" | "busmaster";

/** A command that failed: the device reported ERR/DF, did not answer, or broke the protocol. */
export class AtaError extends Error {
  constructor(
    message: string,
    readonly kind: AtaErrorKind,
    readonly command: number,
    readonly status: number,
    readonly error: number,
    /** Where the device's task file points after the failure (the first sector not transferred). */
    readonly lba?: number,
    /** Bus Master status, for DMA commands. */
    readonly bmStatus?: number,
  ) {
    super(message);
    this.name = "AtaError";
  }
}

/** What IDENTIFY DEVICE reported, decoded (ATA-7 vol 1 §6.17, Table 16). */
export interface AtaIdentity {
  model: string;
  serial: string;
  firmware: string;
  /** Addressable sectors: the LBA48 count when the feature set is supported, else the LBA28 count. */
  sectors: number;
  lba28Sectors: number;
  lba48Sectors: number;
  lba48: boolean;
  /** Logical CHS geometry (words 1, 3, 6). */
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  /** Maximum sectors per DRQ block for READ/WRITE MULTIPLE (word 47), and the current setting (word 59). */
  multipleMax: number;
  multipleCurrent: number;
  dwordIo: boolean;
  dma: boolean;
  /** Supported modes as bit masks (bit n = mode n). */
  pioModes: number;
  swdmaModes: number;
  mwdmaModes: number;
  udmaModes: number;
  /** Selected UDMA mode, or -1. */
  udmaSelected: number;
  flushCache: boolean;
  flushCacheExt: boolean;
  writeCacheSupported: boolean;
  writeCacheEnabled: boolean;
  /** The 256 raw words. */
  words: Uint16Array;
}

/** An ATA string: each word holds two characters, high byte first (ATA-7 vol 1 §3.3.10). */
export function ataString(words: Uint16Array, first: number, count: number): string {
  let s = "";
  for (let i = first; i < first + count; i++) {
    const w = words[i] ?? 0;
    s += String.fromCharCode(w >> 8, w & 0xff);
  }
  return s.replace(/[\s\0]+$/, "");
}

export function parseIdentify(words: Uint16Array): AtaIdentity {
  const w = (i: number): number => words[i] ?? 0;
  const lba28Sectors = (w(ID.LBA28_CAPACITY) | (w(ID.LBA28_CAPACITY + 1) << 16)) >>> 0;
  const lba48 = (w(ID.COMMAND_SET_SUPPORTED_2) & ID83_LBA48) !== 0;
  const lba48Sectors =
    w(ID.LBA48_CAPACITY) +
    w(ID.LBA48_CAPACITY + 1) * 0x10000 +
    w(ID.LBA48_CAPACITY + 2) * 0x1_0000_0000 +
    w(ID.LBA48_CAPACITY + 3) * 0x1_0000_0000_0000;
  let udmaSelected = -1;
  if (w(ID.FIELD_VALIDITY) & ID53_WORD88_VALID) {
    for (let m = 0; m < 7; m++) if (w(ID.UDMA_MODES) & (0x100 << m)) udmaSelected = m;
  }
  return {
    model: ataString(words, ID.MODEL_NUMBER, ID_MODEL_WORDS),
    serial: ataString(words, ID.SERIAL_NUMBER, ID_SERIAL_WORDS),
    firmware: ataString(words, ID.FIRMWARE_REVISION, ID_FIRMWARE_WORDS),
    sectors: lba48 && lba48Sectors > 0 ? lba48Sectors : lba28Sectors,
    lba28Sectors,
    lba48Sectors,
    lba48,
    cylinders: w(ID.CYLINDERS),
    heads: w(ID.HEADS),
    sectorsPerTrack: w(ID.SECTORS_PER_TRACK),
    multipleMax: w(ID.MAX_MULTIPLE) & 0xff,
    multipleCurrent: w(ID.MULTIPLE_SETTING) & ID59_MULTIPLE_VALID ? w(ID.MULTIPLE_SETTING) & 0xff : 0,
    dwordIo: (w(ID.DWORD_IO) & 1) !== 0,
    dma: (w(ID.CAPABILITIES) & ID49_DMA) !== 0,
    // Word 64 lists PIO 3 and 4; modes 0-2 are mandatory.
    pioModes: 0x7 | ((w(ID.FIELD_VALIDITY) & 2 ? w(ID.PIO_MODES) & 0x3 : 0) << 3),
    swdmaModes: w(ID.SWDMA_MODES) & 0x7,
    mwdmaModes: w(ID.MWDMA_MODES) & 0x7,
    udmaModes: w(ID.FIELD_VALIDITY) & ID53_WORD88_VALID ? w(ID.UDMA_MODES) & 0x7f : 0,
    udmaSelected,
    flushCache: (w(ID.COMMAND_SET_SUPPORTED_2) & ID83_FLUSH_CACHE) !== 0,
    flushCacheExt: (w(ID.COMMAND_SET_SUPPORTED_2) & ID83_FLUSH_CACHE_EXT) !== 0,
    writeCacheSupported: (w(ID.COMMAND_SET_SUPPORTED) & ID82_WRITE_CACHE) !== 0,
    writeCacheEnabled: (w(ID.COMMAND_SET_ENABLED) & ID82_WRITE_CACHE) !== 0,
    words,
  };
}

export interface AtaDriveOptions {
  /** 0 = primary (default), 1 = secondary. */
  channel?: 0 | 1;
  /** 0 = master (default), 1 = slave. */
  unit?: 0 | 1;
  /** Data transfer method (default "pio"). */
  via?: AtaVia;
  /** true (default): interrupt-driven, wait for INTRQ; false: nIEN set, poll BSY. */
  irq?: boolean;
  /** LBA28, LBA48, or the smallest that fits each command (default). */
  addressing?: AtaAddressing;
  /** Use READ/WRITE MULTIPLE with this many sectors per DRQ block (SET MULTIPLE MODE at probe). 0 = off. */
  multiple?: number;
  /** Where PRD tables, bounce buffers and `allocBuffer` buffers go in guest RAM (default: pages from 1 MiB up). */
  allocator?: PageAllocator;
  /**
   * The largest DMA command, in sectors (default 2048 = 1 MiB), and the size of the bounce buffer that DMA and
   * string I/O use for a caller's buffer outside guest RAM.
   */
  bufferSectors?: number;
  /** Give up on a command after this long (default 10 s). */
  timeoutMs?: number;
  /** Bus Master base port, when already known (otherwise found through PCI on the first DMA). */
  bmBase?: number;
}

interface DataCommand {
  read: number;
  write: number;
}

/** The opcodes of one transfer method: the 28-bit forms and the EXT (48-bit) forms. */
type CommandSet = DataCommand & { readonly ext: DataCommand };

const DMA_COMMANDS: CommandSet = {
  read: ATA_CMD.READ_DMA,
  write: ATA_CMD.WRITE_DMA,
  ext: { read: ATA_CMD.READ_DMA_EXT, write: ATA_CMD.WRITE_DMA_EXT },
};
const MULTIPLE_COMMANDS: CommandSet = {
  read: ATA_CMD.READ_MULTIPLE,
  write: ATA_CMD.WRITE_MULTIPLE,
  ext: { read: ATA_CMD.READ_MULTIPLE_EXT, write: ATA_CMD.WRITE_MULTIPLE_EXT },
};
const SECTORS_COMMANDS: CommandSet = {
  read: ATA_CMD.READ_SECTORS,
  write: ATA_CMD.WRITE_SECTORS,
  ext: { read: ATA_CMD.READ_SECTORS_EXT, write: ATA_CMD.WRITE_SECTORS_EXT },
};

/**
 * One ATA device on one channel. `probe()` first; then `read`/`readInto`, `write`, `flush`. Transfers larger
 * than one command allows are split (256 sectors for LBA28, 65536 for LBA48, `bufferSectors` and the PRD
 * table for DMA).
 *
 * A buffer from `allocBuffer` (or any other view of the vCPU's guest RAM) is used as a kernel uses its own
 * pages: DMA's PRD table points at it and REP INSW/OUTSW address it, so the data moves between the device
 * and the caller's buffer with no copy in the guest. Any other buffer goes through the driver's bounce buffer
 * in guest RAM, one copy each way.
 */
export class AtaDrive {
  readonly channel: AtaChannel;
  readonly unit: 0 | 1;
  readonly via: AtaVia;
  readonly useIrq: boolean;
  readonly addressing: AtaAddressing;
  readonly multiple: number;
  readonly timeoutMs: number;
  private readonly bufferSectors: number;
  private allocator: PageAllocator | undefined;
  private bounceGpa = -1;
  private prdGpa = -1;
  /** Recognises buffers in guest RAM (DMA and REP string I/O use them in place). */
  private readonly views: GuestViews;
  private bmBase: number | undefined;
  private ident: AtaIdentity | undefined;

  constructor(
    readonly vcpu: Vcpu,
    opts: AtaDriveOptions = {},
  ) {
    const ch = ATA_CHANNELS[opts.channel ?? 0];
    if (!ch) throw new RangeError(`no IDE channel ${String(opts.channel)}`);
    this.channel = ch;
    this.views = new GuestViews(vcpu.mem);
    this.unit = opts.unit ?? 0;
    this.via = opts.via ?? "pio";
    if (!ATA_VIAS.includes(this.via)) throw new RangeError(`unknown transfer method '${String(this.via)}'`);
    this.useIrq = opts.irq ?? true;
    this.addressing = opts.addressing ?? "auto";
    this.multiple = opts.multiple ?? 0;
    if (!(Number.isInteger(this.multiple) && this.multiple >= 0 && this.multiple <= 128)) {
      throw new RangeError(`multiple must be 0..128 sectors, got ${this.multiple}`);
    }
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.bufferSectors = opts.bufferSectors ?? 2048;
    if (!(Number.isInteger(this.bufferSectors) && this.bufferSectors >= 1 && this.bufferSectors <= 65536)) {
      throw new RangeError(`bufferSectors must be 1..65536, got ${this.bufferSectors}`);
    }
    this.allocator = opts.allocator;
    this.bmBase = opts.bmBase;
  }

  /** IDENTIFY data from the last probe. */
  get identity(): AtaIdentity {
    if (!this.ident) throw new Error("ATA drive not probed: call probe() first");
    return this.ident;
  }

  private get devctl(): number {
    return this.useIrq ? 0 : CTL_NIEN;
  }

  /**
   * Find the device: program nIEN, select it and look at its status (an absent device reads 0x00 or floats to
   * 0xFF), then IDENTIFY it, set the multiple-mode block size when asked, and for DMA find the controller on
   * PCI and map its Bus Master block. Null when nothing is there.
   */
  async probe(): Promise<AtaIdentity | null> {
    const v = this.vcpu;
    v.outb(this.channel.ctl, this.devctl);
    v.outb(this.channel.cmd + REG_DEVICE, DEV_OBS | (this.unit << 4));
    const st = v.inb(this.channel.ctl);
    if (st === 0x00 || st === 0xff) return null;
    this.ident = await this.identify();
    if (this.multiple > 0) await this.setMultipleMode(this.multiple);
    // A DMA driver maps the Bus Master block at initialisation, not on its first transfer.
    if (this.via === "dma") this.busMaster();
    return this.ident;
  }

  /** IDENTIFY DEVICE (PIO data-in, one 512-byte block), using this drive's PIO method ("dma" reads by words). */
  async identify(): Promise<AtaIdentity> {
    const cmd = ATA_CMD.IDENTIFY_DEVICE;
    const issued = this.issue(cmd, 0, 0, false, false);
    if (issued) await issued;
    const buf = new Uint8Array(SECTOR);
    const st = await this.waitIntr(cmd);
    this.checkDataReady(cmd, st, false);
    this.dataIn(buf, 0, SECTOR, -1);
    this.checkEnd(cmd, this.vcpu.inb(this.channel.ctl), false);
    const words = new Uint16Array(256);
    for (let i = 0; i < 256; i++) words[i] = buf[2 * i]! | (buf[2 * i + 1]! << 8);
    this.ident = parseIdentify(words);
    return this.ident;
  }

  /** SET MULTIPLE MODE: `sectors` per DRQ block for READ/WRITE MULTIPLE (0 disables). */
  async setMultipleMode(sectors: number): Promise<void> {
    await this.nonData(ATA_CMD.SET_MULTIPLE_MODE, sectors & 0xff, false);
    if (this.ident) this.ident.multipleCurrent = sectors;
  }

  /** FLUSH CACHE, or FLUSH CACHE EXT when the device has it and LBA48 addressing. */
  async flush(): Promise<void> {
    const id = this.ident;
    const ext = id
      ? id.flushCacheExt && id.lba48 && this.addressing !== "lba28"
      : this.addressing === "lba48";
    await this.nonData(ext ? ATA_CMD.FLUSH_CACHE_EXT : ATA_CMD.FLUSH_CACHE, 0, false);
  }

  /** Read `count` sectors from `lba` into a new array. */
  async read(lba: number, count: number): Promise<Uint8Array> {
    checkRange(lba, count);
    const out = new Uint8Array(count * SECTOR);
    await this.transfer(false, lba, count, out);
    return out;
  }

  /**
   * Read `out.length / 512` sectors from `lba` into `out`. When `out` lies in guest RAM (see `allocBuffer`),
   * DMA and REP INSW land in it directly.
   */
  readInto(lba: number, out: Uint8Array): Promise<void> {
    // Not an async function: the transfer's own promise is the result (one promise less per call).
    if (out.length % SECTOR !== 0) {
      return Promise.reject(new RangeError(`read into ${out.length} bytes: not whole sectors`));
    }
    const count = out.length / SECTOR;
    const bad = rangeError(lba, count);
    return bad ? Promise.reject(bad) : this.transfer(false, lba, count, out);
  }

  /**
   * Write whole sectors of `data` starting at `lba`. When `data` lies in guest RAM (see `allocBuffer`), DMA
   * and REP OUTSW take it from there directly.
   */
  async write(lba: number, data: Uint8Array): Promise<void> {
    if (data.length % SECTOR !== 0) throw new RangeError(`write of ${data.length} bytes: not whole sectors`);
    const count = data.length / SECTOR;
    checkRange(lba, count);
    await this.transfer(true, lba, count, data);
  }

  /**
   * A buffer of `bytes` bytes in guest RAM, as a kernel allocates its I/O buffers in its own memory: a
   * suitable DMA target for `readInto` and `write`. Like Linux's dma_alloc_coherent it is aligned to the
   * smallest power-of-two number of pages that holds it (here up to 64 KiB), so a buffer of up to 64 KiB is
   * one PRD entry. It stays allocated for the drive's lifetime (the drive's bump allocator has no free).
   */
  allocBuffer(bytes: number): Uint8Array {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`bad buffer size ${bytes}`);
    let align = PAGE_SIZE;
    while (align < bytes && align < PRD_MAX_BYTES) align *= 2;
    const gpa = this.pages().alloc(bytes, align);
    const v = this.vcpu.mem.view(gpa, bytes);
    if (isFault(v)) throw new RangeError(v.message);
    return v;
  }

  /** The guest-physical address of `buf` when it is a view of this vCPU's RAM, else -1. */
  guestAddress(buf: Uint8Array): number {
    return this.views.gpaOf(buf);
  }

  // ---- transfer planning -------------------------------------------------------------------------------------

  private async transfer(isWrite: boolean, lba: number, count: number, data: Uint8Array): Promise<void> {
    const set = this.via === "dma" ? DMA_COMMANDS : this.multiple > 0 ? MULTIPLE_COMMANDS : SECTORS_COMMANDS;
    // "auto" uses LBA48 only when the device has it (IDENTIFY word 83 bit 10); before a probe, assume not.
    const has48 = this.ident?.lba48 ?? false;
    const dma = this.via === "dma";
    // Where `data` is in guest RAM, when it is: DMA and string I/O then use it in place.
    let gpa = dma || this.via === "rep" ? this.guestAddress(data) : -1;
    // A PRD entry's base drops bit 0 and holds 32 bits (82371SB §2.7.2): such a buffer cannot be a target.
    if (dma && (gpa & 1 || gpa + data.length > PRD_ADDR_LIMIT)) gpa = -1;
    let done = 0;
    while (done < count) {
      const at = lba + done;
      let max: number;
      if (this.addressing === "lba28") max = MAX_COUNT_28;
      else if (this.addressing === "lba48" || has48) max = MAX_COUNT_48;
      else max = MAX_COUNT_28;
      if (dma) {
        max = Math.min(max, this.bufferSectors);
        // The PRD table has one entry per 64 KiB window the buffer touches.
        if (gpa >= 0) max = Math.min(max, prdFitSectors(gpa + done * SECTOR));
      }
      const n = Math.min(max, count - done);
      // Like Linux's lba_28_ok(): the 28-bit form whenever the whole command fits in it.
      const fits28 = at + n <= LBA28_LIMIT - 1 && n <= MAX_COUNT_28;
      let ext: boolean;
      if (this.addressing === "lba48") ext = true;
      else if (this.addressing === "lba28") ext = false;
      else ext = !fits28;
      if (!ext && !fits28) {
        throw new RangeError(
          `LBA ${at}+${n} is beyond LBA28 and the drive has no LBA48 (or LBA28 was forced)`,
        );
      }
      const opcode = isWrite ? (ext ? set.ext.write : set.write) : ext ? set.ext.read : set.read;
      const off = done * SECTOR;
      const where = gpa < 0 ? -1 : gpa + off;
      if (dma) {
        const pending = this.dmaCommand(opcode, isWrite, at, n, ext, data, off, where);
        if (pending) await pending;
      } else if (isWrite) await this.pioOut(opcode, at, n, ext, data, off, where);
      else await this.pioIn(opcode, at, n, ext, data, off, where);
      done += n;
    }
  }

  // ---- protocols ---------------------------------------------------------------------------------------------

  /** PIO data-in (ATA-7 vol 2 §11.3): one interrupt per DRQ block, data read after each. */
  private async pioIn(
    cmd: number,
    lba: number,
    count: number,
    ext: boolean,
    out: Uint8Array,
    off: number,
    gpa: number,
  ): Promise<void> {
    const block = this.blockSectors(cmd);
    const issued = this.issue(cmd, lba, count, ext, true);
    if (issued) await issued;
    for (let done = 0; done < count;) {
      const now = this.intrNow();
      const st = now >= 0 ? now : await this.waitIntr(cmd);
      this.checkDataReady(cmd, st, ext);
      const n = Math.min(block, count - done);
      const at = done * SECTOR;
      this.dataIn(out, off + at, n * SECTOR, gpa < 0 ? -1 : gpa + at);
      done += n;
    }
    // After the last block the device clears DRQ without another interrupt.
    this.checkEnd(cmd, this.vcpu.inb(this.channel.ctl), ext);
  }

  /**
   * PIO data-out (ATA-7 vol 2 §11.4): the first block goes as soon as DRQ is up (no interrupt before it), every
   * later one after the interrupt that ends the previous block; the last interrupt ends the command.
   */
  private async pioOut(
    cmd: number,
    lba: number,
    count: number,
    ext: boolean,
    src: Uint8Array,
    off: number,
    gpa: number,
  ): Promise<void> {
    const block = this.blockSectors(cmd);
    const issued = this.issue(cmd, lba, count, ext, true);
    if (issued) await issued;
    let st = await this.pollAlt(cmd);
    for (let done = 0; done < count;) {
      this.checkDataReady(cmd, st, ext);
      const n = Math.min(block, count - done);
      const at = done * SECTOR;
      this.dataOut(src, off + at, n * SECTOR, gpa < 0 ? -1 : gpa + at);
      done += n;
      const now = this.intrNow();
      st = now >= 0 ? now : await this.waitIntr(cmd);
    }
    this.checkEnd(cmd, st, ext);
  }

  /** Non-data protocol (ATA-7 vol 2 §11.2): command, interrupt, status. */
  private async nonData(cmd: number, nsect: number, ext: boolean): Promise<void> {
    const v = this.vcpu;
    const wait = this.untilReady(cmd);
    if (wait) await wait;
    v.outb(this.channel.cmd + REG_DEVICE, DEV_OBS | DEV_LBA | (this.unit << 4));
    v.outb(this.channel.cmd + REG_SECTOR_COUNT, nsect);
    v.outb(this.channel.cmd + REG_COMMAND, cmd);
    const st = await this.waitIntr(cmd);
    this.checkEnd(cmd, st, ext);
  }

  /**
   * Bus Master DMA (ATA-7 vol 2 §11.6 with the 82371SB Bus Master sequence): PRD table and buffer in guest
   * RAM, command, start the engine with the direction bit, wait for the interrupt, then stop the engine, read
   * the ATA status (which acknowledges the interrupt) and clear the Bus Master interrupt bit. The buffer is
   * the caller's own at `gpa` when it lies in guest RAM (-1: the bounce buffer, copied to or from `data`).
   * Returns a promise only when the command had to wait (a device that was busy, an interrupt not yet there):
   * with a device model that completes at once, the whole command runs without a trip through the event loop.
   */
  private dmaCommand(
    cmd: number,
    isWrite: boolean,
    lba: number,
    count: number,
    ext: boolean,
    data: Uint8Array,
    off: number,
    gpa: number,
  ): Promise<void> | undefined {
    const v = this.vcpu;
    const bm = this.busMaster() + this.channel.bmOffset;
    const bytes = count * SECTOR;
    const bounce = gpa < 0;
    if (bounce) {
      gpa = this.bounceGpa;
      if (isWrite) {
        const f = v.mem.write(gpa, data.subarray(off, off + bytes));
        if (f) throw new Error(f.message);
      }
    }
    this.buildPrdTable(gpa, bytes);
    v.outb(bm + BM_REG_COMMAND, 0);
    // Writing back what was read clears INTR and ERROR (write-one-to-clear) and keeps the drive-capable bits.
    v.outb(bm + BM_REG_STATUS, v.inb(bm + BM_REG_STATUS));
    v.outl(bm + BM_REG_PRDT, this.prdGpa);
    // Where a read's data goes from the bounce buffer once the command is over (null: it is there already).
    const copyTo = bounce && !isWrite ? data.subarray(off, off + bytes) : null;
    const issued = this.issue(cmd, lba, count, ext, true);
    if (issued) {
      return issued.then(async () => this.dmaEnd(cmd, ext, bm, await this.dmaRun(cmd, isWrite, bm), copyTo));
    }
    const bms = this.dmaRun(cmd, isWrite, bm);
    if (typeof bms === "number") {
      this.dmaEnd(cmd, ext, bm, bms, copyTo);
      return undefined;
    }
    return bms.then((st) => this.dmaEnd(cmd, ext, bm, st, copyTo));
  }

  /** Start the engine and wait for the end of the transfer; the Bus Master status then (a number if at once). */
  private dmaRun(cmd: number, isWrite: boolean, bm: number): number | Promise<number> {
    const v = this.vcpu;
    v.outb(bm + BM_REG_COMMAND, BM_CMD_START | (isWrite ? 0 : BM_CMD_READ));
    if (!this.useIrq) return this.dmaPoll(cmd, bm);
    // An interrupt already pending is taken at once, as it is by a CPU that enables interrupts before HLT.
    if (v.irqRaised(this.channel.irq)) return v.inb(bm + BM_REG_STATUS);
    return this.dmaWaitIrq(cmd, bm);
  }

  private async dmaWaitIrq(cmd: number, bm: number): Promise<number> {
    const v = this.vcpu;
    if (!(await v.waitIrq(this.channel.irq, this.timeoutMs))) {
      v.outb(bm + BM_REG_COMMAND, 0);
      throw this.timeout(cmd);
    }
    return v.inb(bm + BM_REG_STATUS);
  }

  /** nIEN keeps the INTR bit clear too, so poll for the engine to stop and the device to drop DRQ. */
  private async dmaPoll(cmd: number, bm: number): Promise<number> {
    const v = this.vcpu;
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const bms = v.inb(bm + BM_REG_STATUS);
      if (bms & BM_ST_INTR || !(bms & BM_ST_ACTIVE)) {
        if (!(v.inb(this.channel.ctl) & (ST_BSY | ST_DRQ))) return bms;
      }
      if (Date.now() > deadline) {
        v.outb(bm + BM_REG_COMMAND, 0);
        throw this.timeout(cmd);
      }
      await v.relax();
    }
  }

  /** Stop the engine, acknowledge the interrupt, check the outcome, and copy a read out of the bounce buffer. */
  private dmaEnd(cmd: number, ext: boolean, bm: number, bms: number, copyTo: Uint8Array | null): void {
    const v = this.vcpu;
    v.outb(bm + BM_REG_COMMAND, 0);
    const st = v.inb(this.channel.cmd + REG_STATUS);
    v.outb(bm + BM_REG_STATUS, bms);
    if (st & (ST_ERR | ST_DF)) throw this.deviceError(cmd, st, ext, bms);
    if (bms & BM_ST_ERROR) {
      throw new AtaError(
        `${cmdName(cmd)}: Bus Master error (BM status 0x${hex2(bms)})`,
        "busmaster",
        cmd,
        st,
        0,
        undefined,
        bms,
      );
    }
    if (st & (ST_BSY | ST_DRQ) || bms & BM_ST_ACTIVE) {
      throw new AtaError(
        `${cmdName(cmd)}: DMA did not complete (status 0x${hex2(st)}, BM status 0x${hex2(bms)})`,
        "protocol",
        cmd,
        st,
        0,
        undefined,
        bms,
      );
    }
    if (copyTo) {
      const f = v.mem.read(this.bounceGpa, copyTo);
      if (f) throw new Error(f.message);
    }
  }

  // ---- building blocks ---------------------------------------------------------------------------------------

  private blockSectors(cmd: number): number {
    if (cmd === ATA_CMD.READ_MULTIPLE || cmd === ATA_CMD.WRITE_MULTIPLE) return this.multiple;
    if (cmd === ATA_CMD.READ_MULTIPLE_EXT || cmd === ATA_CMD.WRITE_MULTIPLE_EXT) return this.multiple;
    return 1;
  }

  /**
   * Select the device and load the task file, then write the command, once the device is neither busy nor
   * transferring (alternate status: does not touch INTRQ). Returns a promise only when it had to wait.
   * LBA48 registers are written twice, high-order byte first: each write pushes the previous value into the
   * HOB copy (ATA-7 vol 1 §5.2).
   */
  private issue(
    cmd: number,
    lba: number,
    count: number,
    ext: boolean,
    addressed: boolean,
  ): Promise<void> | undefined {
    const wait = this.untilReady(cmd);
    if (wait) return wait.then(() => this.loadTaskFile(cmd, lba, count, ext, addressed));
    this.loadTaskFile(cmd, lba, count, ext, addressed);
    return undefined;
  }

  /** Undefined when the alternate status shows neither BSY nor DRQ, else a promise of the moment it does. */
  private untilReady(cmd: number): Promise<void> | undefined {
    const st = this.vcpu.inb(this.channel.ctl);
    return st & (ST_BSY | ST_DRQ) ? this.waitReady(cmd) : undefined;
  }

  /** Poll the alternate status until BSY and DRQ are clear, pausing between reads (the first read showed one). */
  private async waitReady(cmd: number): Promise<void> {
    const v = this.vcpu;
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      await v.relax();
      const st = v.inb(this.channel.ctl);
      if (!(st & (ST_BSY | ST_DRQ))) return;
      if (Date.now() > deadline) throw this.timeout(cmd, st);
    }
  }

  private loadTaskFile(cmd: number, lba: number, count: number, ext: boolean, addressed: boolean): void {
    const v = this.vcpu;
    const base = this.channel.cmd;
    const lbaBits = addressed && !ext ? Math.floor(lba / 0x100_0000) & 0x0f : 0;
    v.outb(base + REG_DEVICE, DEV_OBS | (addressed ? DEV_LBA : 0) | (this.unit << 4) | lbaBits);
    if (addressed) {
      if (ext) {
        const hi = Math.floor(lba / 0x100_0000);
        v.outb(base + REG_SECTOR_COUNT, (count >> 8) & 0xff);
        v.outb(base + REG_LBA_LOW, hi & 0xff);
        v.outb(base + REG_LBA_MID, (hi >> 8) & 0xff);
        v.outb(base + REG_LBA_HIGH, (hi >> 16) & 0xff);
      }
      v.outb(base + REG_SECTOR_COUNT, count & 0xff);
      v.outb(base + REG_LBA_LOW, lba & 0xff);
      v.outb(base + REG_LBA_MID, (lba >>> 8) & 0xff);
      v.outb(base + REG_LBA_HIGH, (lba >>> 16) & 0xff);
    }
    v.outb(base + REG_COMMAND, cmd);
  }

  /**
   * The end of a block that is already signalled, taken without yielding: with interrupts on, a pending INTRQ
   * (as a CPU that enables interrupts before HLT takes it at once), then STATUS, which acknowledges it. -1 when
   * the driver must wait (`waitIntr`), and always when polling, whose first STATUS read is `waitIntr`'s own.
   */
  private intrNow(): number {
    if (!this.useIrq || !this.vcpu.irqPending(this.channel.irq)) return -1;
    return this.vcpu.inb(this.channel.cmd + REG_STATUS);
  }

  /** Wait for the end of a block or command: INTRQ then STATUS (which acknowledges it), or poll STATUS. */
  private async waitIntr(cmd: number): Promise<number> {
    const v = this.vcpu;
    if (this.useIrq) {
      if (!(await v.waitIrq(this.channel.irq, this.timeoutMs)))
        throw this.timeout(cmd, v.inb(this.channel.ctl));
      return v.inb(this.channel.cmd + REG_STATUS);
    }
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const st = v.inb(this.channel.cmd + REG_STATUS);
      if (!(st & ST_BSY)) return st;
      if (Date.now() > deadline) throw this.timeout(cmd, st);
      await v.relax();
    }
  }

  /** Poll the alternate status until BSY clears (the wait before the first PIO data-out block). */
  private async pollAlt(cmd: number): Promise<number> {
    const v = this.vcpu;
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const st = v.inb(this.channel.ctl);
      if (!(st & ST_BSY)) return st;
      if (Date.now() > deadline) throw this.timeout(cmd, st);
      await v.relax();
    }
  }

  private checkDataReady(cmd: number, st: number, ext: boolean): void {
    if (st & (ST_ERR | ST_DF)) throw this.deviceError(cmd, st, ext);
    if (!(st & ST_DRQ)) {
      throw new AtaError(`${cmdName(cmd)}: expected DRQ, status 0x${hex2(st)}`, "protocol", cmd, st, 0);
    }
  }

  private checkEnd(cmd: number, st: number, ext: boolean): void {
    if (st & (ST_ERR | ST_DF)) throw this.deviceError(cmd, st, ext);
    if (st & (ST_BSY | ST_DRQ)) {
      throw new AtaError(
        `${cmdName(cmd)}: command did not end, status 0x${hex2(st)}`,
        "protocol",
        cmd,
        st,
        0,
      );
    }
  }

  private timeout(cmd: number, st = 0): AtaError {
    return new AtaError(
      `${cmdName(cmd)}: no answer within ${this.timeoutMs} ms (status 0x${hex2(st)})`,
      "timeout",
      cmd,
      st,
      0,
    );
  }

  /** Build the error from the device's registers: ERROR, and the task file's LBA (HOB bytes for LBA48). */
  private deviceError(cmd: number, st: number, ext: boolean, bms?: number): AtaError {
    const v = this.vcpu;
    const base = this.channel.cmd;
    const err = v.inb(base + REG_ERROR);
    let lba =
      v.inb(base + REG_LBA_LOW) | (v.inb(base + REG_LBA_MID) << 8) | (v.inb(base + REG_LBA_HIGH) << 16);
    if (ext) {
      v.outb(this.channel.ctl, this.devctl | CTL_HOB);
      const hi =
        v.inb(base + REG_LBA_LOW) | (v.inb(base + REG_LBA_MID) << 8) | (v.inb(base + REG_LBA_HIGH) << 16);
      v.outb(this.channel.ctl, this.devctl);
      lba += hi * 0x100_0000;
    } else {
      lba += (v.inb(base + REG_DEVICE) & 0x0f) * 0x100_0000;
    }
    const bits: string[] = [];
    if (err & ERR_ABRT) bits.push("ABRT");
    if (err & ERR_IDNF) bits.push("IDNF");
    if (err & ERR_UNC) bits.push("UNC");
    if (st & ST_DF) bits.push("DF");
    const what = bits.length ? bits.join("|") : "error";
    return new AtaError(
      `${cmdName(cmd)} failed: ${what} (status 0x${hex2(st)}, error 0x${hex2(err)}) at LBA ${lba}`,
      "device",
      cmd,
      st,
      err,
      lba,
      bms,
    );
  }

  /**
   * Move `bytes` from the data port into `dst` at `off`: by words, by dwords, or by REP INSW, straight into
   * `dst` at guest address `gpa` when it is in guest RAM, else into the bounce buffer and then `dst`.
   */
  private dataIn(dst: Uint8Array, off: number, bytes: number, gpa: number): void {
    const v = this.vcpu;
    const port = this.channel.cmd + REG_DATA;
    if (this.via === "pio32") {
      for (let i = 0; i < bytes; i += 4) {
        const d = v.inl(port);
        dst[off + i] = d & 0xff;
        dst[off + i + 1] = (d >>> 8) & 0xff;
        dst[off + i + 2] = (d >>> 16) & 0xff;
        dst[off + i + 3] = d >>> 24;
      }
    } else if (this.via === "rep") {
      if (gpa >= 0) {
        v.insw(port, gpa, bytes / 2);
        return;
      }
      const at = this.bounce();
      v.insw(port, at, bytes / 2);
      const f = v.mem.read(at, dst.subarray(off, off + bytes));
      if (f) throw new Error(f.message);
    } else {
      for (let i = 0; i < bytes; i += 2) {
        const w = v.inw(port);
        dst[off + i] = w & 0xff;
        dst[off + i + 1] = w >>> 8;
      }
    }
  }

  private dataOut(src: Uint8Array, off: number, bytes: number, gpa: number): void {
    const v = this.vcpu;
    const port = this.channel.cmd + REG_DATA;
    if (this.via === "pio32") {
      for (let i = 0; i < bytes; i += 4) {
        v.outl(
          port,
          src[off + i]! | (src[off + i + 1]! << 8) | (src[off + i + 2]! << 16) | (src[off + i + 3]! << 24),
        );
      }
    } else if (this.via === "rep") {
      if (gpa >= 0) {
        v.outsw(port, gpa, bytes / 2);
        return;
      }
      const at = this.bounce();
      const f = v.mem.write(at, src.subarray(off, off + bytes));
      if (f) throw new Error(f.message);
      v.outsw(port, at, bytes / 2);
    } else {
      for (let i = 0; i < bytes; i += 2) v.outw(port, src[off + i]! | (src[off + i + 1]! << 8));
    }
  }

  private pages(): PageAllocator {
    return (this.allocator ??= new PageAllocator(this.vcpu.mem, 0x10_0000));
  }

  /** The bounce buffer (64 KiB aligned, so it needs the fewest PRD entries) and the PRD table page. */
  private bounce(): number {
    if (this.bounceGpa < 0) {
      const alloc = this.pages();
      const bytes = Math.max(this.bufferSectors, this.multiple, 1) * SECTOR;
      this.bounceGpa = alloc.alloc(bytes, PRD_MAX_BYTES);
      // 8 bytes per PRD: a 32 MiB buffer on 64 KiB boundaries needs 512 entries, the whole page.
      this.prdGpa = alloc.alloc(PRD_TABLE_ENTRIES * 8);
    }
    return this.bounceGpa;
  }

  /**
   * Describe [gpa, gpa + bytes) in the PRD table: one entry per 64 KiB window the range touches, since an
   * entry may neither exceed 64 KiB nor cross a 64 KiB boundary; EOT on the last (82371SB §2.7.2). The caller
   * keeps `gpa` even and the range within `PRD_TABLE_ENTRIES` windows (see `prdFitSectors`).
   */
  private buildPrdTable(gpa: number, bytes: number): void {
    const mem = this.vcpu.mem;
    this.bounce();
    const end = gpa + bytes;
    let entry = this.prdGpa;
    for (let at = gpa; at < end;) {
      const next = Math.min(end, (Math.floor(at / PRD_MAX_BYTES) + 1) * PRD_MAX_BYTES);
      const n = next - at;
      mem.writeU32(entry, at);
      // Byte count 0 means 64 KiB (82371SB §2.7.2).
      mem.writeU16(entry + 4, n & 0xffff);
      mem.writeU16(entry + 6, next >= end ? PRD_EOT : 0);
      at = next;
      entry += 8;
    }
  }

  private busMaster(): number {
    this.bounce();
    if (this.bmBase === undefined) {
      const fn = findPiixIde(this.vcpu);
      if (!fn) throw new Error("no PIIX IDE function on PCI bus 0: DMA is unavailable");
      this.bmBase = setupBusMaster(this.vcpu, fn);
    }
    return this.bmBase;
  }
}

/** The most sectors from guest address `gpa` on that one PRD table can describe. */
function prdFitSectors(gpa: number): number {
  const limit = (Math.floor(gpa / PRD_MAX_BYTES) + PRD_TABLE_ENTRIES) * PRD_MAX_BYTES;
  return Math.floor((limit - gpa) / SECTOR);
}

function rangeError(lba: number, count: number): RangeError | undefined {
  if (!Number.isSafeInteger(lba) || lba < 0 || lba >= 2 ** 48) return new RangeError(`bad LBA ${lba}`);
  if (!Number.isSafeInteger(count) || count < 0) return new RangeError(`bad sector count ${count}`);
  if (lba + count > 2 ** 48) return new RangeError(`LBA ${lba}+${count} beyond the 48-bit address space`);
  return undefined;
}

function checkRange(lba: number, count: number): void {
  const e = rangeError(lba, count);
  if (e) throw e;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

const CMD_NAMES = new Map<number, string>(
  Object.entries(ATA_CMD).map(([k, v]) => [v as number, k.replace(/_/g, " ")] as [number, string]),
);

export function cmdName(cmd: number): string {
  return CMD_NAMES.get(cmd) ?? `command 0x${hex2(cmd)}`;
}
