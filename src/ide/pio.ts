/**
 * The PIO protocols of a drive (ATA-6 §9: PIO data-in, PIO data-out): single-block replies (IDENTIFY,
 * SMART data), READ SECTORS/MULTIPLE with a prefetch of the rest of the command into the drive buffer, WRITE
 * SECTORS/MULTIPLE with the volatile write cache, and the data port itself: 16-bit words and REP string runs
 * moving through the drive's DRQ window. The data-port functions are the hot path of PIO: no allocation per word,
 * one monomorphic call per access.
 */

import type { GuestMemory, MemoryFault } from "../hypervisor/memory.ts";
import { ERR_ABRT, ERR_IDNF, ERR_UNC, ST_BSY, ST_DRDY, ST_DRQ, ST_DSC } from "../spec/ata.ts";
import { type AtaCore, EndTransfer, IO_BUF_SECTORS } from "./core.ts";

// ------------------------------------------------------------------------------------------------
// Data port.

/** A 16-bit read of the data port: the next word of a data-in block, or 0 outside one. */
export function readData16(d: AtaCore): number {
  // ST_DRQ as a literal and a strict boolean test: in a bundle a module constant is a variable, loaded and
  // checked at every use, and a bare boolean test compiles to a generic truthiness check.
  if (!(d.status & 0x08) /* ST_DRQ */ || d.dataOut === true) return 0;
  const p = d.dataPtr;
  if (p + 2 > d.dataEnd) return 0;
  const x = d.xfer;
  const v = x[p]! | (x[p + 1]! << 8);
  d.dataPtr = p + 2;
  if (d.dataPtr >= d.dataEnd) endOfBlock(d);
  return v;
}

/** A 16-bit write of the data port: the next word of a data-out block, dropped outside one. */
export function writeData16(d: AtaCore, v: number): void {
  if (!(d.status & ST_DRQ) || !d.dataOut) return;
  const p = d.dataPtr;
  if (p + 2 > d.dataEnd) return;
  d.xfer[p] = v & 0xff;
  d.xfer[p + 1] = (v >>> 8) & 0xff;
  d.dataPtr = p + 2;
  if (d.dataPtr >= d.dataEnd) endOfBlock(d);
}

/**
 * REP INSW/INSD/OUTSW/OUTSD: whole runs of the DRQ block move between the drive buffer and guest memory in one
 * copy per block, up to `total` bytes. Returns the bytes moved (the transfer stops where the device stops
 * offering data), or the fault of a guest address. With `granule` 4, only whole dwords of a block move (QEMU
 * 7.2's dword items: the rest of a block shorter than 4 bytes stays, docs/conformance.md A8).
 */
export function transferString(
  d: AtaCore,
  toMemory: boolean,
  mem: GuestMemory,
  gpa: number,
  total: number,
  granule: 1 | 4 = 1,
): number | MemoryFault {
  let done = 0;
  while (done < total) {
    if (!(d.status & ST_DRQ) || d.dataOut === toMemory) break;
    const p = d.dataPtr;
    let take = Math.min(d.dataEnd - p, total - done);
    if (granule === 4) take &= ~3;
    if (take <= 0) break;
    const chunk = d.xfer.subarray(p, p + take);
    const f = toMemory ? mem.write(gpa + done, chunk) : mem.read(gpa + done, chunk);
    if (f) return f;
    d.dataPtr = p + take;
    done += take;
    if (d.dataPtr >= d.dataEnd) endOfBlock(d);
  }
  return done;
}

/** The host moved the last byte of the DRQ block. */
function endOfBlock(d: AtaCore): void {
  const e = d.endTransfer;
  if (e === EndTransfer.ReadNext) {
    d.stopTransfer();
    nextBlockIn(d);
  } else if (e === EndTransfer.WriteCommit) commitBlockOut(d);
  else if (e === EndTransfer.Kind) d.blockEnd!(d);
  else {
    d.stopTransfer();
    d.status = ST_DRDY | ST_DSC;
  }
}

// ------------------------------------------------------------------------------------------------
// PIO data-in.

/** A single-block data-in transfer from `data` (IDENTIFY, SMART READ DATA). */
export function startSingleIn(d: AtaCore, data: Uint8Array): void {
  d.xfer = data;
  d.dataPtr = 0;
  d.dataEnd = data.length;
  d.dataOut = false;
  d.endTransfer = EndTransfer.Single;
  d.status = ST_DRDY | ST_DSC | ST_DRQ;
  d.raiseIrq();
}

/** READ SECTORS / READ MULTIPLE: `count` sectors from `lba` in DRQ blocks of `blockSectors`. */
export function startPioIn(d: AtaCore, lba: number, count: number, blockSectors: number): void {
  d.lba = lba;
  d.remaining = count;
  d.blockSectors = blockSectors;
  d.pfStart = lba;
  d.pfValid = 0;
  d.pfError = -1;
  d.settings.power = "active";
  nextBlockIn(d);
}

