/**
 * A raw disk image file: sector N is bytes [N*512, N*512+512) of the file, as with QEMU's `format=raw`.
 *
 * Reads and writes go straight between the file and the caller's buffers (usually views of guest RAM) with
 * positional `fs.readSync`/`fs.writeSync` (sync methods; `preadv`/`pwritev` for several buffers) or, through
 * `startIo`, the `fs.read`/`fs.write`/`fs.readv`/`fs.writev` callbacks on a pooled transfer (the async engine's
 * path, with flush as an `fdatasync` and discard as chunked writes off the event loop too): on a warm page
 * cache the sync calls are the fastest route Node has, and the callback API is far cheaper than `FileHandle`
 * promises. No intermediate copy except the O_DIRECT bounce described below. Requests arrive validated (the
 * engines check them; see `BlockBackend`); the medium only refuses I/O once it is closed.
 *
 * O_DIRECT (`direct: true`) needs buffers, file offsets and lengths aligned to the disk's logical block size
 * (512 here). Offsets and lengths are whole sectors by construction. For memory, see `aligned.ts`: a caller's
 * view into `allocAligned` memory at a 512-multiple offset is used as is; any other buffer is bounced through
 * a page-aligned chunk, one chunk at a time.
 */
// Named imports: the `fs` module object is in dictionary mode, so every `fs.x` load on a hot path is a generic
// property lookup that optimized code cannot inline (and a default import makes the launcher's CommonJS bundle
// copy the whole module's properties at start-up).
import {
  closeSync,
  constants,
  fdatasync as fsFdatasync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  openSync,
  read as fsRead,
  readSync,
  readv as fsReadv,
  readvSync,
  Stats,
  statSync,
  write as fsWrite,
  writeSync,
  writev as fsWritev,
  writevSync,
} from "node:fs";

import { allocAligned, isDirectAligned } from "./aligned.ts";
import { fsError } from "./check.ts";
import { ImageError } from "./errors.ts";
import { ImageLock } from "./lock.ts";
import { type BlockBackend, type IoCallback, IoError, type MediumRequest, SECTOR_SIZE } from "./types.ts";

export interface RawImageOptions {
  /** Open read-only: writes and discards fail with EROFS. */
  readOnly?: boolean;
  /** Bypass the host page cache (O_DIRECT). Fails with `ImageError("ENODIRECT")` where unsupported. */
  direct?: boolean;
  /**
   * Lock the image (default true): a read-only open shares it with other readers, a read-write open excludes
   * every other reader and writer, xenide or QEMU (see lock.ts). false: take no lock and check none.
   */
  lock?: boolean;
}

/** Bounce chunk for O_DIRECT with unaligned caller buffers, and the zero chunk for discard. */
const CHUNK = 256 * 1024;

