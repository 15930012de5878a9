/**
 * The DMA protocol of a drive (READ/WRITE DMA and their EXT forms, and DATA SET MANAGEMENT, whose range list
 * arrives by DMA): the ATA side waits with DRQ set until the channel's DMA engine runs the command, then moves
 * the data between storage and the memory the engine prepared, and ends the command. The engine is reached
 * only through `IdeDmaOps` (dma-ops.ts): nothing here knows about PRD tables.
 *
 * No allocation per command on the read/write path: the storage continuations are module functions that get
 * the core back, and the engine hands out buffers it keeps.
 */

import type { IoError } from "../storage/types.ts";
import { DSM_RANGE_ENTRY_BYTES, ERR_ABRT, ST_DF, ST_DRDY, ST_DRQ, ST_DSC } from "../spec/ata.ts";
import type { AtaCore } from "./core.ts";
import { DmaPrepared } from "./dma-ops.ts";

/** Start a DMA command of `count` sectors at `lba`; `trim`: the data is a DATA SET MANAGEMENT range list. */
export function startDma(d: AtaCore, write: boolean, lba: number, count: number, trim = false): void {
  d.lba = lba;
  d.remaining = count;
  d.dmaPending = true;
  d.dmaWrite = write;
  d.dmaTrim = trim;
  d.dmaInflight = false;
  d.settings.power = "active";
  d.status = ST_DRDY | ST_DSC | ST_DRQ;
  d.bus.dma.start(d, runDma);
}

/** The engine is going (QEMU's ide_dma_cb at its start): map memory, check the range, start storage. */
function runDma(d: AtaCore): void {
  if (!d.dmaPending || d.dmaInflight) return;
  const dma = d.bus.dma;
  if (d.remaining === 0 && d.qemu) {
    // Only QEMU 7.2's DATA SET MANAGEMENT with Count 0 gets here: ide_dma_cb finds nothing left to do and
    // ends the command at once (0x50, interrupt, engine inactive), before looking at the PRD table.
    endDma(d, false);
    d.status = ST_DRDY | ST_DSC;
    d.raiseIrq();
    return;
  }
  const bytes = d.remaining * 512;
  const prepared = dma.prepare(bytes);
  if (prepared === DmaPrepared.Fault) {
    // Memory outside the guest: the engine flagged its error; the command is aborted.
    d.dmaPending = false;
    dma.end(false);
    d.abort();
    d.raiseIrq();
    return;
  }
  if (prepared === DmaPrepared.Short) {
    // The engine describes fewer bytes than the transfer: nothing moves, no interrupt (QEMU 7.2, BMIDE §3.1
    // "Interrupt 0, Active 0: the PRD table was smaller than the transfer").
    d.dmaPending = false;
    dma.end(false);
    d.status = ST_DRDY | ST_DSC;
    return;
  }
  if (d.dmaTrim) {
    runTrim(d);
    return;
  }
  const lba = d.lba;
  // A range that does not fit moves nothing (as QEMU 7.2; a DMA command has no block boundary to stop at)
  // and fails with IDNF at the first sector beyond the capacity.
  const valid = lba + d.remaining <= d.sectorCount ? d.remaining : 0;
  if (valid === 0) {
    endDma(d, false);
    d.rangeError();
    return;
  }
  d.dmaLba = lba;
  d.dmaCount = valid;
  const bufs = dma.buffers(d.dmaWrite);
  d.dmaInflight = true;
  if (d.dmaWrite) d.io("write", lba, bufs, dmaWritten, undefined, restartDma);
  else d.io("read", lba, bufs, dmaDone, undefined, restartDma);
}

/**
 * A request of this command failed, the error policy held it ("stop"), and the machine continues: the command
 * runs again from the start, as QEMU's ide_restart_dma re-runs it (its address and count are still those of the
 * start: nothing moved the task file). The engine walks the PRD table again from its table register, so a table
 * or buffer the guest changed while the machine was stopped is used, and a stopped engine is waited for.
 */
