/**
 * Moving sectors between a disk and a file, standard input or standard output in bounded chunks, for `read`
 * and `write`: memory stays at a few chunks whatever the size of the transfer.
 *
 * - Sectors go through the disk path one chunk (1 MiB) at a time; between chunks the event loop gets a turn,
 *   so signals, stream backpressure and the progress bar are served during a long synchronous transfer.
 * - An output file is written under a temporary name in its own directory, synced, and renamed over the
 *   target only when every sector is in it; an error or SIGINT/SIGTERM/SIGHUP removes the temporary file. A
 *   target that exists and is not a regular file (a FIFO, /dev/null) is written in place.
 * - Standard output and other streams are written with backpressure (`write()` returning false waits for
 *   'drain').
 * - A progress bar (cli-progress) appears on a terminal once a transfer has run for more than a second.
 */
import * as fs from "node:fs";
import * as nodePath from "node:path";
import type { Readable, Writable } from "node:stream";
import { Presets, SingleBar } from "cli-progress";
import { AtaError } from "../guest/ata-driver.ts";
import { isAtaVia } from "../machine/disk-path.ts";
import { checkSectorRange, type OpenedDisk } from "./disk-options.ts";
import { LBA28_LIMIT } from "../spec/ata.ts";
import { BlkfrontError, BlkfrontIoError } from "../xenblk/blkfront.ts";
import { UsageError } from "./errors.ts";

export const SECTOR = 512;
/** Sectors per chunk: 1 MiB, the ATA driver's own bounce-buffer size. */
export const CHUNK_SECTORS = 2048;
export const CHUNK_BYTES = CHUNK_SECTORS * SECTOR;

// ---- range checks -------------------------------------------------------------------------------------------

/**
 * One past the last sector a transfer may touch: the end of the disk, or for an IDE path limited to LBA28
 * (`--lba28`, or a drive without the LBA48 feature set) the last sector a 28-bit command reaches. The guest's
 * ATA driver follows Linux's lba_28_ok(): a 28-bit command must end below sector 0x0FFFFFFF.
 */
export function sectorLimit(disk: OpenedDisk, lba28Forced: boolean): { limit: number; lba28: boolean } {
  const total = disk.path.sectors;
  const only28 = isAtaVia(disk.path.name) && (lba28Forced || disk.identity?.lba48 === false);
  const limit28 = LBA28_LIMIT - 1;
  if (only28 && limit28 < total) return { limit: limit28, lba28: true };
  return { limit: total, lba28: false };
}

const span = (lba: number, count: number): string =>
  count === 1 ? `sector ${lba}` : `sectors ${lba}..${lba + count - 1}`;

/**
 * Refuse an out-of-reach range before any command is issued, as one line (exit 2): past the end of the disk
 * (the check `read` and `write` share, in disk-options), or past what LBA28 commands reach.
 */
export function checkTransferRange(disk: OpenedDisk, lba28Forced: boolean, lba: number, count: number): void {
  checkSectorRange(lba, count, disk.path.sectors);
  const { limit, lba28 } = sectorLimit(disk, lba28Forced);
  if (lba28 && lba + count > limit) {
    const why = lba28Forced ? "leave out --lba28 to use LBA48" : "the drive has no LBA48";
    const are = count === 1 ? "is" : "are";
    throw new UsageError(
      `${span(lba, count)} ${are} beyond what LBA28 commands reach (sectors below ${limit}; ${why})`,
    );
  }
}

/** A failure the disk path reported (the drive's ATA error, a blkif error status) as one line, exit 1. */
export function pathFailure(e: unknown, what: "read" | "write" | "flush"): unknown {
  if (e instanceof AtaError || e instanceof BlkfrontIoError || e instanceof BlkfrontError) {
    return new UsageError(`${what} failed: ${e.message}`, 1);
  }
  return e;
}

// ---- interruption ---------------------------------------------------------------------------------------------

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const cleanups = new Set<() => void>();

function onSignal(signal: NodeJS.Signals): void {
  for (const c of [...cleanups]) {
    try {
      c();
    } catch {
      // Best effort: the process is going away.
    }
  }
  cleanups.clear();
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  // Die of the same signal, so the parent sees how the process ended.
  process.kill(process.pid, signal);
}