export class RawImageBackend implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly describe: string;
  private closed = false;
  /** Sync-path bounce chunk (the sync path is never re-entered, so one suffices). */
  private syncBounce: Uint8Array | null = null;
  /** Free bounce chunks for async requests, which may be many in flight at once. */
  private readonly bouncePool: Uint8Array[] = [];
  private zeroes: Uint8Array | null = null;
  /** Idle `Transfer`s (one per async request in flight at most). */
  private readonly transfers: Transfer[] = [];
  /**
   * Writes completed so far, and how many of them the last `flush` covered: as QEMU's write_gen and flushed_gen
   * (block/io.c, bdrv_co_flush), a flush with nothing written since the last one has nothing to make durable
   * and skips its fdatasync, the one at close included.
   */
  private readonly writes: WriteGeneration = { gen: 0 };
  private flushedGen = 0;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly sectorCount: number,
    readonly readOnly: boolean,
    readonly direct: boolean,
    /** The lock this backend holds (null: opened with `lock: false`). */
    readonly lock: ImageLock | null,
  ) {
    this.describe = `raw:${path}${direct ? " (direct)" : ""}${readOnly ? " (ro)" : ""}`;
  }

  /** The file itself (device and inode), the same however its path is written: what a drive serial derives from. */
  get identity(): string {
    const st = fstatSync(this.fd);
    return `raw:${st.dev}:${st.ino}`;
  }

  static open(path: string, options: RawImageOptions = {}): RawImageBackend {
    const readOnly = options.readOnly ?? false;
    const direct = options.direct ?? false;
    const useLock = options.lock ?? true;

    // Check what can be checked before opening and locking.
    let st: Stats;
    try {
      st = statSync(path);
    } catch (e) {
      throw new ImageError(
        "EOPEN",
        `cannot open image ${path}: ${(e as Error).message}`,
        path,
        (e as NodeJS.ErrnoException).code,
      );
    }
    if (!st.isFile()) throw new ImageError("EOPEN", `${path} is not a regular file`, path);
    checkImageSize(path, st.size);

    let flags = readOnly ? constants.O_RDONLY : constants.O_RDWR;
    if (direct) flags |= constants.O_DIRECT;
    let fd: number;
    try {
      fd = openSync(path, flags);
    } catch (e) {
      if (direct && (e as NodeJS.ErrnoException).code === "EINVAL") {
        throw new ImageError("ENODIRECT", `the filesystem holding ${path} does not support O_DIRECT`, path);
      }
      throw new ImageError(
        "EOPEN",
        `cannot open image ${path}: ${(e as Error).message}`,
        path,
        (e as NodeJS.ErrnoException).code,
      );
    }
    let lock: ImageLock | null = null;
    try {
      // The kernel lock goes on this descriptor: it lasts until the descriptor is closed.
      if (useLock) lock = ImageLock.acquire(path, fd, readOnly ? "read" : "write");
      const size = fstatSync(fd).size;
      checkImageSize(path, size);
      return new RawImageBackend(path, fd, size / SECTOR_SIZE, readOnly, direct, lock);
    } catch (e) {
      lock?.release();
      closeSync(fd);
      throw e;
    }
  }

  // ---- sync I/O ----

  read(sector: number, bufs: readonly Uint8Array[]): void {
    this.syncIo(false, sector, bufs);
  }

  write(sector: number, bufs: readonly Uint8Array[]): void {
    this.syncIo(true, sector, bufs);
  }

  flush(): void {
    if (this.closed) throw this.closedError(0);
    const gen = this.writes.gen;
    if (gen === this.flushedGen) return;
    try {
      fdatasyncSync(this.fd);
    } catch (e) {
      throw fsError(e, 0, `flush of ${this.describe}`);
    }
    this.flushedGen = gen;
  }

  /**
   * Node cannot punch holes (no fallocate(FALLOC_FL_PUNCH_HOLE)), so a discard writes zeroes: afterwards the
   * sectors read as zero, like a disk with deterministic read-zeroes-after-TRIM, but the host blocks stay
   * allocated (a sparse image becomes less sparse). The one case done for real is a discard reaching the end
   * of the image: truncating and re-extending the file frees those blocks.
   */
  discard(sector: number, count: number): void {
    if (this.closed) throw this.closedError(sector);
    this.writes.gen++;
    if (count === 0 || this.discardTail(sector, count)) return;
    const zeroes = this.zeroChunk();
    for (let s = sector; s < sector + count;) {
      const n = Math.min(CHUNK / SECTOR_SIZE, sector + count - s);
      this.pio(true, zeroes.subarray(0, n * SECTOR_SIZE), s);
      s += n;
    }
  }

  // ---- asynchronous submission (the async engine's path) ----

  /**
   * The sync methods' work on libuv's threads: the request runs on a pooled `Transfer` whose fs callbacks are
   * bound once, so a read or write costs no promise and no closure. O_DIRECT with a buffer outside aligned
   * memory goes through a bounce chunk instead (a promise chain: the slow path anyway).
   */
  startIo(req: MediumRequest, done: IoCallback): void {
    const sector = req.sector;
    if (this.closed) return later(done, this.closedError(sector));
    switch (req.op) {
      case "read":
      case "write": {
        const write = req.op === "write";
        const bufs = req.bufs;
        if (this.direct && !allAligned(bufs)) return this.bounced(write, sector, bufs, done);
        return this.transfer().start(write, sector, bufs, done);
      }
      case "flush":
        return this.transfer().flush(done);
      case "discard": {
        const count = req.count;
        this.writes.gen++; // the tail's truncation completes here; zero chunks count again when they end
        let finished: boolean;
        try {
          finished = count === 0 || this.discardTail(sector, count);
        } catch (e) {
          return later(done, e as IoError);
        }
        if (finished) return later(done, undefined);
        return this.transfer().zero(sector, count, this.zeroChunk(), done);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // The lock file first, then the descriptor (and with it the kernel lock): whoever takes the kernel lock
    // next finds no record of ours.
    try {
      this.lock?.release();
    } finally {
      closeSync(this.fd);
    }
  }

  // ---- helpers ----

  private closedError(sector: number): IoError {
    return new IoError("EIO", `${this.describe} is closed`, sector);
  }

  /** `read`/`write`: one buffer by positional I/O, several by preadv/pwritev (O_DIRECT, unaligned: one by one). */
  private syncIo(write: boolean, sector: number, bufs: readonly Uint8Array[]): void {
    if (this.closed) throw this.closedError(sector);
    if (write) this.writes.gen++;
    if (bufs.length === 1) return this.syncOne(write, sector, bufs[0]!);
    if (this.direct && !allAligned(bufs)) {
      for (const buf of bufs) {
        this.syncOne(write, sector, buf);
        sector += buf.length / SECTOR_SIZE;
      }
      return;
    }
    const pos = sector * SECTOR_SIZE;
    const total = byteLength(bufs);
    let rest = bufs;
    for (let done = 0; done < total;) {
      let n: number;
      try {
        n = write ? writevSync(this.fd, rest, pos + done) : readvSync(this.fd, rest, pos + done);
      } catch (e) {
        throw this.hostError(e, write, sector, done);
      }
      if (n === 0) {
        if (write) throw this.noProgress(sector + Math.floor(done / SECTOR_SIZE));
        for (const b of rest) b.fill(0); // end of file: see `pio`
        return;
      }
      done += n;
      if (done < total) rest = skipBytes(rest, n); // libuv caps one call at IOV_MAX buffers
    }
  }

  /** One buffer, through a bounce chunk when O_DIRECT cannot use it as is. */
  private syncOne(write: boolean, sector: number, buf: Uint8Array): void {
    if (!this.direct || isDirectAligned(buf)) return this.pio(write, buf, sector);
    const bounce = (this.syncBounce ??= allocAligned(CHUNK, false));
    for (let off = 0; off < buf.length; off += CHUNK) {
      const len = Math.min(CHUNK, buf.length - off);
      const chunk = bounce.subarray(0, len);
      if (write) chunk.set(buf.subarray(off, off + len));
      this.pio(write, chunk, sector + off / SECTOR_SIZE);
      if (!write) buf.set(chunk, off);
    }
  }

  /**
   * pread/pwrite until all of `buf` is moved. A read at end of file (the file was shrunk by someone else)
   * yields zeroes; a write that makes no progress fails.
   */
  private pio(write: boolean, buf: Uint8Array, sector: number): void {
    const pos = sector * SECTOR_SIZE;
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = write
          ? writeSync(this.fd, buf, done, buf.length - done, pos + done)
          : readSync(this.fd, buf, done, buf.length - done, pos + done);
      } catch (e) {
        throw this.hostError(e, write, sector, done);
      }
      if (n === 0) {
        if (write) throw this.noProgress(sector + Math.floor(done / SECTOR_SIZE));
        buf.fill(0, done);
        return;
      }
      done += n;
    }
  }

  private hostError(e: unknown, write: boolean, sector: number, done: number): IoError {
    return fsError(
      e,
      sector + Math.floor(done / SECTOR_SIZE),
      `${write ? "write" : "read"} of ${this.describe}`,
    );
  }

  private transfer(): Transfer {
    return this.transfers.pop() ?? new Transfer(this.fd, this.describe, this.transfers, this.writes);
  }

  /** A transfer as a promise (for the bounce path). */
  private io(write: boolean, buf: Uint8Array, sector: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.transfer().start(write, sector, [buf], (err) => (err ? reject(err) : resolve()));
    });
  }

  /** `startIo` of a read or write under O_DIRECT with buffers outside aligned memory. */
  private bounced(write: boolean, sector: number, bufs: readonly Uint8Array[], done: IoCallback): void {
    this.bouncedIo(write, sector, bufs).then(
      () => done(undefined),
      (e: unknown) => done(fsError(e, sector, `${write ? "write" : "read"} of ${this.describe}`)),
    );
  }

  /** Buffer after buffer; an unaligned one through a page-aligned chunk taken from the pool. */
  private async bouncedIo(write: boolean, sector: number, bufs: readonly Uint8Array[]): Promise<void> {
    for (const buf of bufs) {
      if (isDirectAligned(buf)) {
        await this.io(write, buf, sector);
      } else {
        const bounce = this.bouncePool.pop() ?? allocAligned(CHUNK, false);
        try {
          for (let off = 0; off < buf.length; off += CHUNK) {
            const len = Math.min(CHUNK, buf.length - off);
            const chunk = bounce.subarray(0, len);
            if (write) chunk.set(buf.subarray(off, off + len));
            await this.io(write, chunk, sector + off / SECTOR_SIZE);
            if (!write) buf.set(chunk, off);
          }
        } finally {
          this.bouncePool.push(bounce);
        }
      }
      sector += buf.length / SECTOR_SIZE;
    }
  }

  private noProgress(sector: number): IoError {
    return new IoError("EIO", `write of ${this.describe} made no progress at sector ${sector}`, sector);
  }

  private zeroChunk(): Uint8Array {
    // Never written to: wasm memory starts zeroed, and it is also aligned for O_DIRECT.
    return (this.zeroes ??= allocAligned(CHUNK, false));
  }

  /** Free the blocks of a discard that reaches the end of the image by truncating and re-extending the file. */
  private discardTail(sector: number, count: number): boolean {
    if (sector + count !== this.sectorCount) return false;
    try {
      ftruncateSync(this.fd, sector * SECTOR_SIZE);
      ftruncateSync(this.fd, this.sectorCount * SECTOR_SIZE);
    } catch (e) {
      throw fsError(e, sector, `discard of ${this.describe}`);
    }
    return true;
  }
}

