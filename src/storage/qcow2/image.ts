/**
 * A qcow2 image (versions 2 and 3) as a `BlockBackend`: guest sectors map through the L1 table and L2 tables
 * to host clusters; unallocated clusters read from the backing image (or as zeroes), v3 zero clusters as
 * zeroes, compressed clusters through raw deflate (node:zlib, as QEMU's qcow2-threads.c).
 *
 * Writes allocate in this image only: a cluster that is not a plain allocated one of its own gets a new host
 * cluster, filled with the old contents (backing data, zeroes, decompressed data) around the new sectors, in one
 * write (copy-on-write of the partial cluster). The backing image is opened read-only and never written.
 *
 * Metadata goes through two bounded caches (L2 tables, refcount blocks), and reaches the file in an order that
 * keeps the image consistent whenever the process stops, even between two writes (SIGKILL): guest data first,
 * then the refcount blocks that count new clusters, then (after fdatasync) the L2 tables that use them, then the
 * L1 entries that point at new L2 tables. A cluster freed by a discard or an overwrite gives its refcount back
 * only after the L2 table that stopped using it is written (QEMU's refcount cache depends on the L2 cache for
 * decreases). At worst a crash leaks clusters, which `qemu-img check -r leaks` reclaims; it never leaves a
 * cluster in use with a refcount of 0. Refcounts are always kept exact (no lazy refcounts, no dirty bit).
 */
import {
  Stats,
  closeSync,
  constants,
  fdatasync as fsFdatasync,
  fdatasyncSync,
  fstatSync,
  openSync,
  read as fsRead,
  readSync,
  statSync,
  write as fsWrite,
  writeSync,
} from "node:fs";
import { dirname, isAbsolute, join } from "node:path";

import { isDirectAligned } from "../aligned.ts";
import { zlib } from "../builtins.ts";
import { fsError } from "../check.ts";
import { ImageError } from "../errors.ts";
import { ImageLock } from "../lock.ts";
import { type BlockBackend, type IoCallback, IoError, type MediumRequest, SECTOR_SIZE } from "../types.ts";
import { TableCache } from "./cache.ts";
import {
  COMPAT_LAZY_REFCOUNTS,
  featureList,
  HDR,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  ImageFormatError,
  MAX_REFTABLE_BYTES,
  parseExtensions,
  parseHeader,
  type Qcow2Extensions,
  type Qcow2Header,
} from "./format.ts";
import { getRefcount, maxRefcount, setRefcount } from "./refcount.ts";

/** Opens a backing image: `name` resolved as QEMU does, read-only, in the format the overlay names (if any). */
export type BackingOpener = (
  name: string,
  format: "raw" | "qcow2" | undefined,
  depth: number,
) => BlockBackend;

export interface Qcow2Options {
  readOnly?: boolean;
  /**
   * Guest data bypasses the host page cache (O_DIRECT, on a second descriptor) when the caller's buffer allows
   * it (see aligned.ts); metadata and copy-on-write clusters stay buffered, which Linux keeps coherent.
   */
  direct?: boolean;
  /** Lock the image as raw images are locked (default true); the backing chain is locked for reading. */
  lock?: boolean;
  /** How to open the backing image; without it an image with a backing file is refused. */
  openBacking?: BackingOpener;
  /** How deep in a backing chain this image is (0: the image itself); chains deeper than 64 are refused. */
  depth?: number;
  /** Bytes of L2 tables to cache (default: enough to map the whole disk, at most 32 MiB, as QEMU on Linux). */
  l2CacheBytes?: number;
  /** Bytes of refcount blocks to cache (default: a quarter of the L2 cache, at least 4 blocks, as QEMU). */
  refcountCacheBytes?: number;
}

/** A backing chain longer than this is refused (a loop of backing files would otherwise never end). */
export const MAX_BACKING_DEPTH = 64;

/** QEMU's default L2 cache limit on Linux (DEFAULT_L2_CACHE_MAX_SIZE, 32 MiB). */
const L2_CACHE_MAX = 32 * 1024 * 1024;

/** Pending frees beyond this many ranges are applied (after a metadata write-out) at once, bounding memory. */
const MAX_PENDING_FREES = 4096;

/** What a guest cluster maps to. */
const enum Kind {
  Unallocated,
  Zero,
  Normal,
  Compressed,
}

/** The mapping of one guest cluster (one object, reused: lookups allocate nothing). */
interface Mapping {
  kind: Kind;
  /** Host offset of a normal (or preallocated zero) cluster; 0 when none. */
  host: number;
  /** Normal cluster with refcount 1 (QCOW_OFLAG_COPIED): writable in place. */
  copied: boolean;
  /** For a compressed cluster: the raw L2 entry. */
  entry: bigint;
}

/** What `Qcow2Backend.info` reports. */
export interface Qcow2Info {
  version: 2 | 3;
  virtualSize: number;
  clusterSize: number;
  refcountBits: number;
  /** Guest clusters this image itself maps to data (normal or compressed). */
  allocatedClusters: number;
  compressedClusters: number;
  zeroClusters: number;
  backingFile?: string;
  backingFormat?: string;
  lazyRefcounts: boolean;
  dirty: boolean;
  corrupt: boolean;
  snapshots: number;
}

