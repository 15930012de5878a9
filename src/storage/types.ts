/**
 * Block storage behind the device models. A `BlockBackend` is the medium (a raw image file, memory, nothing,
 * or a fault-injecting wrapper); an `IoEngine` is how requests reach it: the sync engine completes each
 * request inside `submit`, the async engine later, from the event loop. Device models are written once against
 * `IoEngine` (submit with a tag, reap completions), the shape Firecracker and cloud-hypervisor use for their
 * sync and async block engines.
 */

export const SECTOR_SIZE = 512;

export type IoErrorCode = "EIO" | "ENOSPC" | "EROFS" | "ERANGE" | "EINVAL" | "ENOTSUP";

/** A failed storage request. `sector` is the first sector that failed, when known (the IDE task file points there). */
export class IoError extends Error {
  constructor(
    readonly code: IoErrorCode,
    message: string,
    readonly sector?: number,
  ) {
    super(message);
    this.name = "IoError";
  }
}

/**
 * The medium: a handful of positional, vectored, synchronous methods, plus one optional capability for
 * asynchronous submission. Offsets are in sectors of `sectorSize` bytes; `bufs` are consecutive sectors from
 * `sector` on, each a positive whole number of sectors (often views of guest memory, used in place).
 *
 * Precondition of `read`, `write`, `discard` and `startIo`: the request is valid for this medium, as
 * `validateRequest` (engine.ts) checks it: whole-sector buffers, a range inside the medium, no write or discard
 * on a read-only medium. The engines check each request once, before it reaches the medium, and a medium does
 * not check again; a caller that uses a medium directly must pass valid requests.
 *
 * A failure is thrown (or, for `startIo`, reported) as an `IoError` whose `sector` is the first sector not
 * transferred, where that is known. The engines own the sync/async split: `SyncEngine` calls the sync methods
 * inside `submit`; `AsyncEngine` uses `startIo` when the medium has it, else runs the sync methods later, from
 * the event loop.
 */
export interface BlockBackend {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  /** A short description for logs ("raw:disk.img", "memory", "null"). */
  readonly describe: string;
  /**
   * What the medium is, independent of how it was named (a file's device and inode): devices derive stable
   * names from it, such as a drive's default serial number. Media without one are identified by `describe`.
   */
  readonly identity?: string;
  /**
   * True when a flush stops at the OS, never made durable (QEMU's BDRV_O_NO_FLUSH, `cache=unsafe`): a medium over
   * such a one (blkdebug, fault injection) says so too, whatever lies between.
   */
  readonly noFlush?: boolean;

  /** Fill `bufs` from the sectors at `sector` on. */
  read(sector: number, bufs: readonly Uint8Array[]): void;
  /** Store `bufs` at the sectors from `sector` on. */
  write(sector: number, bufs: readonly Uint8Array[]): void;
  /** Make every write completed so far durable. */
  flush(): void;
  /** Drop the data of `count` sectors from `sector` on (reads of them may then return zeroes). */
  discard(sector: number, count: number): void;

  /**
   * Optional capability, for media whose I/O can run without blocking the event loop (a raw image's libuv
   * requests): start `req` and call `done` exactly once, later, from the event loop (never inside `startIo`),
   * with undefined or the error the sync method would have thrown. `req` and its buffers stay as they are until
   * `done` is called. The engine passes a long-lived `done` and a pooled `req`, so a request costs no promise and
   * no closure, which matters at queue depth 32. Absent, the async engine runs the sync methods instead.
   *
   * A wrapper decides deliberately: it defines `startIo` (forwarding to the medium it wraps, or doing its own
   * asynchronous work) or leaves it out, and then its sync methods are what every engine calls. An object made
   * with `Object.create(medium, ...)` inherits the medium's `startIo` unless it overrides it.
   */
  startIo?(req: MediumRequest, done: IoCallback): void;

  /**
   * Optional: the device's volatile write cache was turned on or off (ATA SET FEATURES 02h/82h, its power-on
   * value). While it is off the device flushes after every write; a medium that can make a single write durable
   * (NBD's FUA flag) does so and has nothing left for that flush to do, as QEMU's block layer sets BDRV_REQ_FUA
   * on writes to a device whose cache is off.
   */
  setWriteCache?(enabled: boolean): void;

  close(): void;
}

export type IoOp = "read" | "write" | "flush" | "discard";

/** How an asynchronous request ended: undefined on success. */
export type IoCallback = (error: IoError | undefined) => void;

/** A validated request as the async engine hands it to `BlockBackend.startIo`. */
export interface MediumRequest {
  readonly op: IoOp;
  readonly sector: number;
  /** Sectors to discard (discard only). */
  readonly count: number;
  /** Data buffers (read and write; empty for flush and discard). */
  readonly bufs: readonly Uint8Array[];
}

export interface IoRequest {
  op: IoOp;
  /** Caller's tag, returned with the completion. */
  tag: number;
  sector: number;
  /** Sector count for discard; for read/write it is implied by the buffers. */
  count?: number;
  /** Data buffers, in order, each a whole number of sectors (scatter-gather, often views of guest memory). */
  bufs?: Uint8Array[];
}

export interface IoCompletion {
  tag: number;
  /** Undefined on success. */
  error?: IoError;
}

export interface IoEngine {
  readonly kind: "sync" | "async";
  readonly backend: BlockBackend;
  /** Requests submitted and not yet reaped. */
  readonly inflight: number;
  /**
   * Start a request. Never throws for an I/O failure: that arrives as the completion's error. The sync engine
   * has the completion ready when `submit` returns; the async engine when `onReady` fires.
   */
  submit(req: IoRequest): void;
  /** Move finished requests into `out`; returns how many were added. */
  reap(out: IoCompletion[]): number;
  /** Called (from the event loop, never from inside `submit`) when completions become available to reap. */
  onReady: (() => void) | null;
  /** Resolves when every submitted request has completed (not necessarily reaped). */
  drain(): Promise<void>;
}