const RESOLVED = Promise.resolve();
const NO_BUFFERS: readonly Uint8Array[] = [];

/** Complete a callback request that needs no host I/O: later, from a microtask, as `startIo` promises. */
function later(done: IoCallback, err: IoError | undefined): void {
  void RESOLVED.then(() => done(err));
}

function allAligned(bufs: readonly Uint8Array[]): boolean {
  for (const b of bufs) if (!isDirectAligned(b)) return false;
  return true;
}

/** Writes completed on a backend (a counter shared with its `Transfer`s). */
interface WriteGeneration {
  gen: number;
}

/**
 * One async request in flight: positional `fs.read`/`fs.write` for one buffer, `fs.readv`/`fs.writev` for
 * several, repeated on short transfers; an `fdatasync`; or a discard's zero chunks, written one after the other.
 * Its fs callbacks are bound once and the object goes back to its pool when the request ends, so a request
 * allocates nothing of its own (libuv's `uv_fs_t` is the one per-call object).
 */
class Transfer {
  private write = false;
  private sector = 0;
  /** The buffer of a single-buffer transfer, else null. */
  private buf: Uint8Array | null = null;
  /** What is left of a vectored transfer's buffers. */
  private rest: readonly Uint8Array[] = NO_BUFFERS;
  private total = 0;
  private moved = 0;
  /** A discard: the zero chunk, and the sectors still to write after the current chunk. */
  private zeroes: Uint8Array | null = null;
  private zeroLeft = 0;
  private done: IoCallback | null = null;
  private readonly onFs: (e: NodeJS.ErrnoException | null, n: number) => void;
  private readonly onSync: (e: NodeJS.ErrnoException | null) => void;

