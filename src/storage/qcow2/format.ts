/**
 * The qcow2 on-disk format: header fields, header extensions, table entry bits. Every number here is from
 * QEMU's docs/interop/qcow2.txt (the "qcow2 spec"); field offsets are bytes from the start of the file,
 * big-endian, as the spec lays them out.
 */
import { ImageError } from "../errors.ts";

/** "QFI\xfb" (qcow2.txt, header byte 0-3). */
export const QCOW_MAGIC = 0x514649fb;

/** Version 2 header length: bytes 0..71 (qcow2.txt). */
export const V2_HEADER_LENGTH = 72;
/** Version 3 header length without the optional compression type: bytes 0..103. */
export const V3_HEADER_LENGTH = 104;

/** Byte offsets of the header fields (qcow2.txt, "Header"). */
export const HDR = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

/** Incompatible feature bits (qcow2.txt, header bytes 72-79). */
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
/** Compatible feature bit 0: lazy refcounts (bytes 80-87). */
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

/** Header extension types (qcow2.txt, "Header extensions"). */
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

/** L1/L2 entry bits (qcow2.txt, "Cluster mapping"). Offsets are bits 9-55 of the entry. */
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
/** Standard cluster descriptor bit 0 (version 3): the cluster reads as all zeroes. */
export const OFLAG_ZERO = 1n;
export const OFFSET_MASK = 0x00fffffffffffe00n;
/** Refcount table entries: bits 9-63 are the block's offset; bits 0-8 are reserved. */
export const REFT_OFFSET_MASK = 0xfffffffffffffe00n;

/** Cluster sizes the spec allows QEMU to open: 512 B (bits 9) to 2 MiB (bits 21). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;

/** Largest L1 table and refcount table QEMU opens (qcow2.h: QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE). */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;

/** The backing file name may be at most 1023 bytes (qcow2.txt, bytes 16-19). */
export const MAX_BACKING_NAME = 1023;

/** Why an image cannot be used as asked: a format it does not follow, or a feature xenide does not support. */
export type ImageFormatReason =
  | "not-qcow2" // no qcow2 magic: another format (raw, say) given as qcow2
  | "bad-header" // a qcow2 header the spec does not allow
  | "unsupported" // a valid image using a feature xenide does not implement
  | "encrypted"
  | "external-data-file"
  | "dirty" // lazy refcounts left the image dirty: its refcounts need a repair first
  | "corrupt"; // QEMU marked the image corrupt

/** An image xenide refuses to open (as asked), with a one-line reason naming the image and what to do. */
export class ImageFormatError extends ImageError {
  constructor(
    readonly reason: ImageFormatReason,
    message: string,
    path?: string,
  ) {
    super("EOPEN", message, path);
    this.name = "ImageFormatError";
  }
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  /** 0: deflate (zlib). */
  compressionType: number;
}

export interface Qcow2Extensions {
  /** The backing file's format name ("raw", "qcow2"), when the image records it. */
  backingFormat?: string;
  /** Feature names by "type:bit" (type 0 incompatible, 1 compatible, 2 autoclear). */
  featureNames: Map<string, string>;
  hasCrypto: boolean;
  dataFile?: string;
  hasBitmaps: boolean;
}

/** A u64 field as a JS number (offsets and sizes stay far below 2^53 in any image xenide can open). */
function u64(view: DataView, off: number, what: string, path: string | undefined): number {
  const v = view.getBigUint64(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ImageFormatError("bad-header", `${path ?? "image"}: qcow2 ${what} ${v} is out of range`, path);
  }
  return Number(v);
}

/** Whether `head` (the first bytes of a file) starts as a qcow2 image: QEMU's qcow2_probe (magic, version >= 2). */
export function looksLikeQcow2(head: Uint8Array): boolean {
  if (head.length < 8) return false;
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return v.getUint32(0) === QCOW_MAGIC && v.getUint32(4) >= 2;
}