/**
 * Run `cleanup` if SIGINT, SIGTERM or SIGHUP arrives before the returned function is called; the process then
 * dies of that signal as it would have without the handler.
 */
export function onInterrupt(cleanup: () => void): () => void {
  if (cleanups.size === 0) for (const s of SIGNALS) process.on(s, onSignal);
  cleanups.add(cleanup);
  return () => {
    if (!cleanups.delete(cleanup)) return;
    if (cleanups.size === 0) for (const s of SIGNALS) process.removeListener(s, onSignal);
  };
}

/** Give the event loop a turn (signals, timers, 'drain'), even when the disk path completes synchronously. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// ---- file system messages -------------------------------------------------------------------------------------

const REASONS: Record<string, string> = {
  ENOENT: "no such file or directory",
  ENOTDIR: "a component of the path is not a directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "it is a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EFBIG: "file too large",
  EIO: "input/output error",
  ENAMETOOLONG: "name too long",
  ELOOP: "too many symbolic links",
};

/** The reason of a file-system error, without the (possibly temporary) path Node puts in its message. */
export function fsReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === "string") return REASONS[err.code] ?? err.code;
  return e instanceof Error ? e.message : String(e);
}

// ---- output ---------------------------------------------------------------------------------------------------

/** Write `data` to a stream, waiting for 'drain' when the stream asks the writer to wait. */
export function writeStream(stream: Writable, data: Uint8Array | string): Promise<void> | void {
  if (stream.write(data)) return;
  return new Promise((resolve, reject) => {
    const done = (): void => {
      stream.off("drain", done);
      stream.off("close", done);
      stream.off("error", fail);
      resolve();
    };
    const fail = (e: Error): void => {
      stream.off("drain", done);
      stream.off("close", done);
      stream.off("error", fail);
      reject(e);
    };
    stream.on("drain", done);
    stream.on("close", done);
    stream.on("error", fail);
  });
}

/**
 * An output file that appears only complete. Bytes go to `.NAME.xenide-partial-PID` beside the target;
 * `commit()` syncs it and renames it over the target (keeping an existing target's permission bits);
 * `abort()`, an error or an interrupting signal removes it, leaving an existing target as it was.
 */
export class OutputFile {
  private fd: number;
  private finished = false;
  private readonly disarm: () => void;
  /** The temporary file, or null when the target is written in place (not a regular file). */
  readonly tempPath: string | null;
  private readonly finalPath: string;
  bytes = 0;

  private constructor(
    readonly target: string,
    fd: number,
    tempPath: string | null,
    finalPath: string,
  ) {
    this.fd = fd;
    this.tempPath = tempPath;
    this.finalPath = finalPath;
    this.disarm = onInterrupt(() => this.discard());
  }