  constructor(
    private readonly fd: number,
    private readonly describe: string,
    private readonly pool: Transfer[],
    /** The backend's write generation: a write counts once it has ended (its data may land until then). */
    private readonly writes: WriteGeneration,
  ) {
    this.onFs = (e, n) => this.step(e, n);
    this.onSync = (e) => this.end(e ? fsError(e, 0, `flush of ${this.describe}`) : undefined);
  }

  start(write: boolean, sector: number, bufs: readonly Uint8Array[], done: IoCallback): void {
    this.write = write;
    this.sector = sector;
    this.done = done;
    this.moved = 0;
    if (bufs.length === 1) {
      this.buf = bufs[0]!;
      this.total = this.buf.length;
    } else {
      this.rest = bufs;
      this.total = byteLength(bufs);
    }
    this.issue();
  }

  flush(done: IoCallback): void {
    this.write = false;
    this.done = done;
    fsFdatasync(this.fd, this.onSync);
  }

  /** Write `count` sectors of zeroes from `sector` on, a chunk of `zeroes` at a time. */
  zero(sector: number, count: number, zeroes: Uint8Array, done: IoCallback): void {
    this.write = true;
    this.sector = sector;
    this.done = done;
    this.zeroes = zeroes;
    this.zeroLeft = count;
    this.nextZeroChunk();
    this.issue();
  }