function nextBlockIn(d: AtaCore): void {
  if (d.remaining === 0) {
    d.stopTransfer();
    d.status = ST_DRDY | ST_DSC;
    return;
  }
  const n = Math.min(d.blockSectors, d.remaining);
  const lba = d.lba;
  const cap = d.sectorCount;
  if (lba + n > cap) {
    d.rangeError();
    return;
  }
  if (lba >= d.pfStart && lba + n <= d.pfStart + d.pfValid) {
    // The block is in the buffer: offer it. The task file already points past it (as QEMU 7.2).
    const off = (lba - d.pfStart) * 512;
    d.xfer = d.buf;
    d.dataPtr = off;
    d.dataEnd = off + n * 512;
    d.dataOut = false;
    d.endTransfer = EndTransfer.ReadNext;
    d.lba = lba + n;
    d.remaining -= n;
    d.setAddress(d.lba);
    d.tf.sectorCount = d.remaining & 0xff;
    d.status = ST_DRDY | ST_DSC | ST_DRQ;
    d.raiseIrq();
    return;
  }
  if (d.pfError >= lba && d.pfError < lba + n) {
    // The prefetch failed inside this block: the blocks before it were delivered; report the failing sector.
    const code = d.pfErrorCode;
    // QEMU 7.2 reads block by block and reports ABRT at the start of the block whose request failed.
    if (d.qemu) d.fail(ERR_ABRT, lba);
    else d.fail(code === "ERANGE" ? ERR_IDNF : ERR_UNC, d.pfError);
    return;
  }
  // Fetch the rest of the command (up to the buffer) in one storage request.
  const count = Math.min(d.remaining, IO_BUF_SECTORS, cap - lba);
  d.stopTransfer();
  d.status = ST_DRDY | ST_DSC | ST_BSY;
  const bufs = [d.buf.subarray(0, count * 512)];
  d.io("read", lba, bufs, (_, err) => {
    d.pfStart = lba;
    if (err) {
      const at = err.sector !== undefined && err.sector >= lba && err.sector < lba + count ? err.sector : lba;
      d.pfValid = at - lba;
      d.pfError = at;
      d.pfErrorCode = err.code;
    } else {
      d.pfValid = count;
      d.pfError = -1;
    }
    nextBlockIn(d);
  });
}

// ------------------------------------------------------------------------------------------------
// PIO data-out.

/** WRITE SECTORS / WRITE MULTIPLE: `count` sectors to `lba` in DRQ blocks of `blockSectors`. */
export function startPioOut(d: AtaCore, lba: number, count: number, blockSectors: number): void {
  d.lba = lba;
  d.remaining = count;
  d.blockSectors = blockSectors;
  d.wbStart = lba;
  d.wbCount = 0;
  d.settings.power = "active";
  offerBlockOut(d, false);
}

/** Open the DRQ window for the next data-out block, behind the blocks already held in the buffer. */
function offerBlockOut(d: AtaCore, irq: boolean): void {
  // The range is checked when the block is committed, after its data phase, as QEMU 7.2 does (the error is
  // reported at a DRQ block boundary either way, ATA-6 §9.8).
  const n = Math.min(d.blockSectors, d.remaining);
  const off = d.wbCount * 512;
  d.xfer = d.buf;
  d.dataPtr = off;
  d.dataEnd = off + n * 512;
  d.dataOut = true;
  d.endTransfer = EndTransfer.WriteCommit;
  d.status = ST_DRDY | ST_DSC | ST_DRQ;
  // ATA PIO data-out: no interrupt before the first block; one after every block written.
  if (irq) d.raiseIrq();
}

/**
 * A data-out block is complete. With the volatile write cache enabled, the block is acknowledged as soon as it
 * is in the drive's buffer (the cache may hold written data, ACS-3 §7.45 ENABLE VOLATILE WRITE CACHE), and
 * blocks are committed to storage together when the buffer is full, the command ends, or the next block is out
 * of range; a failure is then reported for the first failing sector. With the cache off every block reaches the
 * medium (written and flushed) before its interrupt.
 */
function commitBlockOut(d: AtaCore): void {
  const n = (d.dataEnd - d.wbCount * 512) / 512;
  const lba = d.lba;
  d.stopTransfer();
  const cap = d.sectorCount;
  if (lba + n > cap) {
    // Blocks before it were committed already (caching stops short of a block that does not fit).
    d.rangeError();
    return;
  }
  d.wbCount += n;
  const left = d.remaining - n;
  const next = Math.min(d.blockSectors, left);
  if (
    // QEMU 7.2 writes every block before the next DRQ (no drive buffer): C2, C3 behave as there.
    !d.qemu &&
    d.settings.writeCache &&
    left > 0 &&
    d.wbCount + next <= IO_BUF_SECTORS &&
    lba + n + next <= d.sectorCount
  ) {
    d.lba = lba + n;
    d.remaining = left;
    d.setAddress(d.lba);
    d.tf.sectorCount = d.remaining & 0xff;
    offerBlockOut(d, true);
    return;
  }
  d.status = ST_DRDY | ST_DSC | ST_BSY;
  const start = d.wbStart;
  const bufs = [d.buf.subarray(0, d.wbCount * 512)];
  d.io(
    "write",
    start,
    bufs,
    d.afterWrite((_, err) => {
      d.wbCount = 0;
      if (err) {
        d.failIo(err, true, start);
        return;
      }
      d.lba = lba + n;
      d.remaining = left;
      d.wbStart = d.lba;
      d.setAddress(d.lba);
      d.tf.sectorCount = d.remaining & 0xff;
      if (d.remaining === 0) {
        d.status = ST_DRDY | ST_DSC;
        d.raiseIrq();
      } else offerBlockOut(d, true);
    }),
  );
}
