/**
 * The PACKET protocol of an ATAPI drive (ATA-6 §9.10 PACKET command protocol, §9.11 PACKET DMA), as QEMU 7.2's
 * hw/ide/atapi.c runs it: the PACKET command opens a DRQ block for the 12-byte command packet; the packet's
 * command runs through the MMC table (mmc.ts); its data goes to the host either in DRQ blocks no larger than the
 * byte count limit the host wrote to LBA Mid/High, each announced by an interrupt with the interrupt reason in
 * the Sector Count register, or through the channel's DMA engine; the status phase ends it (CoD|IO, interrupt).
 * A CHECK CONDITION puts the sense key into the Error register and keeps the sense data for REQUEST SENSE.
 */

import type { IoError } from "../../storage/types.ts";
import { ERR_ABRT, ST_BSY, ST_DRDY, ST_DRQ, ST_DSC, ST_ERR } from "../../spec/ata.ts";
import {
  ASC,
  ATAPI_PACKET_SIZE,
  CD_FRAMES_PER_SECOND,
  CD_MSF_OFFSET,
  CD_RAW_SECTOR_SIZE,
  CD_SECTOR_SIZE,
  ERR_MC,
  ERR_SENSE_KEY_SHIFT,
  INT_REASON_COD,
  INT_REASON_IO,
  PACKET_FEAT_DMA,
  PACKET_FEAT_OVL,
  SENSE_KEY,
} from "../../spec/atapi.ts";
import { type AtaCore, type CommandHandler, EndTransfer } from "../core.ts";
import { DmaPrepared } from "../dma-ops.ts";
import { type CdState, ChangeReport, cdState } from "./state.ts";

/** 512-byte medium sectors per 2048-byte CD block (the ISO image is read in 512-byte sectors, as QEMU does). */
export const SECTORS_PER_BLOCK = CD_SECTOR_SIZE / 512;
/** Blocks fetched at once for PIO (the drive buffer holds 64 KiB of user data, or 32 raw sectors). */
const PIO_CHUNK_BLOCKS = 32;
/**
 * Largest data phase of one DMA command. The Bus Master maps a command's whole PRD table at once, so a larger
 * transfer is refused (docs/conformance.md F: QEMU streams it in 128 KiB chunks).
 */
export const CD_DMA_MAX_BYTES = 32 << 20;

/** Blocks of the medium now inserted (0 without one). */
export function capacityBlocks(d: AtaCore): number {
  return Math.floor(d.sectorCount / SECTORS_PER_BLOCK);
}

/** A medium is in the drive (QEMU blk_is_inserted). */
export function mediumInserted(d: AtaCore): boolean {
  return d.requests !== null;
}

/** The medium can be read: tray shut and a medium with sectors (QEMU media_present). */
export function mediaPresent(d: AtaCore): boolean {
  return !cdState(d).trayOpen && d.sectorCount > 0 && mediumInserted(d);
}

// ------------------------------------------------------------------------------------------------
// Status phases.

/** Successful completion: status phase, interrupt reason CoD|IO (ATA-6 §9.10 state HP4). */
export function commandOk(d: AtaCore): void {
  d.stopTransfer();
  d.error = 0;
  d.status = ST_DRDY | ST_DSC;
  d.tf.sectorCount = (d.tf.sectorCount & ~7) | INT_REASON_IO | INT_REASON_COD;
  d.raiseIrq();
}

/** CHECK CONDITION: the sense key in Error bits 7:4 (ATA-6 §8.21.5), the sense data kept for REQUEST SENSE. */
export function checkCondition(d: AtaCore, key: number, asc: number): void {
  const s = cdState(d);
  d.stopTransfer();
  d.error = key << ERR_SENSE_KEY_SHIFT;
  d.status = ST_DRDY | ST_ERR;
  d.tf.sectorCount = (d.tf.sectorCount & ~7) | INT_REASON_IO | INT_REASON_COD;
  s.senseKey = key;
  s.asc = asc;
  d.raiseIrq();
}

/**
 * A command refused because a unit attention is pending: Error = UNIT ATTENTION and MC, Status ERR only, Sector
 * Count 0, as QEMU 7.2 answers it (ide_atapi_cmd_check_status).
 */