  private nextZeroChunk(): void {
    const n = Math.min(this.zeroes!.length / SECTOR_SIZE, this.zeroLeft);
    this.buf = this.zeroes!.subarray(0, n * SECTOR_SIZE);
    this.total = this.buf.length;
    this.moved = 0;
    this.zeroLeft -= n;
  }

  private issue(): void {
    const pos = this.sector * SECTOR_SIZE + this.moved;
    const buf = this.buf;
    if (buf !== null) {
      const len = this.total - this.moved;
      if (this.write) fsWrite(this.fd, buf, this.moved, len, pos, this.onFs);
      else fsRead(this.fd, buf, this.moved, len, pos, this.onFs);
    } else if (this.write) fsWritev(this.fd, this.rest, pos, this.onFs);
    else fsReadv(this.fd, this.rest, pos, this.onFs);
  }

  private step(e: NodeJS.ErrnoException | null, n: number): void {
    const at = this.sector + Math.floor(this.moved / SECTOR_SIZE);
    if (e) return this.end(fsError(e, at, `${this.write ? "write" : "read"} of ${this.describe}`));
    if (n === 0) {
      if (this.write) {
        return this.end(new IoError("EIO", `write of ${this.describe} made no progress at sector ${at}`, at));
      }
      // End of file: the image was shrunk by someone else. What is left reads as zeroes, as on the sync path.
      if (this.buf !== null) this.buf.fill(0, this.moved);
      else for (const b of this.rest) b.fill(0);
      return this.end(undefined);
    }
    this.moved += n;
    if (this.moved >= this.total) {
      if (this.zeroLeft === 0) return this.end(undefined);
      this.sector += this.total / SECTOR_SIZE;
      this.nextZeroChunk();
    } else if (this.buf === null) this.rest = skipBytes(this.rest, n);
    this.issue();
  }

  private end(err: IoError | undefined): void {
    if (this.write) this.writes.gen++; // failed too: part of it may have reached the file
    const done = this.done!;
    this.done = null;
    this.buf = null;
    this.rest = NO_BUFFERS;
    this.zeroes = null;
    this.zeroLeft = 0;
    this.pool.push(this);
    done(err);
  }
}

function byteLength(bufs: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** What is left of `bufs` after the first `n` bytes were transferred. */
function skipBytes(bufs: readonly Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < bufs.length && n >= bufs[i]!.length) n -= bufs[i++]!.length;
  const rest = bufs.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}

function checkImageSize(path: string, size: number): void {
  if (size % SECTOR_SIZE !== 0) {
    throw new ImageError(
      "EBADSIZE",
      `${path} is ${size} bytes, not a whole number of ${SECTOR_SIZE}-byte sectors (a raw image must be)`,
      path,
    );
  }
}
