/**
 * The benchmark's disk image and its page-cache state.
 *
 * Every path runs against the same raw image. It is written through once with 1 MiB writes (so reads hit
 * real data, not a sparse hole), and re-read right before each measured cell: on this kind of VM the kernel's
 * proactive reclaim evicts pages idle for about a minute, and a cold random read costs ten times a warm one.
 * The rate of that warming read is recorded with the cell: large-block throughput depends 2-3x on whether the
 * cache holds large or small folios, and the warming rate shows which.
 */
import fs from "node:fs";

import { allocAligned } from "../storage/aligned.ts";
import type { WarmInfo } from "./types.ts";
import { fillPattern } from "./offsets.ts";

const CHUNK = 1 << 20;

/** Create (or reuse, when it has the right size) the bench image at `path`, filled with patterned data. */
export function prepareImage(path: string, bytes: number): void {
  if (bytes % CHUNK !== 0) throw new RangeError(`bench image size must be a multiple of 1 MiB, got ${bytes}`);
  try {
    if (fs.statSync(path).size === bytes) return;
  } catch {
    /* create it */
  }
  const fd = fs.openSync(path, "w", 0o644);
  try {
    const buf = new Uint8Array(CHUNK);
    for (let off = 0; off < bytes; off += CHUNK) {
      fillPattern(buf, off / 512, 0x5eed);
      fs.writeSync(fd, buf, 0, CHUNK, off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Read the first `bytes` of the image through the page cache; returns how long it took. */
export function warmImage(path: string, bytes: number): WarmInfo {
  const fd = fs.openSync(path, "r");
  const buf = new Uint8Array(CHUNK);
  const t0 = performance.now();
  try {
    for (let off = 0; off < bytes; off += CHUNK) fs.readSync(fd, buf, 0, Math.min(CHUNK, bytes - off), off);
  } finally {
    fs.closeSync(fd);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { bytes, seconds, gbps: bytes / seconds / 1e9 };
}

/** True when the file system holding `path` accepts O_DIRECT (and an aligned 4 KiB read through it works). */
export function directSupported(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
    const buf = allocAligned(4096, false);
    fs.readSync(fd, buf, 0, 4096, 0);
    return true;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