function restartDma(d: AtaCore): void {
  d.dmaPending = true;
  d.dmaInflight = false;
  d.bus.dma.start(d, runDma);
}

/** A DMA write reached storage: flush too when the write cache is off, then end the command. */
function dmaWritten(d: AtaCore, err: IoError | undefined): void {
  if (!err && !d.settings.writeCache) d.io("flush", 0, undefined, dmaDone, undefined, restartDma);
  else dmaDone(d, err);
}

/** The end of a DMA read or write: data into memory (reads), task file, engine, interrupt. */
function dmaDone(d: AtaCore, err: IoError | undefined): void {
  d.dmaInflight = false;
  const lba = d.dmaLba;
  const valid = d.dmaCount;
  d.bus.dma.commit(!d.dmaWrite);
  if (err) {
    endDma(d, false);
    d.failIo(err, d.dmaWrite, lba);
    return;
  }
  d.lba = lba + valid;
  d.remaining -= valid;
  d.setAddress(d.lba);
  d.tf.sectorCount = d.remaining & 0xff;
  endDma(d, true);
  d.status = ST_DRDY | ST_DSC;
  d.raiseIrq();
}

/** The DMA command is over for the drive and for the engine. */
function endDma(d: AtaCore, transferred: boolean): void {
  d.dmaPending = false;
  d.dmaInflight = false;
  d.bus.dma.end(transferred);
}

/**
 * DATA SET MANAGEMENT / TRIM (ACS-3 §7.5): the payload is `count` 512-byte blocks of 8-byte LBA Range Entries
 * (bits 47:0 LBA, 63:48 length, length 0 = unused). Every range is checked before anything is discarded; one
 * beyond the capacity aborts the command (QEMU ide-test /ide/bmdma/trim).
 */
function runTrim(d: AtaCore): void {
  const bytes = d.remaining * 512;
  const payload = bytes <= d.buf.length ? d.buf.subarray(0, bytes) : new Uint8Array(bytes);
  d.bus.dma.rw(payload, true);
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const cap = d.sectorCount;
  const ranges: number[] = [];
  for (let off = 0; off < bytes; off += DSM_RANGE_ENTRY_BYTES) {
    const lo = dv.getUint32(off, true);
    const hi = dv.getUint32(off + 4, true);
    const len = hi >>> 16;
    if (len === 0) continue;
    const lba = (hi & 0xffff) * 0x100000000 + lo;
    if (lba + len > cap) {
      trimRefused(d);
      return;
    }
    ranges.push(lba, len);
  }
  if (d.qemu) {
    // QEMU 7.2's -drive default is discard=ignore: every entry is checked, in order, and nothing is discarded
    // (so the entries before a bad one stay as they were too; docs/conformance.md C8).
    trimmed(d, undefined);
    return;
  }
  if (ranges.length === 0) {
    trimmed(d, undefined);
    return;
  }
  d.dmaInflight = true;
  // All discards go out as one batch; the command completes when the last one does.
  d.requests!.discard(ranges, trimmed, restartDma);
}

/** A range entry beyond the capacity: ABRT, no error bit in the engine (QEMU ide-test /ide/bmdma/trim). */
function trimRefused(d: AtaCore): void {
  endDma(d, false);
  d.abort();
  d.raiseIrq();
}

function trimmed(d: AtaCore, err: IoError | undefined): void {
  if (err) {
    endDma(d, false);
    d.fail(ERR_ABRT, -1, d.qemu ? 0 : ST_DF);
    return;
  }
  if (d.qemu) {
    // QEMU 7.2 ends TRIM like a DMA transfer: the task file address moves on by the payload's block count,
    // in the addressing the last media command used (docs/conformance.md C8).
    const at = d.tf.commandAddress(d.tf.lba48, d.settings.currentGeometry, true);
    if (at >= 0) d.setAddress(at + d.remaining);
  }
  d.remaining = 0;
  d.tf.sectorCount = 0;
  endDma(d, true);
  d.status = ST_DRDY | ST_DSC;
  d.raiseIrq();
}