/** Parse and check the fixed header (the first cluster, or at least its first 112 bytes). */
export function parseHeader(buf: Uint8Array, path?: string): Qcow2Header {
  const name = path ?? "image";
  const bad = (msg: string) => new ImageFormatError("bad-header", `${name}: ${msg}`, path);
  if (buf.length < V2_HEADER_LENGTH) throw bad("too short for a qcow2 header");
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint32(HDR.magic) !== QCOW_MAGIC)
    throw new ImageFormatError("not-qcow2", `${name}: not a qcow2 image (no QFI\\xfb magic)`, path);
  const version = v.getUint32(HDR.version);
  if (version !== 2 && version !== 3) {
    throw new ImageFormatError(
      "unsupported",
      `${name}: qcow2 version ${version} is not supported (2 and 3 are)`,
      path,
    );
  }
  const clusterBits = v.getUint32(HDR.clusterBits);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw bad(`cluster_bits ${clusterBits} is outside 9..21 (512 B to 2 MiB clusters)`);
  }
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(v, HDR.backingFileOffset, "backing_file_offset", path),
    backingFileSize: v.getUint32(HDR.backingFileSize),
    clusterBits,
    size: u64(v, HDR.size, "size", path),
    cryptMethod: v.getUint32(HDR.cryptMethod),
    l1Size: v.getUint32(HDR.l1Size),
    l1TableOffset: u64(v, HDR.l1TableOffset, "l1_table_offset", path),
    refcountTableOffset: u64(v, HDR.refcountTableOffset, "refcount_table_offset", path),
    refcountTableClusters: v.getUint32(HDR.refcountTableClusters),
    nbSnapshots: v.getUint32(HDR.nbSnapshots),
    snapshotsOffset: u64(v, HDR.snapshotsOffset, "snapshots_offset", path),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: V2_HEADER_LENGTH,
    compressionType: 0,
  };
  if (version === 3) {
    if (buf.length < V3_HEADER_LENGTH) throw bad("too short for a version 3 header");
    h.incompatibleFeatures = v.getBigUint64(HDR.incompatibleFeatures);
    h.compatibleFeatures = v.getBigUint64(HDR.compatibleFeatures);
    h.autoclearFeatures = v.getBigUint64(HDR.autoclearFeatures);
    h.refcountOrder = v.getUint32(HDR.refcountOrder);
    h.headerLength = v.getUint32(HDR.headerLength);
    if (h.headerLength < V3_HEADER_LENGTH || h.headerLength % 8 !== 0 || h.headerLength > 1 << clusterBits) {
      throw bad(`header_length ${h.headerLength} is invalid (a multiple of 8, at least 104)`);
    }
    if (h.headerLength > HDR.compressionType) {
      if (buf.length <= HDR.compressionType) throw bad("header shorter than its header_length");
      h.compressionType = buf[HDR.compressionType]!;
    }
  }
  const cs = 1 << clusterBits;
  if (h.refcountOrder > 6) throw bad(`refcount_order ${h.refcountOrder} is above 6 (64-bit refcounts)`);
  if (h.l1TableOffset % cs !== 0) throw bad("the L1 table is not cluster-aligned");
  if (h.refcountTableOffset % cs !== 0) throw bad("the refcount table is not cluster-aligned");
  if (h.refcountTableClusters === 0) throw bad("the refcount table is empty");
  if (h.size % 512 !== 0) {
    throw new ImageFormatError(
      "unsupported",
      `${name}: virtual size ${h.size} is not a whole number of 512-byte sectors`,
      path,
    );
  }
  // The L1 table must map the whole disk (QEMU refuses smaller ones in qcow2_do_open).
  const l2Entries = cs / 8;
  const needL1 = Math.ceil(h.size / (cs * l2Entries));
  if (h.l1Size < needL1) throw bad(`L1 table of ${h.l1Size} entries is too small for ${h.size} bytes`);
  // QEMU's limits (qcow2.h QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE): a header asking for more is damaged.
  if (h.l1Size * 8 > MAX_L1_BYTES) throw bad(`L1 table of ${h.l1Size} entries is too large`);
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) {
    throw bad(`refcount table of ${h.refcountTableClusters} clusters is too large`);
  }
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > MAX_BACKING_NAME || h.backingFileSize === 0) {
      throw bad(`backing file name of ${h.backingFileSize} bytes is invalid`);
    }
  }
  return h;
}

/** The header extensions after the fixed header, up to the end marker (or the end of `cluster`). */
export function parseExtensions(cluster: Uint8Array, h: Qcow2Header, path?: string): Qcow2Extensions {
  const v = new DataView(cluster.buffer, cluster.byteOffset, cluster.byteLength);
  const out: Qcow2Extensions = { featureNames: new Map(), hasCrypto: false, hasBitmaps: false };
  const end =
    h.backingFileOffset > 0 && h.backingFileOffset < cluster.length ? h.backingFileOffset : cluster.length;
  const text = (a: number, n: number) => new TextDecoder().decode(cluster.subarray(a, a + n));
  for (let off = h.headerLength; off + 8 <= end;) {
    const type = v.getUint32(off);
    const len = v.getUint32(off + 4);
    const data = off + 8;
    if (type === EXT_END) break;
    if (data + len > end) {
      throw new ImageFormatError(
        "bad-header",
        `${path ?? "image"}: header extension 0x${type.toString(16)} runs past its area`,
        path,
      );
    }
    switch (type) {
      case EXT_BACKING_FORMAT:
        out.backingFormat = text(data, len);
        break;
      case EXT_FEATURE_TABLE:
        for (let e = data; e + 48 <= data + len; e += 48) {
          const name = text(e + 2, 46).replace(/\0.*$/s, "");
          out.featureNames.set(`${cluster[e]}:${cluster[e + 1]}`, name);
        }
        break;
      case EXT_CRYPTO:
        out.hasCrypto = true;
        break;
      case EXT_DATA_FILE:
        out.dataFile = text(data, len);
        break;
      case EXT_BITMAPS:
        out.hasBitmaps = true;
        break;
    }
    off = data + ((len + 7) & ~7);
  }
  return out;
}

/** The names of the set bits of `bits` (feature type `type`), from the image's feature table where it has one. */
export function featureList(bits: bigint, type: number, names: Map<string, string>): string {
  const out: string[] = [];
  for (let b = 0; b < 64; b++) {
    if (bits & (1n << BigInt(b))) out.push(names.get(`${type}:${b}`) ?? `bit ${b}`);
  }
  return out.join(", ");
}
