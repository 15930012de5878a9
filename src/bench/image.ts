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

/**
 * The images the demo and the benchmark make carry a stamp in one extra sector after their data, which no
 * workload touches: a later run recognises its own image by it and may reuse or rewrite it, while any other
 * existing file is left alone unless the user says `--force`.
 */
const STAMP_MAGIC = "xenide sample image v1\n";

/** An existing file the command did not make, and `--force` was not given. */
export class ImageExistsError extends Error {
  constructor(readonly path: string) {
    super(
      `${path} exists and is not an image xenide made for this; choose another --image or add --force to overwrite it`,
    );
    this.name = "ImageExistsError";
  }
}

function stampSector(bytes: number): Uint8Array {
  const s = new Uint8Array(512);
  s.set(new TextEncoder().encode(`${STAMP_MAGIC}${JSON.stringify({ dataBytes: bytes })}\n`));
  return s;
}

/** True when `path` is an image made by `prepareImage` with `bytes` of data. */
function isOwnImage(path: string, bytes: number): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, "r");
    if (fs.fstatSync(fd).size !== bytes + 512) return false;
    const got = new Uint8Array(512);
    fs.readSync(fd, got, 0, 512, bytes);
    return Buffer.from(got).equals(Buffer.from(stampSector(bytes)));
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Create the bench or demo image at `path` — `bytes` of patterned data (the disk the workloads use) and the
 * stamp sector — or reuse it when it is one this function made with the same size. Any other existing file is
 * refused with `ImageExistsError`, unless `force`.
 */
export function prepareImage(path: string, bytes: number, opts: { force?: boolean } = {}): void {
  if (bytes % CHUNK !== 0) throw new RangeError(`bench image size must be a multiple of 1 MiB, got ${bytes}`);
  if (isOwnImage(path, bytes)) return;
  // "wx" creates the file only if it is not there (nothing is truncated before the check); "w" only with --force.
  let fd: number;
  try {
    fd = fs.openSync(path, opts.force ? "w" : "wx", 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new ImageExistsError(path);
    throw e;
  }
  try {
    const buf = new Uint8Array(CHUNK);
    for (let off = 0; off < bytes; off += CHUNK) {
      fillPattern(buf, off / 512, 0x5eed);
      fs.writeSync(fd, buf, 0, CHUNK, off);
    }
    fs.writeSync(fd, stampSector(bytes), 0, 512, bytes);
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
