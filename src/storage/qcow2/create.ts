/**
 * Creating an empty qcow2 image, laid out as qemu-img create does: the header (with its extensions and the
 * backing file name) in cluster 0, then the refcount table, the refcount blocks that count every metadata
 * cluster, and a zeroed L1 table; nothing else is allocated, and the L1 table stays a sparse hole.
 */
import { Stats, closeSync, fsyncSync, ftruncateSync, openSync, rmSync, statSync, writeSync } from "node:fs";

import { ImageError, ImageLockedError } from "../errors.ts";
import { lockHolder, lockPathOf } from "../lock.ts";
import { SECTOR_SIZE } from "../types.ts";
import {
  EXT_BACKING_FORMAT,
  EXT_END,
  HDR,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  QCOW_MAGIC,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
} from "./format.ts";
import { setRefcount } from "./refcount.ts";

export interface CreateQcow2Options {
  /** Virtual size in bytes: a positive whole number of 512-byte sectors. */
  size: number;
  /** Bytes per cluster: a power of two from 512 to 2 MiB (default 64 KiB, as qemu-img). */
  clusterSize?: number;
  /** "1.1" (version 3, the default, as qemu-img) or "0.10" (version 2). */
  compat?: "0.10" | "1.1";
  /** The backing file, written into the image as given (a relative name is relative to the image's folder). */
  backingFile?: string;
  /** The backing file's format, recorded in the backing format header extension. */
  backingFormat?: "raw" | "qcow2";
  /** Replace an existing file (never one a live process holds for writing). */
  force?: boolean;
}

export const DEFAULT_CLUSTER_SIZE = 65536;

/** Refcount entries are 16 bits (refcount_order 4), qemu-img's default. */
const REFCOUNT_ORDER = 4;

export function createQcow2(file: string, options: CreateQcow2Options): void {
  const size = options.size;
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE !== 0) {
    throw new ImageError(
      "EBADSIZE",
      `image size ${size} is not a positive whole number of 512-byte sectors`,
      file,
    );
  }
  const cs = options.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const bits = Math.log2(cs);
  if (!Number.isInteger(bits) || bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw new ImageError(
      "EBADSIZE",
      `cluster size ${cs} is not a power of two from 512 bytes to 2 MiB`,
      file,
    );
  }
  const version = options.compat === "0.10" ? 2 : 3;

  // Cluster 0: header, extensions, backing file name.
  const header = new Uint8Array(cs);
  const hv = new DataView(header.buffer);
  const headerLength = version === 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH;
  let at = headerLength;
  const enc = new TextEncoder();
  if (options.backingFormat !== undefined && options.backingFile !== undefined) {
    const fmt = enc.encode(options.backingFormat);
    at = putExtension(header, at, EXT_BACKING_FORMAT, fmt, file);
  }
  at = putExtension(header, at, EXT_END, new Uint8Array(0), file);
  if (options.backingFile !== undefined) {
    const name = enc.encode(options.backingFile);
    if (name.length === 0 || name.length > MAX_BACKING_NAME) {
      throw new ImageError("EBADSIZE", `backing file name must be 1 to ${MAX_BACKING_NAME} bytes`, file);
    }
    if (at + name.length > cs) throw tooSmall(file, cs);
    header.set(name, at);
    hv.setBigUint64(HDR.backingFileOffset, BigInt(at));
    hv.setUint32(HDR.backingFileSize, name.length);
  }

  // Metadata clusters after the header: refcount table, refcount blocks, L1 table.
  const l2Entries = cs / 8;
  const l1Size = Math.ceil(size / (cs * l2Entries));
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const perBlock = (cs * 8) >> REFCOUNT_ORDER;
  let rtClusters = 1;
  let rbClusters = 1;
  for (;;) {
    const total = 1 + rtClusters + rbClusters + l1Clusters;
    const rb = Math.ceil(total / perBlock);
    const rt = Math.max(1, Math.ceil((rb * 8) / cs));
    if (rb === rbClusters && rt === rtClusters) break;
    rbClusters = rb;
    rtClusters = rt;
  }
  const rtAt = 1;
  const rbAt = rtAt + rtClusters;
  const l1At = rbAt + rbClusters;
  const total = l1At + l1Clusters;

  hv.setUint32(HDR.magic, QCOW_MAGIC);
  hv.setUint32(HDR.version, version);
  hv.setUint32(HDR.clusterBits, bits);
  hv.setBigUint64(HDR.size, BigInt(size));
  hv.setUint32(HDR.l1Size, l1Size);
  hv.setBigUint64(HDR.l1TableOffset, BigInt(l1At * cs));
  hv.setBigUint64(HDR.refcountTableOffset, BigInt(rtAt * cs));
  hv.setUint32(HDR.refcountTableClusters, rtClusters);
  if (version === 3) {
    hv.setUint32(HDR.refcountOrder, REFCOUNT_ORDER);
    hv.setUint32(HDR.headerLength, headerLength);
  }

  const table = new Uint8Array(rtClusters * cs);
  const tv = new DataView(table.buffer);
  const blocks = new Uint8Array(rbClusters * cs);
  for (let b = 0; b < rbClusters; b++) tv.setBigUint64(b * 8, BigInt((rbAt + b) * cs));
  for (let c = 0; c < total; c++) {
    const b = Math.floor(c / perBlock);
    setRefcount(blocks.subarray(b * cs, (b + 1) * cs), REFCOUNT_ORDER, c - b * perBlock, 1);
  }

  const fd = openNew(file, options.force === true);
  try {
    writeAll(fd, header, 0);
    writeAll(fd, table, rtAt * cs);
    writeAll(fd, blocks, rbAt * cs);
    ftruncateSync(fd, total * cs);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(file, { force: true });
    throw new ImageError("EOPEN", `cannot write image ${file}: ${(e as Error).message}`, file);
  }
  closeSync(fd);
}

function tooSmall(file: string, cs: number): ImageError {
  return new ImageError(
    "EBADSIZE",
    `the header, its extensions and the backing file name do not fit in one ${cs}-byte cluster; use a larger cluster size`,
    file,
  );
}

/** Append a header extension (type, length, data padded to 8 bytes) at `at`; returns the next offset. */
function putExtension(header: Uint8Array, at: number, type: number, data: Uint8Array, file: string): number {
  const padded = (data.length + 7) & ~7;
  if (at + 8 + padded > header.length) throw tooSmall(file, header.length);
  const v = new DataView(header.buffer);
  v.setUint32(at, type);
  v.setUint32(at + 4, data.length);
  header.set(data, at + 8);
  return at + 8 + padded;
}

function writeAll(fd: number, buf: Uint8Array, pos: number): void {
  for (let done = 0; done < buf.length;) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}

/** Create `file` (O_EXCL unless `force`; never replacing a non-file or an image a live writer holds). */
function openNew(file: string, force: boolean): number {
  if (force) {
    let st: Stats | undefined;
    try {
      st = statSync(file);
    } catch {
      st = undefined;
    }
    if (st && !st.isFile()) {
      throw new ImageError("EOPEN", `${file} is not a regular file; mkimage only replaces image files`, file);
    }
    const pid = lockHolder(file);
    if (pid !== undefined) throw new ImageLockedError(file, pid, lockPathOf(file));
  }
  try {
    return openSync(file, force ? "w" : "wx", 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new ImageError("EEXIST", `${file} already exists (use force to overwrite it)`, file);
    }
    throw new ImageError("EOPEN", `cannot create image ${file}: ${(e as Error).message}`, file);
  }
}