  /**
   * Prepare to write `target`. Refuses, as one line (exit 1), a directory or a place that cannot be written;
   * `avoid` names files that must not be replaced (the image being read), exit 2.
   */
  static create(target: string, avoid: { path: string; what: string }[] = []): OutputFile {
    const fail = (reason: string, code = 1): UsageError =>
      new UsageError(`cannot write ${target}: ${reason}`, code);
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT") throw fail(fsReason(e));
    }
    if (st?.isDirectory()) throw fail("it is a directory");
    if (st) {
      for (const a of avoid) {
        let other: fs.Stats | undefined;
        try {
          other = fs.statSync(a.path);
        } catch {
          continue;
        }
        if (other.dev === st.dev && other.ino === st.ino) throw fail(`it is ${a.what}`, 2);
      }
    }
    if (st && !st.isFile()) {
      // A FIFO, a terminal, /dev/null: written in place, as a shell redirection would.
      try {
        return new OutputFile(target, fs.openSync(target, "w"), null, target);
      } catch (e) {
        throw fail(fsReason(e));
      }
    }
    // Beside the file the target resolves to (a symbolic link keeps pointing at the new file).
    let finalPath = target;
    if (st) {
      try {
        finalPath = fs.realpathSync(target);
      } catch {
        // Keep the name as given.
      }
    } else {
      // A dangling link: a shell's `>` creates the file it names, and so do we (the link stays a link).
      finalPath = danglingLinkTarget(target) ?? target;
    }
    const dir = nodePath.dirname(finalPath);
    const temp = nodePath.join(dir, `.${nodePath.basename(finalPath)}.xenide-partial-${process.pid}`);
    let fd: number;
    try {
      fd = openExclusive(temp, st ? st.mode & 0o7777 : 0o666);
    } catch (e) {
      throw fail(fsReason(e));
    }
    if (st) {
      try {
        fs.fchmodSync(fd, st.mode & 0o7777);
      } catch {
        // The umask already applied; not worth failing the transfer over.
      }
    }
    return new OutputFile(target, fd, temp, finalPath);
  }

  write(data: Uint8Array): void {
    let off = 0;
    try {
      while (off < data.length) off += fs.writeSync(this.fd, data, off, data.length - off);
    } catch (e) {
      throw new UsageError(`cannot write ${this.target}: ${fsReason(e)}`, 1);
    }
    this.bytes += data.length;
  }

  /** Make the file durable and give it its name. */
  commit(): void {
    if (this.finished) return;
    try {
      if (this.tempPath) fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = -1;
      if (this.tempPath) {
        fs.renameSync(this.tempPath, this.finalPath);
        syncDirectory(nodePath.dirname(this.finalPath));
      }
      this.finished = true;
    } catch (e) {
      this.discard();
      throw new UsageError(`cannot write ${this.target}: ${fsReason(e)}`, 1);
    } finally {
      this.disarm();
    }
  }

  /** Give up: close and remove the temporary file. Safe to call more than once. */
  abort(): void {
    this.discard();
    this.disarm();
  }

  private discard(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.fd >= 0) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // Already closed.
      }
      this.fd = -1;
    }
    if (this.tempPath) fs.rmSync(this.tempPath, { force: true });
  }
}

/** Where a chain of symbolic links ending at a missing file points (undefined if `path` is not a link). */
function danglingLinkTarget(path: string): string | undefined {
  let p = path;
  // 40 hops, as Linux's MAXSYMLINKS.
  for (let hops = 0; hops < 40; hops++) {
    let link: string;
    try {
      if (!fs.lstatSync(p).isSymbolicLink()) return hops === 0 ? undefined : p;
      link = fs.readlinkSync(p);
    } catch {
      return hops === 0 ? undefined : p;
    }
    p = nodePath.resolve(nodePath.dirname(p), link);
  }
  return undefined;
}

function openExclusive(path: string, mode: number): number {
  try {
    return fs.openSync(path, "wx", mode);
  } catch (e) {
    // A leftover of a killed run that had the same process id: ours by name.
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    fs.rmSync(path, { force: true });
    return fs.openSync(path, "wx", mode);
  }
}

function syncDirectory(dir: string): void {
  let fd = -1;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Not every file system lets a directory be synced; the rename itself is already atomic.
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

// ---- input ----------------------------------------------------------------------------------------------------

/** Where `write` takes its bytes from: a regular file (size known) or a stream (standard input, a FIFO). */
export interface InputSource {
  /** As messages name it: the path, or "standard input". */
  readonly name: string;
  /** Bytes, when known up front (a regular file). */
  readonly size: number | undefined;
  /** Chunks of `chunkBytes` bytes, the last one possibly shorter. A yielded array is reused after the next step. */
  chunks(chunkBytes: number): AsyncGenerator<Uint8Array>;
  close(): void;
}

/** Open `-i` input: `-` is standard input; a missing file or a directory is one line naming it (exit 1). */
export function openInput(spec: string, stdin: Readable = process.stdin): InputSource {
  if (spec === "-") {
    return { name: "standard input", size: undefined, chunks: (n) => streamChunks(stdin, n), close() {} };
  }
  let fd: number;
  let st: fs.Stats;
  try {
    fd = fs.openSync(spec, "r");
    st = fs.fstatSync(fd);
  } catch (e) {
    throw new UsageError(`cannot read ${spec}: ${fsReason(e)}`, 1);
  }
  if (st.isDirectory()) {
    fs.closeSync(fd);
    throw new UsageError(`cannot read ${spec}: it is a directory, not a file of bytes to write`, 1);
  }
  let closed = false;
  const close = (): void => {
    if (!closed) fs.closeSync(fd);
    closed = true;
  };
  if (!st.isFile()) {
    // A FIFO or a character device: read as a stream, like standard input.
    // The stream owns the descriptor from here on: destroying it closes it (once).
    const stream = fs.createReadStream("", { fd, autoClose: true });
    return {
      name: spec,
      size: undefined,
      chunks: (n) => streamChunks(stream, n, spec),
      close: () => {
        if (!closed) stream.destroy();
        closed = true;
      },
    };
  }
  return { name: spec, size: st.size, chunks: (n) => fileChunks(fd, n, spec), close };
}

async function* fileChunks(fd: number, chunkBytes: number, name: string): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(chunkBytes);
  let pos = 0;
  for (;;) {
    let fill = 0;
    while (fill < chunkBytes) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, fill, chunkBytes - fill, pos);
      } catch (e) {
        throw new UsageError(`cannot read ${name}: ${fsReason(e)}`, 1);
      }
      if (n === 0) break;
      fill += n;
      pos += n;
    }
    if (fill > 0) yield buf.subarray(0, fill);
    if (fill < chunkBytes) return;
  }
}

