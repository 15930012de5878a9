/**
 * Creating raw images and parsing the sizes users type ("64M", "2G", "1048576").
 */
import { Stats, closeSync, ftruncateSync, openSync, rmSync, statSync } from "node:fs";

import { ImageError, ImageLockedError } from "./errors.ts";
import { lockHolder, lockPathOf } from "./lock.ts";
import { SECTOR_SIZE } from "./types.ts";

/** Multiples of qemu-img's size suffixes (QEMU's qemu_strtosz): powers of 1024; B is bytes. */
const SUFFIX: Record<string, bigint> = {
  B: 1n,
  K: 1024n,
  M: 1024n ** 2n,
  G: 1024n ** 3n,
  T: 1024n ** 4n,
  P: 1024n ** 5n,
  E: 1024n ** 6n,
};

/**
 * Bytes in a size as qemu-img and QEMU's command line take it (qemu_strtosz): a decimal number, a fraction
 * allowed with a suffix ("1.5G"; fractional bytes are cut off, as QEMU does), and an optional suffix B, K, M, G,
 * T, P or E (powers of 1024, case-insensitive; "MiB" and "MB" are read as M). No suffix means bytes. Throws
 * `ImageError("EBADSIZE")` for anything else, or a size beyond 2^53 bytes.
 */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+)(?:\.(\d+))?\s*(?:([BKMGTPE])(?:i?B)?)?\s*$/i.exec(text);
  if (!m || (m[2] !== undefined && (m[3] === undefined || m[3].toUpperCase() === "B"))) {
    throw new ImageError(
      "EBADSIZE",
      `invalid size "${text}": expected a number with an optional suffix B, K, M, G, T, P or E (a fraction only with K and up)`,
    );
  }
  const mul = SUFFIX[(m[3] ?? "B").toUpperCase()]!;
  const frac = m[2] ?? "";
  const bytes = BigInt(m[1]!) * mul + (frac ? (BigInt(frac) * mul) / 10n ** BigInt(frac.length) : 0n);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER))
    throw new ImageError("EBADSIZE", `size "${text}" is too large`);
  return Number(bytes);
}

/**
 * Bytes in an image size (see `parseByteSize`): it must be a positive whole number of 512-byte sectors. Throws
 * `ImageError("EBADSIZE")` otherwise.
 */
export function parseSize(text: string): number {
  const bytes = parseByteSize(text);
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
    // --force replaces an image file, never a device, a directory or a FIFO that happens to be at the path.
    let st: Stats | undefined;
    try {
      st = statSync(path);
    } catch {
      st = undefined;
    }
    if (st && !st.isFile())
      throw new ImageError("EOPEN", `${path} is not a regular file; mkimage only replaces image files`, path);
    const pid = lockHolder(path);
    if (pid !== undefined) throw new ImageLockedError(path, pid, lockPathOf(path));
  }
  let fd: number;
  try {
    // "wx" = O_CREAT|O_EXCL: the existence check and the creation are one atomic step.
    fd = openSync(path, force ? "w" : "wx", 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new ImageError("EEXIST", `${path} already exists (use force to overwrite it)`, path);
    }
    throw new ImageError("EOPEN", `cannot create image ${path}: ${(e as Error).message}`, path);
  }
  try {
    ftruncateSync(fd, bytes);
  } catch (e) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw new ImageError(
      "EOPEN",
      `cannot size image ${path} to ${bytes} bytes: ${(e as Error).message}`,
      path,
    );
  }
  closeSync(fd);
}

/**
 * A file's identity (device and inode, links followed), or null when nothing is at the path: two paths with the
 * same identity name one file, so a command can refuse to write one of its inputs through another name.
 */
export function fileIdentity(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}
