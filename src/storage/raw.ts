/**
 * A raw disk image file: sector N is bytes [N*512, N*512+512) of the file, as with QEMU's `format=raw`.
 *
 * Reads and writes go straight between the file and the caller's buffers (usually views of guest RAM) with
 * positional `fs.readSync`/`fs.writeSync` (sync path) or `fs.read`/`fs.write` callbacks (async path): on a
 * warm page cache the sync calls are the fastest route Node has, and the callback API is far cheaper than
 * `FileHandle` promises. No intermediate copy except the O_DIRECT bounce described below.
 *
 * O_DIRECT (`direct: true`) needs buffers, file offsets and lengths aligned to the disk's logical block size
 * (512 here). Offsets and lengths are whole sectors by construction. For memory, see `aligned.ts`: a caller's
 * view into `allocAligned` memory at a 512-multiple offset is used as is; any other buffer is bounced through
 * a page-aligned chunk, one chunk at a time.
 */
import fs from "node:fs";

import { allocAligned, isDirectAligned } from "./aligned.ts";
import { checkDiscard, checkIo, checkVec, fsError } from "./check.ts";
import { ImageError, ImageLockedError } from "./errors.ts";
import { ImageLock, lockHolder, lockPathOf } from "./lock.ts";
import { type BlockBackend, IoError, SECTOR_SIZE } from "./types.ts";

