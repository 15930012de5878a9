/**
 * Where each I/O of a workload goes. Sequential I/O walks the working set block by block and wraps; random
 * I/O picks whole blocks with xorshift32. (An LCG computed in doubles degenerates to a few thousand distinct
 * blocks, which would keep a "random" run inside the CPU cache.) Every path and its baseline draw from the
 * same seed, so they touch the same bytes in the same order.
 */
import type { AccessPattern } from "./types.ts";

export const SECTOR = 512;

export type OffsetSource = () => number;

/** A generator of starting sectors for `blockSize`-byte I/Os inside the first `workingSet` bytes. */
export function offsets(
  pattern: AccessPattern,
  blockSize: number,
  workingSet: number,
  seed = 0x9e3779b9,
): OffsetSource {
  const blocks = Math.floor(workingSet / blockSize);
  if (blocks < 1) throw new RangeError(`working set of ${workingSet} bytes holds no ${blockSize}-byte block`);
  const sectorsPerBlock = blockSize / SECTOR;
  if (pattern === "seq") {
    let next = 0;
    return () => {
      const b = next;
      next = next + 1 === blocks ? 0 : next + 1;
      return b * sectorsPerBlock;
    };
  }
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) % blocks) * sectorsPerBlock;
  };
}

/** Deterministic bytes for writes and for checking reads: sector LBA in the first 4 bytes, then a pattern. */
export function fillPattern(buf: Uint8Array, lba: number, salt = 0): Uint8Array {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let s = 0; s < buf.length / SECTOR; s++) {
    const o = s * SECTOR;
    dv.setUint32(o, (lba + s) >>> 0, true);
    dv.setUint32(o + 4, salt >>> 0, true);
    for (let i = 8; i < SECTOR; i++) buf[o + i] = (lba + s + i * 31 + salt) & 0xff;
  }
  return buf;
}