function unitAttentionPending(d: AtaCore): void {
  d.stopTransfer();
  d.error = ERR_MC | (SENSE_KEY.UNIT_ATTENTION << ERR_SENSE_KEY_SHIFT);
  d.status = ST_ERR;
  d.tf.sectorCount = 0;
  d.raiseIrq();
}

/** A storage error of a read: beyond the medium = ILLEGAL REQUEST / LBA OUT OF RANGE, else MEDIUM ERROR. */
function readFailed(d: AtaCore, err: IoError): void {
  if (err.code === "ERANGE") checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.LBA_OUT_OF_RANGE);
  else checkCondition(d, SENSE_KEY.MEDIUM_ERROR, ASC.UNRECOVERED_READ_ERROR);
}

// ------------------------------------------------------------------------------------------------
// The PACKET command and the packet itself.

/** The byte count limit in LBA Mid/High; FFFFh means FFFEh (ATA-6 §8.21.4: the limit shall not be FFFFh). */
export function byteCountLimit(d: AtaCore): number {
  const bcl = d.tf.lbaMid | (d.tf.lbaHigh << 8);
  return bcl === 0xffff ? 0xfffe : bcl;
}

/** PACKET (A0h, ATA-6 §8.21): overlap is not offered; DMA per Features bit 0; DRQ for the packet, no interrupt. */
export const packetCommand: CommandHandler = (d) => {
  if (d.tf.features & PACKET_FEAT_OVL) {
    d.abort();
    return true;
  }
  const s = cdState(d);
  s.dma = (d.tf.features & PACKET_FEAT_DMA) !== 0;
  d.tf.sectorCount = INT_REASON_COD;
  d.xfer = s.packet;
  d.dataPtr = 0;
  d.dataEnd = ATAPI_PACKET_SIZE;
  d.dataOut = true;
  d.endTransfer = EndTransfer.Kind;
  d.blockEnd = packetArrived;
  d.status = ST_DRDY | ST_DSC | ST_DRQ;
  return false;
};

/** The command may run while a unit attention is pending (MMC-5 §4.1.6.1). */
export const ALLOW_UA = 1;
/** The command needs a readable medium; else NOT READY / MEDIUM NOT PRESENT (MMC-5 §4.1.8). */
export const CHECK_READY = 2;
/** The command moves no data, so a byte count limit of 0 is allowed (ACS-3 §7.18.6.49). */
export const NONDATA = 4;
/** The command checks the byte count limit itself, when it does move data (READ CD). */
export const CONDDATA = 8;

export interface PacketCommand {
  readonly name: string;
  readonly flags: number;
  readonly handler: (d: AtaCore, s: CdState, packet: Uint8Array) => void;
}

/** The MMC table, set by mmc.ts (it imports this module, not the other way round). */
let table: readonly (PacketCommand | undefined)[] = [];
export function setPacketTable(t: readonly (PacketCommand | undefined)[]): void {
  table = t;
}

function packetArrived(d: AtaCore): void {
  d.stopTransfer();
  d.status = ST_DRDY | ST_DSC;
  const s = cdState(d);
  const p = s.packet;
  const cmd = table[p[0]!];
  const flags = cmd?.flags ?? 0;
  if (s.senseKey === SENSE_KEY.UNIT_ATTENTION && !(flags & ALLOW_UA)) {
    unitAttentionPending(d);
    return;
  }
  // A media change is reported as the tray opening and closing: NOT READY once, then UNIT ATTENTION.
  if (!(flags & ALLOW_UA) && !s.trayOpen && mediumInserted(d) && s.changed !== ChangeReport.None) {
    if (s.changed === ChangeReport.NotReady) {
      s.changed = ChangeReport.UnitAttention;
      checkCondition(d, SENSE_KEY.NOT_READY, ASC.MEDIUM_NOT_PRESENT);
    } else {
      s.changed = ChangeReport.None;
      checkCondition(d, SENSE_KEY.UNIT_ATTENTION, ASC.MEDIUM_MAY_HAVE_CHANGED);
    }
    return;
  }
  if (flags & CHECK_READY && !mediaPresent(d)) {
    checkCondition(d, SENSE_KEY.NOT_READY, ASC.MEDIUM_NOT_PRESENT);
    return;
  }
  if (!cmd) {
    checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.INVALID_COMMAND_OPERATION_CODE);
    return;
  }
  if (!(flags & (NONDATA | CONDDATA)) && !validateByteCount(d)) return;
  cmd.handler(d, s, p);
}