export class Qcow2Backend implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly sectorCount: number;
  readonly describe: string;
  readonly clusterSize: number;
  private readonly clusterBits: number;
  private readonly l2Bits: number;
  private readonly refOrder: number;
  /** Entries in one refcount block: log2. */
  private readonly rbBits: number;
  private readonly cache: { l2: TableCache; ref: TableCache };
  /** The L1 table as on disk (big-endian entries), kept whole in memory as QEMU does. */
  private readonly l1: Uint8Array;
  private readonly l1View: DataView;
  private readonly l1Dirty = new Set<number>();
  /** Refcount table: block offsets (0: no block), kept whole in memory. */
  private reftable: number[];
  private reftableOffset: number;
  private reftableClusters: number;
  /** Where the search for a free cluster starts (QEMU's free_cluster_index). */
  private freeHint = 0;
  /** One past the highest cluster known to be used or in the file. */
  private endCluster: number;
  /** Host ranges whose refcounts drop once the L2 tables that stopped using them are written. */
  private pendingFrees: { start: number; length: number }[] = [];
  /** Asynchronous transfers and syncs in flight (see `startIo`). */
  private inflight = 0;
  /** Host writes since the last fdatasync. */
  private unsynced = false;
  /** Refcount decreases are in the cache whose L2 tables were written but not yet synced. */
  private refsAfterL2 = false;
  private closed = false;
  private readonly m: Mapping = { kind: Kind.Unallocated, host: 0, copied: false, entry: 0n };
  private scratch: Uint8Array | null = null;
  private zeroBuf: Uint8Array | null = null;
  /** The last compressed cluster decompressed: host descriptor and data. */
  private inflated: { entry: bigint; data: Uint8Array } | null = null;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly header: Qcow2Header,
    readonly extensions: Qcow2Extensions,
    readonly readOnly: boolean,
    readonly backing: BlockBackend | null,
    /** The backing file name as the image records it. */
    readonly backingName: string | undefined,
    readonly lock: ImageLock | null,
    /** The O_DIRECT descriptor for guest data (null: not opened with `direct`). */
    private readonly directFd: number | null,
    fileSize: number,
    options: Qcow2Options,
  ) {
    const h = header;
    this.clusterBits = h.clusterBits;
    this.clusterSize = 1 << h.clusterBits;
    this.l2Bits = h.clusterBits - 3;
    this.refOrder = h.refcountOrder;
    this.rbBits = h.clusterBits + 3 - h.refcountOrder;
    this.sectorCount = h.size / SECTOR_SIZE;
    this.describe = `qcow2:${path}${directFd !== null ? " (direct)" : ""}${readOnly ? " (ro)" : ""}`;
    const cs = this.clusterSize;
    this.endCluster = Math.ceil(fileSize / cs);

    this.l1 = this.preadNew(h.l1TableOffset, h.l1Size * 8);
    this.l1View = new DataView(this.l1.buffer, this.l1.byteOffset, this.l1.byteLength);
    this.reftableOffset = h.refcountTableOffset;
    this.reftableClusters = h.refcountTableClusters;
    this.reftable = this.readReftable(h.refcountTableOffset, h.refcountTableClusters);

    // Cache sizes as QEMU's read_cache_sizes: the L2 cache covers the disk up to 32 MiB, the refcount cache is a
    // quarter of it, each at least a few tables.
    const l2Needed = Math.ceil(h.size / (cs * (cs / 8))) * cs;
    const l2Bytes = options.l2CacheBytes ?? Math.min(l2Needed, L2_CACHE_MAX);
    const refBytes = options.refcountCacheBytes ?? l2Bytes / 4;
    this.cache = {
      l2: new TableCache(Math.max(2, Math.floor(l2Bytes / cs)), {
        load: (off) => this.preadNew(off, cs),
        writeBack: (off, t) => this.writeL2(off, t),
      }),
      ref: new TableCache(Math.max(4, Math.floor(refBytes / cs)), {
        load: (off) => this.preadNew(off, cs),
        writeBack: (off, t) => this.writeRefcountBlock(off, t),
      }),
    };
  }

  /**
   * Open `file` as a qcow2 image. Throws `ImageFormatError` for what xenide does not support (encryption, an
   * external data file, extended L2 entries, a compression other than deflate; for writing also internal
   * snapshots, a dirty or corrupt image) and `ImageLockedError` when another process holds it.
   */
  static open(file: string, options: Qcow2Options = {}): Qcow2Backend {
    const readOnly = options.readOnly ?? false;
    const depth = options.depth ?? 0;
    let st: Stats;
    try {
      st = statSync(file);
    } catch (e) {
      throw new ImageError(
        "EOPEN",
        `cannot open image ${file}: ${(e as Error).message}`,
        file,
        (e as NodeJS.ErrnoException).code,
      );
    }
    if (!st.isFile()) throw new ImageError("EOPEN", `${file} is not a regular file`, file);
    let fd: number;
    try {
      fd = openSync(file, readOnly ? "r" : "r+");
    } catch (e) {
      throw new ImageError(
        "EOPEN",
        `cannot open image ${file}: ${(e as Error).message}`,
        file,
        (e as NodeJS.ErrnoException).code,
      );
    }
    let lock: ImageLock | null = null;
    let backing: BlockBackend | null = null;
    let directFd: number | null = null;
    try {
      if (options.lock ?? true) lock = ImageLock.acquire(file, fd, readOnly ? "read" : "write");
      if (options.direct) directFd = openDirect(file, readOnly);
      const first = Buffer.alloc(4096);
      const got = readSync(fd, first, 0, first.length, 0);
      const h = parseHeader(first.subarray(0, got), file);
      const cs = 1 << h.clusterBits;
      const cluster = Buffer.alloc(cs);
      readSync(fd, cluster, 0, cs, 0);
      const ext = parseExtensions(cluster, h, file);
      checkFeatures(file, h, ext, readOnly);

      let backingName: string | undefined;
      if (h.backingFileOffset !== 0) {
        const nameBuf = Buffer.alloc(h.backingFileSize);
        const n = readSync(fd, nameBuf, 0, nameBuf.length, h.backingFileOffset);
        backingName = nameBuf.subarray(0, n).toString("utf8");
        if (!options.openBacking) {
          throw new ImageFormatError(
            "unsupported",
            `${file}: has a backing file and no way to open it`,
            file,
          );
        }
        if (depth + 1 > MAX_BACKING_DEPTH) {
          throw new ImageFormatError(
            "unsupported",
            `${file}: the backing chain is longer than ${MAX_BACKING_DEPTH} images (a loop of backing files?)`,
            file,
          );
        }
        const fmt = ext.backingFormat;
        if (fmt !== undefined && fmt !== "raw" && fmt !== "qcow2") {
          throw new ImageFormatError(
            "unsupported",
            `${file}: backing file ${backingName} is in format ${fmt}; xenide reads raw and qcow2`,
            file,
          );
        }
        backing = options.openBacking(resolveBackingName(file, backingName), fmt, depth + 1);
      }
      const img = new Qcow2Backend(
        file,
        fd,
        h,
        ext,
        readOnly,
        backing,
        backingName,
        lock,
        directFd,
        st.size,
        options,
      );
      if (!readOnly) img.clearAutoclear();
      return img;
    } catch (e) {
      backing?.close();
      lock?.release();
      if (directFd !== null) closeSync(directFd);
      closeSync(fd);
      throw e;
    }
  }

  /** The file itself (device and inode), as raw images identify themselves. */
  get identity(): string {
    const st = fstatSync(this.fd);
    return `qcow2:${st.dev}:${st.ino}`;
  }

  // ---- BlockBackend ----

  read(sector: number, bufs: readonly Uint8Array[]): void {
    if (this.closed) throw this.closedError(sector);
    let pos = sector * SECTOR_SIZE;
    for (const buf of bufs) {
      this.readAt(pos, buf);
      pos += buf.length;
    }
  }

  write(sector: number, bufs: readonly Uint8Array[]): void {
    if (this.closed) throw this.closedError(sector);
    let pos = sector * SECTOR_SIZE;
    for (const buf of bufs) {
      this.writeAt(pos, buf);
      pos += buf.length;
    }
  }

  /**
   * Guest data and the metadata that maps it, durable. Refcount decreases of freed clusters may stay in the
   * cache until the next flush (they are written after a barrier; losing them only leaks clusters).
   */
  flush(): void {
    if (this.closed) throw this.closedError(0);
    if (this.readOnly) return;
    this.writeMetadata();
    this.sync();
  }

  /**
   * Afterwards the sectors read as zeroes. Whole clusters are given back: unallocated when nothing shows
   * through from a backing file, else (v3) a zero cluster, as QEMU's discard with unmap; their host clusters
   * are freed. Parts of clusters, and whole clusters of a v2 image with a backing file, are written with zeroes
   * (QEMU ignores such discards; xenide's media read zeroes after any discard).
   */
  discard(sector: number, count: number): void {
    if (this.closed) throw this.closedError(sector);
    const cs = this.clusterSize;
    let pos = sector * SECTOR_SIZE;
    const end = pos + count * SECTOR_SIZE;
    while (pos < end) {
      const vc = Math.floor(pos / cs);
      const inOff = pos - vc * cs;
      const n = Math.min(cs - inOff, end - pos);
      const m = this.lookup(vc);
      const clusterEnd = Math.min(cs, this.header.size - vc * cs);
      const whole = inOff === 0 && n >= clusterEnd;
      const readsZero = m.kind === Kind.Zero || (m.kind === Kind.Unallocated && this.backing === null);
      if (whole && (this.backing === null || this.header.version === 3)) {
        if (!(readsZero && m.host === 0)) {
          const old = this.hostRange(m);
          this.setL2Entry(vc, this.backing === null ? 0n : 1n /* QCOW_OFLAG_ZERO */);
          if (old) this.queueFree(old.start, old.length);
        }
      } else if (!readsZero) {
        this.writeAt(pos, this.zeroes(n));
      }
      pos += n;
    }
  }

  // ---- asynchronous submission (the async engine's path) ----

  /**
   * Reads, and writes that land in clusters this image already owns (no allocation), move their data with
   * libuv's fs callbacks, so many can be in flight; the mapping itself is looked up in the caches first.
   * Everything else (allocating writes, discards, the metadata part of a flush) runs the sync methods and
   * completes later. `done` is never called inside `startIo`.
   */
  startIo(req: MediumRequest, done: IoCallback): void {
    if (this.closed) return later(done, this.closedError(req.sector));
    try {
      switch (req.op) {
        case "read": {
          const segs: Segment[] = [];
          let pos = req.sector * SECTOR_SIZE;
          for (const buf of req.bufs) {
            this.planRead(pos, buf, segs);
            pos += buf.length;
          }
          return this.transfer(false, segs, req.sector, done);
        }
        case "write": {
          const segs: Segment[] = [];
          let pos = req.sector * SECTOR_SIZE;
          let inPlace = true;
          for (const buf of req.bufs) {
            if (!this.planInPlaceWrite(pos, buf, segs)) {
              inPlace = false;
              break;
            }
            pos += buf.length;
          }
          if (inPlace) return this.transfer(true, segs, req.sector, done);
          this.write(req.sector, req.bufs);
          break;
        }
        case "flush":
          if (this.readOnly) break;
          this.writeMetadata();
          this.inflight++;
          fsFdatasync(this.fd, (err) => {
            this.inflight--;
            done(err ? fsError(err, 0, `flush of ${this.describe}`) : undefined);
          });
          return;
        case "discard":
          this.discard(req.sector, req.count);
          break;
      }
    } catch (e) {
      return later(done, e instanceof IoError ? e : fsError(e, req.sector, `${req.op} of ${this.describe}`));
    }
    later(done, undefined);
  }

  /** Host transfers of a read: normal clusters as segments; everything else filled now. */
  private planRead(pos: number, buf: Uint8Array, segs: Segment[]): void {
    const cs = this.clusterSize;
    for (let off = 0; off < buf.length;) {
      const p = pos + off;
      const vc = Math.floor(p / cs);
      const inOff = p - vc * cs;
      const n = Math.min(cs - inOff, buf.length - off);
      const m = this.lookup(vc);
      if (m.kind === Kind.Normal) {
        const host = m.host + inOff;
        const last = segs[segs.length - 1];
        // Contiguous in the file and in the same buffer: one transfer.
        if (
          last &&
          last.buf.buffer === buf.buffer &&
          last.host + last.buf.length === host &&
          last.buf.byteOffset + last.buf.length === buf.byteOffset + off
        ) {
          last.buf = new Uint8Array(buf.buffer, last.buf.byteOffset, last.buf.length + n);
        } else segs.push({ host, buf: buf.subarray(off, off + n) });
      } else if (m.kind === Kind.Compressed) {
        buf.set(this.inflate(m.entry).subarray(inOff, inOff + n), off);
      } else if (m.kind === Kind.Zero) {
        buf.fill(0, off, off + n);
      } else {
        this.readBacking(p, buf.subarray(off, off + n));
      }
      off += n;
    }
  }

  /** Host transfers of a write when every cluster it touches is this image's own; false otherwise. */
  private planInPlaceWrite(pos: number, buf: Uint8Array, segs: Segment[]): boolean {
    const cs = this.clusterSize;
    for (let off = 0; off < buf.length;) {
      const p = pos + off;
      const vc = Math.floor(p / cs);
      const inOff = p - vc * cs;
      const n = Math.min(cs - inOff, buf.length - off);
      const m = this.lookup(vc);
      if (m.kind !== Kind.Normal || !m.copied) return false;
      segs.push({ host: m.host + inOff, buf: buf.subarray(off, off + n) });
      off += n;
    }
    return true;
  }

  /** Run `segs` (all reads or all writes) at once; `done` when the last one ends, with the first error. */
  private transfer(write: boolean, segs: Segment[], sector: number, done: IoCallback): void {
    if (segs.length === 0) return later(done, undefined);
    if (write) this.unsynced = true;
    let left = segs.length;
    let error: IoError | undefined;
    this.inflight++;
    const finish = (err: IoError | undefined) => {
      error ??= err;
      if (--left > 0) return;
      this.inflight--;
      done(error);
    };
    for (const seg of segs) {
      const step = (moved: number) => {
        const cb = (err: NodeJS.ErrnoException | null, n: number) => {
          if (err) return finish(fsError(err, sector, `${write ? "write" : "read"} of ${this.describe}`));
          const total = moved + n;
          if (total >= seg.buf.length) return finish(undefined);
          if (n === 0) {
            if (write)
              return finish(new IoError("EIO", `write of ${this.describe} made no progress`, sector));
            seg.buf.fill(0, total); // past the end of the file
            return finish(undefined);
          }
          step(total);
        };
        const rest = seg.buf.length - moved;
        const fd = this.dataFd(seg.buf);
        if (write) fsWrite(fd, seg.buf, moved, rest, seg.host + moved, cb);
        else fsRead(fd, seg.buf, moved, rest, seg.host + moved, cb);
      };
      step(0);
    }
  }

  close(): void {
    if (this.closed) return;
    try {
      if (!this.readOnly) {
        this.flush();
        // The refcount decreases `flush` left in the cache (they only leak clusters if lost; see writeMetadata).
        this.cache.ref.writeDirty();
        this.sync();
      }
    } finally {
      this.closed = true;
      try {
        this.backing?.close();
      } finally {
        try {
          this.lock?.release();
        } finally {
          if (this.directFd !== null) closeSync(this.directFd);
          closeSync(this.fd);
        }
      }
    }
  }

  /** What `qemu-img info` would say of this image (this layer only; `backing` is the next). */
  info(): Qcow2Info {
    const h = this.header;
    let allocated = 0;
    let compressed = 0;
    let zero = 0;
    const l2Entries = 1 << this.l2Bits;
    const clusters = Math.ceil(h.size / this.clusterSize);
    for (let vc = 0; vc < clusters; vc++) {
      if ((vc & (l2Entries - 1)) === 0 && this.l1Offset(vc >>> this.l2Bits) === 0) {
        vc += l2Entries - 1;
        continue;
      }
      const m = this.lookup(vc);
      if (m.kind === Kind.Normal) allocated++;
      else if (m.kind === Kind.Compressed) {
        allocated++;
        compressed++;
      } else if (m.kind === Kind.Zero) zero++;
    }
    const out: Qcow2Info = {
      version: h.version,
      virtualSize: h.size,
      clusterSize: this.clusterSize,
      refcountBits: 1 << h.refcountOrder,
      allocatedClusters: allocated,
      compressedClusters: compressed,
      zeroClusters: zero,
      lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      dirty: (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
      corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      snapshots: h.nbSnapshots,
    };
    if (this.backingName !== undefined) out.backingFile = this.backingName;
    if (this.extensions.backingFormat !== undefined) out.backingFormat = this.extensions.backingFormat;
    return out;
  }

  // ---- mapping ----

  private l1Offset(l1i: number): number {
    if (l1i >= this.header.l1Size) return 0;
    const hi = this.l1View.getUint32(l1i * 8) & 0x00ffffff;
    const lo = this.l1View.getUint32(l1i * 8 + 4);
    const offset = hi * 0x100000000 + (lo - (lo & 0x1ff));
    if (offset % this.clusterSize !== 0) {
      throw new IoError(
        "EIO",
        `${this.describe}: L1 entry ${l1i} points at unaligned offset ${offset} (corrupt image)`,
      );
    }
    return offset;
  }

  /** The mapping of guest cluster `vc` (into the shared `Mapping`, valid until the next lookup). */
  private lookup(vc: number): Mapping {
    const m = this.m;
    m.kind = Kind.Unallocated;
    m.host = 0;
    m.copied = false;
    const l1i = Math.floor(vc / (1 << this.l2Bits));
    const l2Off = this.l1Offset(l1i);
    if (l2Off === 0) return m;
    const table = this.cache.l2.get(l2Off);
    const i = (vc & ((1 << this.l2Bits) - 1)) * 8;
    const hi = ((table[i]! << 24) | (table[i + 1]! << 16) | (table[i + 2]! << 8) | table[i + 3]!) >>> 0;
    const lo = ((table[i + 4]! << 24) | (table[i + 5]! << 16) | (table[i + 6]! << 8) | table[i + 7]!) >>> 0;
    if (hi & 0x40000000) {
      m.kind = Kind.Compressed;
      m.entry = (BigInt(hi) << 32n) | BigInt(lo);
      return m;
    }
    const host = (hi & 0x00ffffff) * 0x100000000 + (lo - (lo & 0x1ff));
    m.host = host;
    m.copied = (hi & 0x80000000) !== 0;
    if (this.header.version === 3 && lo & 1) m.kind = Kind.Zero;
    else if (host !== 0) {
      if (host % this.clusterSize !== 0) {
        throw new IoError(
          "EIO",
          `${this.describe}: L2 entry of cluster ${vc} points at unaligned offset ${host} (corrupt image)`,
        );
      }
      m.kind = Kind.Normal;
    }
    return m;
  }

  /** The host bytes a mapping holds a reference to (freed when the guest cluster stops using them). */
  private hostRange(m: Mapping): { start: number; length: number } | null {
    if (m.kind === Kind.Compressed) {
      const c = this.compressedExtent(m.entry);
      return { start: c.offset - (c.offset % SECTOR_SIZE), length: c.sectors * SECTOR_SIZE };
    }
    return m.host !== 0 ? { start: m.host, length: this.clusterSize } : null;
  }

  /** Offset and size of a compressed cluster's data (qcow2.txt, "Compressed Clusters Descriptor"). */
  private compressedExtent(entry: bigint): { offset: number; sectors: number; bytes: number } {
    const x = BigInt(62 - (this.clusterBits - 8));
    const offset = Number(entry & ((1n << x) - 1n));
    const sectors = Number((entry >> x) & ((1n << BigInt(this.clusterBits - 8)) - 1n)) + 1;
    return { offset, sectors, bytes: sectors * SECTOR_SIZE - (offset % SECTOR_SIZE) };
  }

  /**
   * How many of `left` bytes from guest cluster `vc` (its first `n` bytes at host offset `host`) one host
   * transfer can cover: the run grows over following guest clusters that are normal, sit right after it in the
   * file and, for writes (`copied`), have a refcount of exactly one (QCOW_OFLAG_COPIED: safe to write in place).
   */
  private contiguousRun(vc: number, host: number, n: number, left: number, copied: boolean): number {
    const cs = this.clusterSize;
    for (let next = vc + 1; n < left; next++) {
      const nm = this.lookup(next);
      if (nm.kind !== Kind.Normal || (copied && !nm.copied) || nm.host !== host + n) break;
      n += Math.min(cs, left - n);
    }
    return n;
  }

  // ---- reading ----

  private readAt(pos: number, buf: Uint8Array): void {
    const cs = this.clusterSize;
    let off = 0;
    while (off < buf.length) {
      const p = pos + off;
      const vc = Math.floor(p / cs);
      const inOff = p - vc * cs;
      let n = Math.min(cs - inOff, buf.length - off);
      const m = this.lookup(vc);
      switch (m.kind) {
        case Kind.Normal: {
          // Extend over following clusters that lie right after this one in the file: one pread for all.
          const host = m.host + inOff;
          n = this.contiguousRun(vc, host, n, buf.length - off, false);
          const part = buf.subarray(off, off + n);
          this.preadInto(host, part, this.dataFd(part));
          break;
        }
        case Kind.Compressed:
          buf.set(this.inflate(m.entry).subarray(inOff, inOff + n), off);
          break;
        case Kind.Zero:
          buf.fill(0, off, off + n);
          break;
        default:
          this.readBacking(p, buf.subarray(off, off + n));
      }
      off += n;
    }
  }

  /** Sectors the overlay does not map: from the backing image (zeroes past its end), or zeroes without one. */
  private readBacking(pos: number, buf: Uint8Array): void {
    const b = this.backing;
    if (b === null) {
      buf.fill(0);
      return;
    }
    const sector = pos / SECTOR_SIZE;
    const sectors = buf.length / SECTOR_SIZE;
    const inside = Math.max(0, Math.min(sectors, b.sectorCount - sector));
    if (inside > 0) b.read(sector, [buf.subarray(0, inside * SECTOR_SIZE)]);
    if (inside < sectors) buf.fill(0, inside * SECTOR_SIZE);
  }

  private inflate(entry: bigint): Uint8Array {
    if (this.inflated?.entry === entry) return this.inflated.data;
    const c = this.compressedExtent(entry);
    const src = this.preadNew(c.offset, c.bytes);
    let out: Buffer;
    try {
      // Raw deflate, as QEMU's qcow2_zlib_decompress (inflateInit2 with -12 window bits); the data may be
      // followed by padding up to the sector, which a sync flush ignores.
      const z = zlib();
      out = z.inflateRawSync(src, { finishFlush: z.constants.Z_SYNC_FLUSH });
    } catch (e) {
      throw new IoError(
        "EIO",
        `${this.describe}: compressed cluster at ${c.offset} is damaged: ${(e as Error).message}`,
      );
    }
    if (out.length < this.clusterSize) {
      throw new IoError(
        "EIO",
        `${this.describe}: compressed cluster at ${c.offset} inflates to ${out.length} bytes, not ${this.clusterSize}`,
      );
    }
    const data = new Uint8Array(out.buffer, out.byteOffset, this.clusterSize);
    this.inflated = { entry, data };
    return data;
  }

  /** The whole of guest cluster `vc` as the guest sees it now, into `out` (cluster-sized). */
  private readCluster(vc: number, out: Uint8Array): void {
    const m = this.lookup(vc);
    switch (m.kind) {
      case Kind.Normal:
        this.preadInto(m.host, out);
        return;
      case Kind.Compressed:
        out.set(this.inflate(m.entry));
        return;
      case Kind.Zero:
        out.fill(0);
        return;
      default:
        this.readBacking(vc * this.clusterSize, out);
    }
  }

  // ---- writing ----

  private writeAt(pos: number, buf: Uint8Array): void {
    const cs = this.clusterSize;
    let off = 0;
    while (off < buf.length) {
      const p = pos + off;
      const vc = Math.floor(p / cs);
      const inOff = p - vc * cs;
      let n = Math.min(cs - inOff, buf.length - off);
      const m = this.lookup(vc);
      if (m.kind === Kind.Normal && m.copied) {
        const host = m.host + inOff;
        n = this.contiguousRun(vc, host, n, buf.length - off, true);
        const part = buf.subarray(off, off + n);
        this.pwriteAll(host, part, this.dataFd(part));
      } else {
        const old = this.hostRange(m);
        let data = buf.subarray(off, off + n);
        if (n < cs) {
          // Copy-on-write: the cluster's present contents around the new sectors, written as one cluster.
          const whole = (this.scratch ??= new Uint8Array(cs));
          this.readCluster(vc, whole);
          whole.set(data, inOff);
          data = whole;
        }
        const c = this.allocCluster();
        this.pwriteAll(c * cs, data);
        this.setL2Entry(vc, BigInt(c * cs) | (1n << 63n));
        if (old) this.queueFree(old.start, old.length);
      }
      off += n;
    }
  }

  /** Point guest cluster `vc` at `entry`, creating its L2 table if needed. */
  private setL2Entry(vc: number, entry: bigint): void {
    const l1i = Math.floor(vc / (1 << this.l2Bits));
    let l2Off = this.l1Offset(l1i);
    if (l2Off === 0) {
      const c = this.allocCluster();
      l2Off = c * this.clusterSize;
      // A new table, all unallocated; the L1 entry follows it to disk (writeMetadata).
      this.cache.l2.put(l2Off, new Uint8Array(this.clusterSize), true);
      this.l1View.setBigUint64(l1i * 8, BigInt(l2Off) | (1n << 63n));
      this.l1Dirty.add(l1i);
    } else if (!(this.l1View.getUint32(l1i * 8) & 0x80000000)) {
      throw new IoError(
        "EIO",
        `${this.describe}: L2 table ${l1i} is shared (internal snapshot); cannot write`,
      );
    }
    const table = this.cache.l2.get(l2Off);
    new DataView(table.buffer, table.byteOffset, table.byteLength).setBigUint64(
      (vc & ((1 << this.l2Bits) - 1)) * 8,
      entry,
    );
    this.cache.l2.markDirty(l2Off);
  }

  // ---- refcounts and allocation ----

  private refcountOf(cluster: number): number {
    const k = Math.floor(cluster / 2 ** this.rbBits);
    const blockOff = k < this.reftable.length ? this.reftable[k]! : 0;
    if (blockOff === 0) return 0;
    return getRefcount(this.cache.ref.get(blockOff), this.refOrder, cluster - k * 2 ** this.rbBits);
  }

  private changeRefcount(cluster: number, delta: number): void {
    const k = Math.floor(cluster / 2 ** this.rbBits);
    if (k >= this.reftable.length || this.reftable[k] === 0) {
      if (delta < 0)
        throw new IoError(
          "EIO",
          `${this.describe}: freeing cluster ${cluster} without a refcount (corrupt image)`,
        );
      this.ensureRefcountBlock(k, cluster);
    }
    const blockOff = this.reftable[k]!;
    const block = this.cache.ref.get(blockOff);
    const i = cluster - k * 2 ** this.rbBits;
    const v = getRefcount(block, this.refOrder, i) + delta;
    if (v < 0 || v > maxRefcount(this.refOrder)) {
      throw new IoError(
        "EIO",
        `${this.describe}: refcount of cluster ${cluster} would become ${v} (corrupt image)`,
      );
    }
    setRefcount(block, this.refOrder, i, v);
    this.cache.ref.markDirty(blockOff);
  }

  /** A free host cluster, now counted as used. */
  private allocCluster(): number {
    // Scan refcount blocks from the hint, inside each block's array (a missing block counts nothing: free).
    const perBlock = 2 ** this.rbBits;
    let c = this.freeHint;
    for (;;) {
      const k = Math.floor(c / perBlock);
      const off = k < this.reftable.length ? this.reftable[k]! : 0;
      if (off === 0) break;
      const block = this.cache.ref.get(off);
      let i = c - k * perBlock;
      while (i < perBlock && getRefcount(block, this.refOrder, i) !== 0) i++;
      c = k * perBlock + i;
      if (i < perBlock) break;
    }
    // The block that counts `c` may be missing: creating it takes a cluster too, never `c` itself.
    this.changeRefcount(c, 1);
    this.freeHint = c + 1;
    if (c + 1 > this.endCluster) this.endCluster = c + 1;
    return c;
  }

  /**
   * Create refcount block `k` (which must count `forCluster`): in the first cluster of its own range other
   * than `forCluster`, so it counts itself (QEMU's self-describing block). Written whole before the refcount
   * table entry points at it.
   */
  private ensureRefcountBlock(k: number, forCluster: number): void {
    if (k >= this.reftable.length) {
      this.growRefcountTable(k, forCluster);
      if (this.reftable[k] !== 0) return;
    }
    const cs = this.clusterSize;
    const first = k * 2 ** this.rbBits;
    const at = first === forCluster ? first + 1 : first;
    const block = new Uint8Array(cs);
    setRefcount(block, this.refOrder, at - first, 1);
    this.pwriteAll(at * cs, block);
    this.sync();
    this.pwriteAll(this.reftableOffset + k * 8, be64(at * cs));
    this.reftable[k] = at * cs;
    this.cache.ref.put(at * cs, block, false);
    if (at + 1 > this.endCluster) this.endCluster = at + 1;
  }

  /**
   * A refcount table with room for block `k`: written at the end of the image together with the new blocks
   * that count its own clusters, then made current by one header write (QEMU's qcow2_refcount_area), then the
   * old table's clusters are freed.
   */
  private growRefcountTable(k: number, forCluster: number): void {
    const cs = this.clusterSize;
    const perBlock = 2 ** this.rbBits;
    const perTableCluster = cs / 8;
    const old = this.reftable;
    // The new area starts past everything in use: the file's end, or the last counted cluster.
    let start = Math.max(this.endCluster, forCluster + 1);
    for (let j = old.length - 1; j >= 0; j--) {
      if (old[j] === 0) continue;
      const block = this.cache.ref.get(old[j]!);
      for (let i = perBlock - 1; i >= 0; i--) {
        if (getRefcount(block, this.refOrder, i) !== 0) {
          start = Math.max(start, j * perBlock + i + 1);
          break;
        }
      }
      break;
    }
    let entries = Math.max(k + 1, Math.ceil((old.length * 3) / 2));
    if (entries * 8 > MAX_REFTABLE_BYTES) {
      throw new IoError("ENOSPC", `${this.describe}: the refcount table would exceed QEMU's limit of 8 MiB`);
    }
    let tableClusters = 0;
    let blocks: number[] = [];
    for (;;) {
      tableClusters = Math.ceil(entries / perTableCluster);
      // New blocks needed to count the area itself (table + blocks) and block k.
      let b = 0;
      for (;;) {
        const need = new Set<number>();
        if (k >= old.length || old[k] === 0) need.add(k);
        const areaEnd = start + tableClusters + b;
        for (let j = Math.floor(start / perBlock); j <= Math.floor((areaEnd - 1) / perBlock); j++) {
          if (j >= old.length || old[j] === 0) need.add(j);
        }
        if (need.size === b) {
          blocks = [...need].sort((x, y) => x - y);
          break;
        }
        b = need.size;
      }
      const maxJ = blocks.length > 0 ? blocks[blocks.length - 1]! : 0;
      if (maxJ < tableClusters * perTableCluster) break;
      entries = maxJ + 1;
    }
    const tableAt = start;
    const blocksAt = start + tableClusters;
    const areaEnd = blocksAt + blocks.length;
    const newBlocks = new Map<number, Uint8Array>();
    blocks.forEach((j) => newBlocks.set(j, new Uint8Array(cs)));
    for (let c = tableAt; c < areaEnd; c++) {
      const j = Math.floor(c / perBlock);
      const nb = newBlocks.get(j);
      if (nb) setRefcount(nb, this.refOrder, c - j * perBlock, 1);
      else this.changeRefcount(c, 1);
    }
    // Existing blocks that now count area clusters go first (increases are always safe to write early).
    this.cache.ref.writeDirty();
    const table = new Uint8Array(tableClusters * cs);
    const tv = new DataView(table.buffer);
    old.forEach((o, j) => tv.setBigUint64(j * 8, BigInt(o)));
    blocks.forEach((j, i) => {
      this.pwriteAll((blocksAt + i) * cs, newBlocks.get(j)!);
      tv.setBigUint64(j * 8, BigInt((blocksAt + i) * cs));
    });
    this.pwriteAll(tableAt * cs, table);
    this.sync();
    // refcount_table_offset and refcount_table_clusters are adjacent (header bytes 48-59): one write.
    const hdr = new Uint8Array(12);
    const hv = new DataView(hdr.buffer);
    hv.setBigUint64(0, BigInt(tableAt * cs));
    hv.setUint32(8, tableClusters);
    this.pwriteAll(HDR.refcountTableOffset, hdr);
    this.sync();
    const oldOffset = this.reftableOffset;
    const oldClusters = this.reftableClusters;
    this.reftable = Array.from({ length: tableClusters * perTableCluster }, (_, j) =>
      Number(tv.getBigUint64(j * 8)),
    );
    this.reftableOffset = tableAt * cs;
    this.reftableClusters = tableClusters;
    blocks.forEach((j, i) => this.cache.ref.put((blocksAt + i) * cs, newBlocks.get(j)!, false));
    this.endCluster = Math.max(this.endCluster, areaEnd);
    // Nothing points at the old table any more.
    for (let c = 0; c < oldClusters; c++) this.changeRefcount(oldOffset / cs + c, -1);
    this.freeHint = Math.min(this.freeHint, oldOffset / cs);
  }

  /** Give back host bytes [start, start+length) once the L2 tables that used them are on disk. */
  private queueFree(start: number, length: number): void {
    this.pendingFrees.push({ start, length });
    if (this.pendingFrees.length >= MAX_PENDING_FREES) this.writeMetadata();
  }

  // ---- metadata write-out ----

  /**
   * Refcount blocks, then (after data and refcounts are durable) L2 tables and L1 entries, then the refcount
   * decreases of clusters those tables stopped using: applied in the cache now, written only after the next
   * fdatasync (`refsAfterL2`), which `flush` does at once.
   */
  private writeMetadata(): void {
    this.cache.ref.writeDirty();
    if (this.cache.l2.hasDirty() || this.l1Dirty.size > 0) {
      this.sync();
      this.cache.l2.writeDirty((off, t) => this.pwriteAll(off, t));
      // The L1 entries of new L2 tables, after the tables (same barrier: a table is written whole before any
      // L1 entry can point at it only if both writes reach the disk in order, so sync between them).
      if (this.l1Dirty.size > 0) {
        this.sync();
        for (const i of [...this.l1Dirty].sort((a, b) => a - b)) {
          this.pwriteAll(this.header.l1TableOffset + i * 8, this.l1.subarray(i * 8, i * 8 + 8));
        }
        this.l1Dirty.clear();
      }
    }
    // While asynchronous transfers are in flight a freed cluster could be reused under one of them: the
    // frees wait for a moment with none.
    if (this.pendingFrees.length > 0 && this.inflight === 0) {
      const cs = this.clusterSize;
      const frees = this.pendingFrees;
      this.pendingFrees = [];
      this.inflated = null;
      this.refsAfterL2 = true;
      for (const f of frees) {
        const first = Math.floor(f.start / cs);
        const last = Math.floor((f.start + f.length - 1) / cs);
        for (let c = first; c <= last; c++) {
          this.changeRefcount(c, -1);
          if (this.refcountOf(c) === 0) {
            this.cache.l2.drop(c * cs);
            if (c < this.freeHint) this.freeHint = c;
          }
        }
      }
    }
  }

  /** A refcount block leaving the cache or flushed: decreases in it wait for the L2 tables written before. */
  private writeRefcountBlock(offset: number, block: Uint8Array): void {
    if (this.refsAfterL2) this.sync();
    this.pwriteAll(offset, block);
  }

  /** An L2 table leaving the cache: the refcounts of the clusters it uses go first. */
  private writeL2(offset: number, table: Uint8Array): void {
    this.cache.ref.writeDirty();
    this.sync();
    this.pwriteAll(offset, table);
  }

  /** Unknown autoclear bits must be cleared by a writer that does not maintain them (qcow2.txt, bytes 88-95). */
  private clearAutoclear(): void {
    if (this.header.version !== 3 || this.header.autoclearFeatures === 0n) return;
    this.pwriteAll(HDR.autoclearFeatures, be64(0));
    this.sync();
    this.header.autoclearFeatures = 0n;
  }

  // ---- host I/O ----

  private sync(): void {
    if (this.unsynced) {
      try {
        fdatasyncSync(this.fd);
      } catch (e) {
        throw fsError(e, 0, `flush of ${this.describe}`);
      }
      this.unsynced = false;
    }
    this.refsAfterL2 = false;
  }

  private preadNew(offset: number, length: number): Uint8Array {
    const buf = new Uint8Array(length);
    this.preadInto(offset, buf);
    return buf;
  }

  /** The descriptor for guest data in `buf`: O_DIRECT when open so and `buf` is aligned memory. */
  private dataFd(buf: Uint8Array): number {
    return this.directFd !== null && isDirectAligned(buf) ? this.directFd : this.fd;
  }

  /** Read `buf.length` bytes at `offset`; past the end of the file reads zeroes. */
  private preadInto(offset: number, buf: Uint8Array, fd = this.fd): void {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = readSync(fd, buf, done, buf.length - done, offset + done);
      } catch (e) {
        throw fsError(e, 0, `read of ${this.describe}`);
      }
      if (n === 0) {
        buf.fill(0, done);
        return;
      }
      done += n;
    }
  }

  private pwriteAll(offset: number, buf: Uint8Array, fd = this.fd): void {
    this.unsynced = true;
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = writeSync(fd, buf, done, buf.length - done, offset + done);
      } catch (e) {
        throw fsError(e, 0, `write of ${this.describe}`);
      }
      if (n === 0)
        throw new IoError("EIO", `write of ${this.describe} made no progress at byte ${offset + done}`);
      done += n;
    }
  }

  private readReftable(offset: number, clusters: number): number[] {
    const raw = this.preadNew(offset, clusters * this.clusterSize);
    const v = new DataView(raw.buffer);
    const out: number[] = [];
    for (let j = 0; j < raw.length / 8; j++) {
      const e = v.getBigUint64(j * 8) & 0xfffffffffffffe00n;
      const off = Number(e);
      if (off % this.clusterSize !== 0) {
        throw new ImageFormatError(
          "bad-header",
          `${this.path}: refcount block ${j} is not cluster-aligned`,
          this.path,
        );
      }
      out.push(off);
    }
    return out;
  }

  private zeroes(n: number): Uint8Array {
    if (!this.zeroBuf || this.zeroBuf.length < n)
      this.zeroBuf = new Uint8Array(Math.max(n, this.clusterSize));
    return this.zeroBuf.subarray(0, n);
  }

  private closedError(sector: number): IoError {
    return new IoError("EIO", `${this.describe} is closed`, sector);
  }
}

