/**
 * Creating raw images and parsing the sizes users type ("64M", "2G", "1048576").
 */
import fs from "node:fs";

import { ImageError, ImageLockedError } from "./errors.ts";
import { lockHolder, lockPathOf } from "./lock.ts";
import { SECTOR_SIZE } from "./types.ts";

const SUFFIX: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * Bytes in a size written as a whole number with an optional K/M/G/T suffix (powers of 1024, as qemu-img;
 * case-insensitive, an optional trailing "B" or "iB" accepted: "64M", "64MiB", "512"). The result must be a
 * positive whole number of 512-byte sectors. Throws `ImageError("EBADSIZE")` otherwise.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*(?:([KMGT])(?:i?B)?|B)?\s*$/i.exec(text);
  if (!m) {
    throw new ImageError(
      "EBADSIZE",
      `invalid size "${text}": expected a number with an optional K, M, G or T suffix`,
    );
  }
  const bytes = Number(m[1]) * (m[2] ? SUFFIX[m[2].toUpperCase()]! : 1);
  if (!Number.isSafeInteger(bytes)) throw new ImageError("EBADSIZE", `size "${text}" is too large`);
  if (bytes === 0) throw new ImageError("EBADSIZE", `size "${text}" is zero`);
  if (bytes % SECTOR_SIZE !== 0) {
    throw new ImageError(
      "EBADSIZE",
      `size "${text}" (${bytes} bytes) is not a whole number of ${SECTOR_SIZE}-byte sectors`,
    );
  }
  return bytes;
}

export interface CreateImageOptions {
  /** Replace an existing file (never one a live process holds for writing). */
  force?: boolean;
}

/**
 * Create a sparse raw image of `bytes` bytes (ftruncate: no data blocks are allocated until written). Refuses
 * to touch an existing file unless `force`; even with `force`, refuses an image locked by a live writer.
 */
export function createImage(path: string, bytes: number, options: CreateImageOptions = {}): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % SECTOR_SIZE !== 0) {
    throw new ImageError(
      "EBADSIZE",
      `image size ${bytes} is not a positive whole number of ${SECTOR_SIZE}-byte sectors`,
      path,
    );
  }
  const force = options.force ?? false;
  if (force) {
    const pid = lockHolder(path);
    if (pid !== undefined) throw new ImageLockedError(path, pid, lockPathOf(path));
  }
  let fd: number;
  try {
    // "wx" = O_CREAT|O_EXCL: the existence check and the creation are one atomic step.
    fd = fs.openSync(path, force ? "w" : "wx", 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new ImageError("EEXIST", `${path} already exists (use force to overwrite it)`, path);
    }
    throw new ImageError("EOPEN", `cannot create image ${path}: ${(e as Error).message}`, path);
  }
  try {
    fs.ftruncateSync(fd, bytes);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(path, { force: true });
    throw new ImageError(
      "EOPEN",
      `cannot size image ${path} to ${bytes} bytes: ${(e as Error).message}`,
      path,
    );
  }
  fs.closeSync(fd);
}