/**
 * A PIO data command with a byte count limit of 0 aborts at the ATA level (ACS-3 §7.18.6.49): ABRT, and, as in
 * QEMU 7.2, no interrupt.
 */
export function validateByteCount(d: AtaCore): boolean {
  if (cdState(d).dma || byteCountLimit(d) !== 0) return true;
  d.stopTransfer();
  d.status = ST_DRDY | ST_ERR;
  d.error = ERR_ABRT;
  return false;
}

// ------------------------------------------------------------------------------------------------
// Data-in: a reply built by the command, or blocks read from the medium.

/** Send the first `min(size, allocation)` bytes of `s.reply` (the allocation length caps every reply). */
export function reply(d: AtaCore, size: number, allocation: number): void {
  const s = cdState(d);
  const n = Math.min(size, allocation);
  s.readLba = -1;
  s.readLeft = 0;
  s.src = s.reply;
  s.srcPos = 0;
  s.srcEnd = n;
  s.remaining = n;
  s.elementLeft = 0;
  s.fetchError = undefined;
  startData(d);
}

/** Read `count` blocks from `lba` as `blockSize`-byte sectors (2048 user data, 2352 raw). */
export function readBlocks(d: AtaCore, lba: number, count: number, blockSize: number): void {
  const s = cdState(d);
  s.readLba = lba;
  s.readLeft = count;
  s.blockSize = blockSize;
  s.src = d.buf;
  s.srcPos = s.srcEnd = 0;
  s.remaining = count * blockSize;
  s.elementLeft = 0;
  s.fetchError = undefined;
  d.settings.power = "active";
  startData(d);
}

function startData(d: AtaCore): void {
  const s = cdState(d);
  if (s.dma) {
    if (s.remaining > CD_DMA_MAX_BYTES) {
      checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.INVALID_FIELD_IN_CDB);
      return;
    }
    d.dmaPending = true;
    d.dmaInflight = false;
    // A read waits for the engine with BSY as well as DRQ (QEMU 7.2: "XXX: check if BUSY_STAT should be set").
    d.status = ST_DRDY | ST_DSC | ST_DRQ | (s.readLba >= 0 ? ST_BSY : 0);
    d.bus.dma.start(d, runDma);
    return;
  }
  d.status = ST_DRDY | ST_DSC;
  pump(d);
}

/**
 * The PIO data-in loop (QEMU ide_atapi_cmd_reply_end): open the next DRQ window, or fetch more blocks, or end
 * the command. A new DRQ block announces itself with IO set, CoD clear, its size in LBA Mid/High (the byte
 * count limit, made even when it cuts the transfer) and an interrupt; a window that ends inside a DRQ block
 * because the drive buffer ran out continues it without an interrupt.
 */
function pump(d: AtaCore): void {
  const s = cdState(d);
  if (s.remaining <= 0) {
    commandOk(d);
    return;
  }
  // A DRQ block is offered whole: the drive buffer first takes every byte of it (as QEMU reads the sectors of
  // a block before the host can take them), unless a read already failed, which is reported where it stands.
  const want = s.elementLeft > 0 ? s.elementLeft : elementSize(d, s.remaining);
  const have = s.srcEnd - s.srcPos;
  if ((have < want || have === 0) && s.readLba >= 0 && s.readLeft > 0 && !s.fetchError) {
    fetch(d);
    return;
  }
  if (have <= 0) {
    if (s.fetchError) readFailed(d, s.fetchError);
    else commandOk(d); // nothing left to offer: cannot happen while bytes remain, but never wedge
    return;
  }
  let size: number;
  let fresh = false;
  if (s.elementLeft > 0) size = Math.min(s.srcEnd - s.srcPos, s.elementLeft);
  else {
    fresh = true;
    d.tf.sectorCount = (d.tf.sectorCount & ~7) | INT_REASON_IO;
    size = want;
    d.tf.lbaMid = size & 0xff;
    d.tf.lbaHigh = (size >> 8) & 0xff;
    s.elementLeft = size;
    size = Math.min(size, s.srcEnd - s.srcPos);
  }
  s.remaining -= size;
  s.elementLeft -= size;
  d.xfer = s.src;
  d.dataPtr = s.srcPos;
  d.dataEnd = s.srcPos + size;
  d.dataOut = false;
  d.endTransfer = EndTransfer.Kind;
  d.blockEnd = windowDone;
  s.srcPos += size;
  d.status = ST_DRDY | ST_DSC | ST_DRQ;
  if (fresh) d.raiseIrq();
}