async function* streamChunks(
  stream: Readable,
  chunkBytes: number,
  name = "standard input",
): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(chunkBytes);
  let fill = 0;
  try {
    for await (const piece of stream as AsyncIterable<Buffer | string>) {
      const bytes = typeof piece === "string" ? Buffer.from(piece) : piece;
      let off = 0;
      while (off < bytes.length) {
        const n = Math.min(chunkBytes - fill, bytes.length - off);
        buf.set(bytes.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === chunkBytes) {
          yield buf;
          fill = 0;
        }
      }
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`cannot read ${name}: ${fsReason(e)}`, 1);
  }
  if (fill > 0) yield buf.subarray(0, fill);
}

// ---- progress -------------------------------------------------------------------------------------------------

export interface ProgressOptions {
  /** Whether a bar may appear at all (a terminal, not --json, ...). */
  enabled: boolean;
  /** What is moving: "read" or "write". */
  label: string;
  /** Bytes in all, when known. */
  total: number | undefined;
  /** Where the bar goes (standard error). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** The bar appears once the transfer has run this long (1 s). */
  delayMs?: number;
  /** The clock (tests replace it). */
  now?: () => number;
}

/**
 * A cli-progress bar for one transfer: silent for the first second, then bytes done, rate and time left;
 * cleared when the transfer ends, so the result and any error line are all that remain.
 */
export class TransferProgress {
  private bar: SingleBar | null = null;
  private readonly started: number;
  private readonly now: () => number;
  private readonly delayMs: number;
  private readonly stream: NodeJS.WritableStream & { isTTY?: boolean };
  private disarm: (() => void) | null = null;
  private stopped = false;

  constructor(private readonly o: ProgressOptions) {
    this.now = o.now ?? Date.now;
    this.started = this.now();
    this.delayMs = o.delayMs ?? 1000;
    this.stream = o.stream ?? process.stderr;
  }

  /** `done` bytes have moved. */
  update(done: number): void {
    if (!this.o.enabled || this.stopped || this.stream.isTTY !== true) return;
    const elapsed = this.now() - this.started;
    const payload = {
      done: humanBytes(done),
      size: this.o.total === undefined ? "" : humanBytes(this.o.total),
      rate: `${humanBytes(elapsed > 0 ? (done / elapsed) * 1000 : 0)}/s`,
    };
    if (!this.bar) {
      if (elapsed <= this.delayMs) return;
      const known = this.o.total !== undefined && this.o.total > 0;
      this.bar = new SingleBar(
        {
          stream: this.stream as NodeJS.WritableStream,
          format: known
            ? `${this.o.label} [{bar}] {percentage}% | {done} of {size} | {rate} | {eta_formatted} left`
            : `${this.o.label} {done} | {rate}`,
          clearOnComplete: true,
          etaBuffer: 20,
        },
        Presets.shades_classic,
      );
      this.bar.start(known ? this.o.total! : 1, known ? done : 0, payload);
      // An interrupting signal must not leave the bar's timer or a half-drawn line behind.
      this.disarm = onInterrupt(() => this.stop());
      return;
    }
    this.bar.update(this.o.total !== undefined && this.o.total > 0 ? done : 0, payload);
  }