function openDirect(file: string, readOnly: boolean): number {
  const flags = (readOnly ? constants.O_RDONLY : constants.O_RDWR) | constants.O_DIRECT;
  try {
    return openSync(file, flags);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EINVAL") {
      throw new ImageError("ENODIRECT", `the filesystem holding ${file} does not support O_DIRECT`, file);
    }
    throw new ImageError(
      "EOPEN",
      `cannot open image ${file}: ${(e as Error).message}`,
      file,
      (e as NodeJS.ErrnoException).code,
    );
  }
}

/** One host transfer of an asynchronous request. */
interface Segment {
  host: number;
  buf: Uint8Array;
}

const RESOLVED = Promise.resolve();

/** Complete a request that needed no asynchronous host I/O: later, from a microtask, as `startIo` promises. */
function later(done: IoCallback, err: IoError | undefined): void {
  void RESOLVED.then(() => done(err));
}

function be64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v));
  return b;
}

/**
 * A backing file name as QEMU resolves it (bdrv_get_full_backing_filename): an absolute path or a URL as is, a
 * relative path relative to the directory of the image that names it.
 */
export function resolveBackingName(imagePath: string, name: string): string {
  if (isAbsolute(name) || /^[a-z][a-z0-9+.-]*:\/\//i.test(name)) return name;
  return join(dirname(imagePath), name);
}

/** Refuse what xenide cannot read (or, for a writable open, write) correctly. */
function checkFeatures(file: string, h: Qcow2Header, ext: Qcow2Extensions, readOnly: boolean): void {
  if (h.cryptMethod !== 0 || ext.hasCrypto) {
    throw new ImageFormatError("encrypted", `${file}: encrypted qcow2 images are not supported`, file);
  }
  if ((h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n || ext.dataFile !== undefined) {
    throw new ImageFormatError(
      "external-data-file",
      `${file}: qcow2 images with an external data file${ext.dataFile ? ` (${ext.dataFile})` : ""} are not supported`,
      file,
    );
  }
  if ((h.incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n && h.compressionType !== 0) {
    throw new ImageFormatError(
      "unsupported",
      `${file}: compression type ${h.compressionType === 1 ? "zstd" : h.compressionType} is not supported (deflate is)`,
      file,
    );
  }
  if ((h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n) {
    throw new ImageFormatError(
      "unsupported",
      `${file}: extended L2 entries (subclusters) are not supported`,
      file,
    );
  }
  const known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;
  const unknown = h.incompatibleFeatures & ~known;
  if (unknown !== 0n) {
    throw new ImageFormatError(
      "unsupported",
      `${file}: unsupported qcow2 feature(s): ${featureList(unknown, 0, ext.featureNames)}`,
      file,
    );
  }
  if (readOnly) return;
  if ((h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
    throw new ImageFormatError(
      "corrupt",
      `${file}: the image is marked corrupt; repair it with qemu-img check -r all, or open it read-only`,
      file,
    );
  }
  if ((h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
    throw new ImageFormatError(
      "dirty",
      `${file}: the image is dirty (lazy refcounts, not closed cleanly); repair its refcounts with qemu-img check -r all, or open it read-only`,
      file,
    );
  }
  if (h.nbSnapshots > 0) {
    throw new ImageFormatError(
      "unsupported",
      `${file}: has ${h.nbSnapshots} internal snapshot(s); xenide opens such images read-only only`,
      file,
    );
  }
}
