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

/** The medium. Offsets are in sectors of `sectorSize` bytes; buffers are whole sectors. */
export interface BlockBackend {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  /** A short description for logs ("raw:disk.img", "memory", "null"). */
  readonly describe: string;

  readSync(sector: number, buf: Uint8Array): void;
  writeSync(sector: number, buf: Uint8Array): void;
  flushSync(): void;
  /** Drop the data of `count` sectors from `sector` on (reads of them may then return zeroes). */
  discardSync(sector: number, count: number): void;

  read(sector: number, buf: Uint8Array): Promise<void>;
  write(sector: number, buf: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  discard(sector: number, count: number): Promise<void>;

  /**
   * Optional vectored I/O: `bufs` are consecutive sectors from `sector` on, moved in as few host calls as
   * possible (preadv/pwritev). Engines use these for scatter-gather requests when present. On failure the
   * error's `sector` is the first sector not transferred.
   */
  readvSync?(sector: number, bufs: Uint8Array[]): void;
  writevSync?(sector: number, bufs: Uint8Array[]): void;
  readv?(sector: number, bufs: Uint8Array[]): Promise<void>;
  writev?(sector: number, bufs: Uint8Array[]): Promise<void>;

  close(): void;
}

export type IoOp = "read" | "write" | "flush" | "discard";

/** How a callback-style transfer ended: undefined on success. */
export type IoCallback = (error: IoError | undefined) => void;

/**
 * An optional, cheaper form of a backend's async `read`/`write`/`readv`/`writev`, for engines that keep many
 * requests in flight: start the transfer of `bufs` (consecutive sectors from `sector` on) and call `done`
 * exactly once, later, from the event loop, with the error the promise methods would have rejected with. The caller passes a
 * long-lived `done`, so a request costs no promise and no closure: at a queue depth of 32 small O_DIRECT reads
 * that bookkeeping is a sizeable share of the main thread's work per request. A backend offering it must make
 * it do exactly what its promise methods do.
 */
export interface CallbackIo {
  startIo(write: boolean, sector: number, bufs: readonly Uint8Array[], done: IoCallback): void;
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