  /** Whether the bar has appeared. */
  get shown(): boolean {
    return this.bar !== null;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.bar?.stop();
    this.disarm?.();
  }
}

/** Whether a progress bar suits this transfer: a terminal on stderr, no --json, no data bound for a terminal. */
export function progressWanted(o: { json?: boolean; progress?: boolean; dataToStdout: boolean }): boolean {
  if (o.json || o.progress === false) return false;
  if (process.stderr.isTTY !== true) return false;
  // Data on a terminal would be torn up by a bar on the same terminal.
  return !(o.dataToStdout && process.stdout.isTTY === true);
}

function humanBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

// ---- the transfers ----------------------------------------------------------------------------------------------

/**
 * Read sectors `lba..lba+count-1` a chunk at a time, handing each chunk (a fresh array) to `sink` in order and
 * waiting for it before reading the next.
 */
export async function readChunks(
  disk: OpenedDisk,
  lba: number,
  count: number,
  sink: (data: Uint8Array, lba: number) => void | Promise<void>,
  progress?: TransferProgress,
  chunkSectors = CHUNK_SECTORS,
): Promise<void> {
  let done = 0;
  while (done < count) {
    const n = Math.min(chunkSectors, count - done);
    let data: Uint8Array;
    try {
      data = await disk.path.read(lba + done, n);
    } catch (e) {
      throw pathFailure(e, "read");
    }
    const pending = sink(data, lba + done);
    if (pending) await pending;
    done += n;
    progress?.update(done * SECTOR);
    await yieldToLoop();
  }
}

export interface WriteResult {
  /** Sectors written. */
  sectors: number;
  /** Bytes taken from the input (before padding). */
  inputBytes: number;
}

/**
 * Write `input` to sectors from `lba` a chunk at a time. Each chunk is checked against the end of what the path
 * reaches before it is written, so an input that turns out too long (standard input, whose length is known
 * only at its end) stops with one line, having written only the whole chunks before it. A last sector that is
 * not whole is zero-filled with `pad`, else refused.
 */
export async function writeChunks(
  disk: OpenedDisk,
  lba: number,
  input: InputSource,
  o: { pad: boolean; lba28Forced: boolean; progress?: TransferProgress; chunkBytes?: number },
): Promise<WriteResult> {
  const chunkBytes = o.chunkBytes ?? CHUNK_BYTES;
  let sectors = 0;
  let inputBytes = 0;
  const written = (): string =>
    sectors === 0
      ? "nothing was written"
      : `${span(lba, sectors)} ${sectors === 1 ? "was" : "were"} written before it`;
  for await (let data of input.chunks(chunkBytes)) {
    inputBytes += data.length;
    if (data.length % SECTOR !== 0) {
      if (!o.pad) {
        throw new UsageError(
          `${input.name} is ${inputBytes} bytes, not a multiple of 512 (add --pad to zero-fill the last sector)` +
            (sectors > 0 ? `; ${written()}` : ""),
        );
      }
      const padded = new Uint8Array(Math.ceil(data.length / SECTOR) * SECTOR);
      padded.set(data);
      data = padded;
    }
    const n = data.length / SECTOR;
    const { limit, lba28 } = sectorLimit(disk, o.lba28Forced);
    if (lba + sectors + n > limit) {
      const end = lba28
        ? `sector ${limit}, the end of what LBA28 commands reach${o.lba28Forced ? " (leave out --lba28 to use LBA48)" : ""}`
        : `the end of the disk (${disk.path.sectors} sectors)`;
      throw new UsageError(`${input.name} runs past ${end}; ${written()}`);
    }
    try {
      await disk.path.write(lba + sectors, data);
    } catch (e) {
      throw pathFailure(e, "write");
    }
    sectors += n;
    o.progress?.update(inputBytes);
    await yieldToLoop();
  }
  return { sectors, inputBytes };
}
