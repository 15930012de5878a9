/**
 * Non-data commands that touch the medium: FLUSH CACHE (EXT) and READ VERIFY SECTORS (EXT). Both keep BSY set
 * while storage works (with the async engine, visibly) and end with one interrupt.
 */

import { ERR_ABRT, ST_BSY, ST_DF, ST_DRDY, ST_DSC, ST_ERR } from "../spec/ata.ts";
import { type AtaCore, IO_BUF_SECTORS } from "./core.ts";

/** FLUSH CACHE (ACS-3 §7.10/§7.11); also the end of SET FEATURES "disable volatile write cache". */
export function flush(d: AtaCore): void {
  // In flight: BSY|DRDY with DSC clear (QEMU 7.2 shows 0xC0 too).
  d.status = ST_DRDY | ST_BSY;
  d.io("flush", 0, undefined, (_, err) => {
    if (err) {
      d.status = d.qemu ? ST_DRDY | ST_ERR : ST_DRDY | ST_DF | ST_ERR;
      d.error = ERR_ABRT;
      d.raiseIrq();
      return;
    }
    d.status = ST_DRDY | ST_DSC;
    d.raiseIrq();
  });
}

/** READ VERIFY (ACS-3 §7.32/§7.33): range-checked, and the sectors are really read so that a medium error reports UNC. */
export function verify(d: AtaCore, lba: number, count: number): void {
  const cap = d.sectorCount;
  d.lba = lba;
  d.remaining = count;
  d.settings.power = "active";
  if (lba + count > cap) {
    d.rangeError();
    return;
  }
  const tf = d.tf;
  const regs = [
    tf.sectorCount,
    tf.lbaLow,
    tf.lbaMid,
    tf.lbaHigh,
    tf.device,
    tf.hobLbaLow,
    tf.hobLbaMid,
    tf.hobLbaHigh,
  ] as const;
  const step = (at: number, left: number): void => {
    if (left === 0) {
      // Success leaves the task file as the host wrote it (observed on QEMU 7.2).
      [
        tf.sectorCount,
        tf.lbaLow,
        tf.lbaMid,
        tf.lbaHigh,
        tf.device,
        tf.hobLbaLow,
        tf.hobLbaMid,
        tf.hobLbaHigh,
      ] = regs;
      d.status = ST_DRDY | ST_DSC;
      d.raiseIrq();
      return;
    }
    const n = Math.min(left, IO_BUF_SECTORS);
    d.io("read", at, [d.buf.subarray(0, n * 512)], (_, err) => {
      if (err) {
        d.lba = at;
        d.remaining = left;
        d.failIo(err, false, at);
      } else step(at + n, left - n);
    });
  };
  d.status = ST_DRDY | ST_BSY;
  step(lba, count);
}