export interface RawImageOptions {
  /** Open read-only: writes and discards fail with EROFS. */
  readOnly?: boolean;
  /** Bypass the host page cache (O_DIRECT). Fails with `ImageError("ENODIRECT")` where unsupported. */
  direct?: boolean;
  /** Take the exclusive writer lock (default true); see lock.ts for the policy. */
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

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly sectorCount: number,
    readonly readOnly: boolean,
    readonly direct: boolean,
    private readonly lock: ImageLock | null,
  ) {
    this.describe = `raw:${path}${direct ? " (direct)" : ""}${readOnly ? " (ro)" : ""}`;
  }

  static open(path: string, options: RawImageOptions = {}): RawImageBackend {
    const readOnly = options.readOnly ?? false;
    const direct = options.direct ?? false;
    const useLock = options.lock ?? true;

    // Check everything that can be checked without side effects before taking the lock.
    let st: fs.Stats;
    try {
      st = fs.statSync(path);
    } catch (e) {
      throw new ImageError("EOPEN", `cannot open image ${path}: ${(e as Error).message}`, path);
    }
    if (!st.isFile()) throw new ImageError("EOPEN", `${path} is not a regular file`, path);
    checkImageSize(path, st.size);

    let lock: ImageLock | null = null;
    if (useLock) {
      if (readOnly) {
        const pid = lockHolder(path);
        if (pid !== undefined) throw new ImageLockedError(path, pid, lockPathOf(path));
      } else {
        lock = ImageLock.acquire(path);
      }
    }
    try {
      let flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
      if (direct) flags |= fs.constants.O_DIRECT;
      let fd: number;
      try {
        fd = fs.openSync(path, flags);
      } catch (e) {
        if (direct && (e as NodeJS.ErrnoException).code === "EINVAL") {
          throw new ImageError("ENODIRECT", `the filesystem holding ${path} does not support O_DIRECT`, path);
        }
        throw new ImageError("EOPEN", `cannot open image ${path}: ${(e as Error).message}`, path);
      }
      const size = fs.fstatSync(fd).size;
      try {
        checkImageSize(path, size);
      } catch (e) {
        fs.closeSync(fd);
        throw e;
      }
      return new RawImageBackend(path, fd, size / SECTOR_SIZE, readOnly, direct, lock);
    } catch (e) {
      lock?.release();
      throw e;
    }
  }

  // ---- sync path ----

  readSync(sector: number, buf: Uint8Array): void {
    const err = this.check(false, sector, buf);
    if (err) throw err;
    if (!this.direct || isDirectAligned(buf)) return this.preadSync(buf, sector);
    const bounce = (this.syncBounce ??= allocAligned(CHUNK, false));
    for (let off = 0; off < buf.length; off += CHUNK) {
      const len = Math.min(CHUNK, buf.length - off);
      const chunk = bounce.subarray(0, len);
      this.preadSync(chunk, sector + off / SECTOR_SIZE);
      buf.set(chunk, off);
    }
  }

  writeSync(sector: number, buf: Uint8Array): void {
    const err = this.check(true, sector, buf);
    if (err) throw err;
    if (!this.direct || isDirectAligned(buf)) return this.pwriteSync(buf, sector);
    const bounce = (this.syncBounce ??= allocAligned(CHUNK, false));
    for (let off = 0; off < buf.length; off += CHUNK) {
      const len = Math.min(CHUNK, buf.length - off);
      const chunk = bounce.subarray(0, len);
      chunk.set(buf.subarray(off, off + len));
      this.pwriteSync(chunk, sector + off / SECTOR_SIZE);
    }
  }

  /** Scatter-gather read with preadv: one host call for all buffers (O_DIRECT with unaligned ones: per buffer). */
  readvSync(sector: number, bufs: Uint8Array[]): void {
    const err = this.closed ? this.closedError(sector) : checkVec(this, false, sector, bufs);
    if (err) throw err;
    if (this.direct && !bufs.every(isDirectAligned)) {
      for (const buf of bufs) {
        this.readSync(sector, buf);
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
        n = fs.readvSync(this.fd, rest, pos + done);
      } catch (e) {
        throw fsError(e, sector + Math.floor(done / SECTOR_SIZE), `read of ${this.describe}`);
      }
      if (n === 0) {
        for (const b of rest) b.fill(0);
        return;
      }
      done += n;
      rest = skipBytes(rest, n);
    }
  }

  /** Scatter-gather write with pwritev (see `readvSync`). */
  writevSync(sector: number, bufs: Uint8Array[]): void {
    const err = this.closed ? this.closedError(sector) : checkVec(this, true, sector, bufs);
    if (err) throw err;
    if (this.direct && !bufs.every(isDirectAligned)) {
      for (const buf of bufs) {
        this.writeSync(sector, buf);
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
        n = fs.writevSync(this.fd, rest, pos + done);
      } catch (e) {
        throw fsError(e, sector + Math.floor(done / SECTOR_SIZE), `write of ${this.describe}`);
      }
      if (n === 0) throw this.noProgress(sector + Math.floor(done / SECTOR_SIZE));
      done += n;
      rest = skipBytes(rest, n);
    }
  }

  flushSync(): void {
    if (this.closed) throw this.closedError(0);
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      throw fsError(e, 0, `flush of ${this.describe}`);
    }
  }

  /**
   * Node cannot punch holes (no fallocate(FALLOC_FL_PUNCH_HOLE)), so a discard writes zeroes: afterwards the
   * sectors read as zero, like a disk with deterministic read-zeroes-after-TRIM, but the host blocks stay
   * allocated (a sparse image becomes less sparse). The one case done for real is a discard reaching the end
   * of the image: truncating and re-extending the file frees those blocks.
   */
  discardSync(sector: number, count: number): void {
    const err = this.closed ? this.closedError(sector) : checkDiscard(this, sector, count);
    if (err) throw err;
    if (count === 0) return;
    if (this.discardTail(sector, count)) return;
    const zeroes = this.zeroChunk();
    for (let s = sector; s < sector + count;) {
      const n = Math.min(CHUNK / SECTOR_SIZE, sector + count - s);
      this.pwriteSync(zeroes.subarray(0, n * SECTOR_SIZE), s);
      s += n;
    }
  }

  // ---- async path ----

  read(sector: number, buf: Uint8Array): Promise<void> {
    const err = this.check(false, sector, buf);
    if (err) return Promise.reject(err);
    if (!this.direct || isDirectAligned(buf)) return this.io(false, buf, sector);
    return this.bounced(false, sector, buf);
  }

  write(sector: number, buf: Uint8Array): Promise<void> {
    const err = this.check(true, sector, buf);
    if (err) return Promise.reject(err);
    if (!this.direct || isDirectAligned(buf)) return this.io(true, buf, sector);
    return this.bounced(true, sector, buf);
  }

  /** O_DIRECT transfer of an unaligned buffer through a page-aligned chunk taken from the pool. */
  private async bounced(write: boolean, sector: number, buf: Uint8Array): Promise<void> {
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

  async readv(sector: number, bufs: Uint8Array[]): Promise<void> {
    const err = this.closed ? this.closedError(sector) : checkVec(this, false, sector, bufs);
    if (err) throw err;
    if (this.direct && !bufs.every(isDirectAligned)) {
      for (const buf of bufs) {
        await this.read(sector, buf);
        sector += buf.length / SECTOR_SIZE;
      }
      return;
    }
    return this.iov(false, bufs, sector);
  }

  async writev(sector: number, bufs: Uint8Array[]): Promise<void> {
    const err = this.closed ? this.closedError(sector) : checkVec(this, true, sector, bufs);
    if (err) throw err;
    if (this.direct && !bufs.every(isDirectAligned)) {
      for (const buf of bufs) {
        await this.write(sector, buf);
        sector += buf.length / SECTOR_SIZE;
      }
      return;
    }
    return this.iov(true, bufs, sector);
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError(0));
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (e) => (e ? reject(fsError(e, 0, `flush of ${this.describe}`)) : resolve()));
    });
  }

  /** As `discardSync`: zeroes written in bounded chunks, or a real deallocation at the end of the image. */
  async discard(sector: number, count: number): Promise<void> {
    const err = this.closed ? this.closedError(sector) : checkDiscard(this, sector, count);
    if (err) throw err;
    if (count === 0) return;
    if (this.discardTail(sector, count)) return;
    const zeroes = this.zeroChunk();
    for (let s = sector; s < sector + count;) {
      const n = Math.min(CHUNK / SECTOR_SIZE, sector + count - s);
      await this.io(true, zeroes.subarray(0, n * SECTOR_SIZE), s);
      s += n;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } finally {
      this.lock?.release();
    }
  }

  // ---- helpers ----

  private check(write: boolean, sector: number, buf: Uint8Array): IoError | undefined {
    return this.closed ? this.closedError(sector) : checkIo(this, write, sector, buf);
  }

  private closedError(sector: number): IoError {
    return new IoError("EIO", `${this.describe} is closed`, sector);
  }

  /** pread until `buf` is full; a read at end of file (the file was shrunk by someone else) yields zeroes. */
  private preadSync(buf: Uint8Array, sector: number): void {
    const pos = sector * SECTOR_SIZE;
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, done, buf.length - done, pos + done);
      } catch (e) {
        throw fsError(e, sector + Math.floor(done / SECTOR_SIZE), `read of ${this.describe}`);
      }
      if (n === 0) {
        buf.fill(0, done);
        return;
      }
      done += n;
    }
  }

  private pwriteSync(buf: Uint8Array, sector: number): void {
    const pos = sector * SECTOR_SIZE;
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.writeSync(this.fd, buf, done, buf.length - done, pos + done);
      } catch (e) {
        throw fsError(e, sector + Math.floor(done / SECTOR_SIZE), `write of ${this.describe}`);
      }
      if (n === 0) throw this.noProgress(sector + Math.floor(done / SECTOR_SIZE));
      done += n;
    }
  }

  /** Positional read or write of all of `buf` with `fs.read`/`fs.write` callbacks, looping on short transfers. */
  private io(write: boolean, buf: Uint8Array, sector: number): Promise<void> {
    const pos = sector * SECTOR_SIZE;
    const what = `${write ? "write" : "read"} of ${this.describe}`;
    return new Promise((resolve, reject) => {
      let done = 0;
      const step = (): void => {
        const cb = (e: NodeJS.ErrnoException | null, n: number): void => {
          const at = sector + Math.floor(done / SECTOR_SIZE);
          if (e) return reject(fsError(e, at, what));
          if (n === 0) {
            if (write) return reject(this.noProgress(at));
            buf.fill(0, done);
            return resolve();
          }
          done += n;
          if (done < buf.length) step();
          else resolve();
        };
        if (write) fs.write(this.fd, buf, done, buf.length - done, pos + done, cb);
        else fs.read(this.fd, buf, done, buf.length - done, pos + done, cb);
      };
      step();
    });
  }

  /** `io` for several buffers with `fs.readv`/`fs.writev` (libuv caps one call at IOV_MAX: we loop). */
  private iov(write: boolean, bufs: Uint8Array[], sector: number): Promise<void> {
    const pos = sector * SECTOR_SIZE;
    const total = byteLength(bufs);
    const what = `${write ? "write" : "read"} of ${this.describe}`;
    return new Promise((resolve, reject) => {
      let done = 0;
      let rest = bufs;
      const step = (): void => {
        const cb = (e: NodeJS.ErrnoException | null, n: number): void => {
          const at = sector + Math.floor(done / SECTOR_SIZE);
          if (e) return reject(fsError(e, at, what));
          if (n === 0) {
            if (write) return reject(this.noProgress(at));
            for (const b of rest) b.fill(0);
            return resolve();
          }
          done += n;
          rest = skipBytes(rest, n);
          if (done < total) step();
          else resolve();
        };
        if (write) fs.writev(this.fd, rest, pos + done, cb);
        else fs.readv(this.fd, rest, pos + done, cb);
      };
      step();
    });
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
      fs.ftruncateSync(this.fd, sector * SECTOR_SIZE);
      fs.ftruncateSync(this.fd, this.sectorCount * SECTOR_SIZE);
    } catch (e) {
      throw fsError(e, sector, `discard of ${this.describe}`);
    }
    return true;
  }
}

function byteLength(bufs: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** What is left of `bufs` after the first `n` bytes were transferred. */
function skipBytes(bufs: Uint8Array[], n: number): Uint8Array[] {
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