/** The size of the next DRQ block: what remains, cut to the byte count limit, made even when cut. */
function elementSize(d: AtaCore, remaining: number): number {
  let bcl = byteCountLimit(d);
  if (remaining <= bcl) return remaining;
  if (bcl & 1) bcl--;
  return bcl;
}

function windowDone(d: AtaCore): void {
  d.stopTransfer();
  d.status = ST_DRDY | ST_DSC;
  pump(d);
}

/**
 * Fetch the next blocks of a PIO read into the drive buffer behind the bytes not yet offered (BSY while storage
 * works).
 */
function fetch(d: AtaCore): void {
  const s = cdState(d);
  const lba = s.readLba;
  if (!d.requests) {
    checkCondition(d, SENSE_KEY.NOT_READY, ASC.MEDIUM_NOT_PRESENT);
    return;
  }
  const cap = capacityBlocks(d);
  if (lba >= cap) {
    checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.LBA_OUT_OF_RANGE);
    return;
  }
  // What is left of the buffer moves to its start; the new blocks follow it.
  const keep = s.srcEnd - s.srcPos;
  const buf = d.buf;
  if (keep > 0 && s.srcPos > 0) buf.copyWithin(0, s.srcPos, s.srcEnd);
  const room = Math.floor((buf.length - keep) / s.blockSize);
  const n = Math.min(s.readLeft, PIO_CHUNK_BLOCKS, cap - lba, room);
  const raw = s.blockSize === CD_RAW_SECTOR_SIZE;
  const data = raw ? s.staging() : buf.subarray(keep);
  d.status = ST_DRDY | ST_DSC | ST_BSY;
  d.io("read", lba * SECTORS_PER_BLOCK, [data.subarray(0, n * CD_SECTOR_SIZE)], (_, err) => {
    let valid = n;
    if (err) {
      const at = err.sector;
      valid =
        at !== undefined && at >= lba * SECTORS_PER_BLOCK && at < (lba + n) * SECTORS_PER_BLOCK
          ? Math.floor((at - lba * SECTORS_PER_BLOCK) / SECTORS_PER_BLOCK)
          : 0;
      s.fetchError = err;
    }
    if (raw) for (let i = 0; i < valid; i++) rawSector(buf.subarray(keep), i, data, lba + i);
    s.src = buf;
    s.srcPos = 0;
    s.srcEnd = keep + valid * s.blockSize;
    s.readLba = lba + valid;
    s.readLeft -= valid;
    d.status = ST_DRDY | ST_DSC;
    pump(d);
  });
}

/**
 * A raw 2352-byte Mode 1 sector around the user data of block `lba` (MMC-5 §4.2.3.5): sync pattern, header
 * with the MSF address and mode 1, user data, and EDC/ECC left zero (as QEMU leaves them).
 */
function rawSector(out: Uint8Array, i: number, data: Uint8Array, lba: number): void {
  const o = i * CD_RAW_SECTOR_SIZE;
  out[o] = 0;
  out.fill(0xff, o + 1, o + 11);
  out[o + 11] = 0;
  const f = lba + CD_MSF_OFFSET;
  out[o + 12] = Math.floor(f / CD_FRAMES_PER_SECOND / 60) & 0xff;
  out[o + 13] = Math.floor(f / CD_FRAMES_PER_SECOND) % 60;
  out[o + 14] = f % CD_FRAMES_PER_SECOND;
  out[o + 15] = 1;
  out.set(data.subarray(i * CD_SECTOR_SIZE, (i + 1) * CD_SECTOR_SIZE), o + 16);
  out.fill(0, o + 16 + CD_SECTOR_SIZE, o + CD_RAW_SECTOR_SIZE);
}

// ------------------------------------------------------------------------------------------------
// Data-in by DMA (ATA-6 §9.11).

/** The engine is going: map the whole data phase, move it, end with the status phase. */
function runDma(d: AtaCore): void {
  if (!d.dmaPending || d.dmaInflight) return;
  const s = cdState(d);
  const dma = d.bus.dma;
  const bytes = s.remaining;
  if (bytes === 0) {
    d.dmaPending = false;
    dma.end(false);
    commandOk(d);
    return;
  }
  const prepared = dma.prepare(bytes);
  if (prepared === DmaPrepared.Fault) {
    // Memory outside the guest (docs/conformance.md D2, as for the disk): the command aborts.
    d.dmaPending = false;
    dma.end(false);
    d.stopTransfer();
    d.status = ST_DRDY | ST_ERR;
    d.error = ERR_ABRT;
    d.raiseIrq();
    return;
  }
  if (prepared === DmaPrepared.Short) {
    shortTable(d, bytes);
    return;
  }
  if (s.readLba < 0) {
    dma.rw(s.reply.subarray(0, bytes), false);
    dmaFinished(d);
    return;
  }
  if (!d.requests) {
    d.dmaPending = false;
    dma.end(false);
    checkCondition(d, SENSE_KEY.NOT_READY, ASC.MEDIUM_NOT_PRESENT);
    return;
  }
  const lba = s.readLba;
  const count = s.readLeft;
  if (lba + count > capacityBlocks(d)) {
    d.dmaPending = false;
    dma.end(false);
    checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.LBA_OUT_OF_RANGE);
    return;
  }
  d.dmaInflight = true;
  if (s.blockSize === CD_RAW_SECTOR_SIZE) {
    const data = new Uint8Array(count * CD_SECTOR_SIZE);
    d.io("read", lba * SECTORS_PER_BLOCK, [data], (_, err) => {
      d.dmaInflight = false;
      if (err) {
        dmaFailed(d, err);
        return;
      }
      const out = new Uint8Array(bytes);
      for (let i = 0; i < count; i++) rawSector(out, i, data, lba + i);
      dma.rw(out, false);
      dmaFinished(d);
    });
    return;
  }
  d.io("read", lba * SECTORS_PER_BLOCK, dma.buffers(false), dmaRead);
}

/**
 * The PRD table describes less memory than the data phase: as QEMU 7.2, the bytes the table covers are moved,
 * then the engine stops, without an interrupt, and the drive keeps its status (a read stays BSY until a reset).
 */
function shortTable(d: AtaCore, bytes: number): void {
  const s = cdState(d);
  const dma = d.bus.dma;
  // How much the table covers: the largest even length it maps whole (tables describe even byte counts).
  let lo = 0;
  let hi = bytes;
  while (hi - lo > 2) {
    const mid = (lo + (hi - lo) / 2) & ~1;
    if (dma.prepare(mid) === DmaPrepared.Ok) lo = mid;
    else hi = mid;
  }
  const stop = (): void => {
    d.dmaPending = false;
    d.dmaInflight = false;
    dma.end(false);
  };
  if (lo === 0 || dma.prepare(lo) !== DmaPrepared.Ok) {
    stop();
    return;
  }
  if (s.readLba < 0) {
    dma.rw(s.reply.subarray(0, lo), false);
    stop();
    return;
  }
  const blocks = Math.ceil(lo / s.blockSize);
  const lba = s.readLba;
  if (!d.requests || lba + blocks > capacityBlocks(d)) {
    stop();
    return;
  }
  const data = new Uint8Array(blocks * CD_SECTOR_SIZE);
  d.dmaInflight = true;
  d.io("read", lba * SECTORS_PER_BLOCK, [data], (_, err) => {
    if (!err) {
      let out = data;
      if (s.blockSize === CD_RAW_SECTOR_SIZE) {
        out = new Uint8Array(blocks * CD_RAW_SECTOR_SIZE);
        for (let i = 0; i < blocks; i++) rawSector(out, i, data, lba + i);
      }
      dma.rw(out.subarray(0, lo), false);
    }
    stop();
  });
}

function dmaRead(d: AtaCore, err: IoError | undefined): void {
  d.dmaInflight = false;
  d.bus.dma.commit(true);
  if (err) dmaFailed(d, err);
  else dmaFinished(d);
}

/** The data phase is over: the engine goes inactive (an ATAPI transfer never leaves it active, as QEMU 7.2). */
function dmaFinished(d: AtaCore): void {
  d.dmaPending = false;
  d.bus.dma.end(false);
  commandOk(d);
}

function dmaFailed(d: AtaCore, err: IoError): void {
  d.dmaPending = false;
  d.bus.dma.end(false);
  readFailed(d, err);
}
