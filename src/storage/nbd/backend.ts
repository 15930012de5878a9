/**
 * A disk served over NBD, as a medium: `NbdBackend.open("nbd+unix:///disk?socket=/run/nbd.sock")` connects and
 * negotiates synchronously (like opening a file), and the medium then reads and writes the export in 512-byte
 * sectors, synchronously (each call waits for its replies) or through `startIo` with many requests in flight.
 *
 * How medium operations become NBD commands:
 * - read / write: NBD_CMD_READ / NBD_CMD_WRITE, split at the server's maximum payload (NBD_INFO_BLOCK_SIZE; 32
 *   MiB when it gives none), the pieces in flight together. With `fua` (a drive whose write cache is off) every
 *   write carries NBD_CMD_FLAG_FUA, so a following flush has nothing left to do; a server without FUA gets a
 *   flush after each write instead.
 * - A server whose minimum block size is above 512 bytes gets only aligned requests: the partial blocks at the
 *   ends of a request are read whole into a bounce block, and a write to one is a read-modify-write, which runs
 *   alone (earlier requests finish first, later ones wait) so two writes into one block cannot lose each other.
 * - flush: NBD_CMD_FLUSH, when the export offers it and something was written since the last one.
 * - discard: by default NBD_CMD_WRITE_ZEROES without NBD_CMD_FLAG_NO_HOLE, which lets the server free the blocks
 *   and still reads back as zeroes, as the other media's discard does (plain writes of zeroes where the export
 *   has no WRITE_ZEROES). `discard: "trim"` sends NBD_CMD_TRIM instead, QEMU's mapping: advisory, the data is
 *   then whatever the server keeps.
 * - A read-only export (NBD_FLAG_READ_ONLY) or `readOnly: true` makes a read-only medium: the engines refuse
 *   writes and discards with EROFS before they reach the server.
 *
 * Connections: the synchronous methods (and the handshake at open) go through a connection whose socket lives
 * in a worker thread, since they must block (connection.ts). The async engine's requests (`startIo`) go, once
 * it is negotiated, through a second connection whose socket is on the event loop (socket-connection.ts), with
 * no thread crossed, when the export allows several connections (NBD_FLAG_CAN_MULTI_CONN: proto.md makes
 * flush and FUA act across connections then); otherwise, or until the second connection is ready, through the
 * worker's. Across the two, writes are made visible before the other one is used: a synchronous call after
 * unflushed writes through the event loop's connection, or the first request that moves to it after unflushed
 * writes through the worker's (once the worker's requests in flight have finished), is preceded by an
 * NBD_CMD_FLUSH through the worker's (proto.md, NBD_FLAG_CAN_MULTI_CONN: a flush then acts for the writes
 * completed on every connection).
 *
 * Failures: an error reply fails that request with the matching `IoError` (EIO, ENOSPC, EINVAL...); a lost
 * connection, a protocol error or no answer within `timeoutMs` fails every outstanding and later request with
 * EIO (the guest sees a medium error) and nothing waits beyond the timeout. TLS is not supported: a server that
 * requires it is refused at open with a message saying so.
 */
import { type BlockBackend, type IoCallback, IoError, type MediumRequest, SECTOR_SIZE } from "../types.ts";
import { NbdConnection } from "./connection.ts";
import { awaitConnect, handshake, type HandshakeOptions, type NbdExportInfo } from "./handshake.ts";
import { RING_BYTES, SocketLink } from "./link.ts";
import {
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from "./protocol.ts";
import type { CommandCallback, CommandSink } from "./replies.ts";
import { SocketConnection } from "./socket-connection.ts";
import { formatNbdAddress, type NbdAddress, NbdError, type NbdTarget, parseNbdUrl } from "./url.ts";

export interface NbdOptions {
  /** Use the export read-only even when the server allows writes. */
  readOnly?: boolean;
  /** Write through: every write is durable when it completes (NBD_CMD_FLAG_FUA). For drives with the write cache off. */
  fua?: boolean;
  /** What a discard sends: "zeroes" (default, NBD_CMD_WRITE_ZEROES) or "trim" (NBD_CMD_TRIM). */
  discard?: "zeroes" | "trim";
  /** How long the server may stay silent while requests wait, and the connect and handshake limit (default 30 s). */
  timeoutMs?: number;
  /** Negotiate structured replies (default true; false exercises simple replies). */
  structuredReplies?: boolean;
  /** Size of each of the two shared byte rings (default 4 MiB; a power of two). */
  ringBytes?: number;
  /**
   * Carry the async engine's requests on a second connection whose socket is on the event loop, when the export
   * allows several connections (default true; false keeps every request on the worker's connection).
   */
  eventLoopConnection?: boolean;
}

/** Which connection carries the async engine's requests (`NbdBackend.asyncPath`). */
export type NbdAsyncPath = "worker" | "connecting" | "event-loop";

const DEFAULT_TIMEOUT_MS = 30_000;
/** Zero-length writes and trims are split below 2^32 (the length field); 1 GiB keeps them well-aligned. */
const MAX_ZERO_REQUEST = 1 << 30;
const RESOLVED = Promise.resolve();

/**
 * One medium operation while it runs: the connection its commands go to, its first error (the lowest sector),
 * and how many pieces remain.
 */
class Op {
  error: IoError | undefined = undefined;
  left = 1; // the issuing itself holds one count until every piece is issued
  finished = false;
  constructor(
    readonly sink: CommandSink,
    /** Replaced by the read-modify-write gate, which must see the end of the operations it admitted. */
    public onEnd: (error: IoError | undefined) => void,
  ) {}

  readonly piece: CommandCallback = (err) => {
    if (err && (!this.error || (err.sector ?? 0) < (this.error.sector ?? 0))) this.error = err;
    this.release();
  };

  hold(): void {
    this.left++;
  }

  release(): void {
    if (--this.left === 0) {
      this.finished = true;
      this.onEnd(this.error);
    }
  }
}

export class NbdBackend implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  readonly describe: string;
  readonly identity: string;
  /** The URL this medium was opened with (normalised). */
  readonly url: string;
  private readonly minBlock: number;
  private readonly maxPayload: number;
  /** FUA on every write: asked for at open (`fua`), or while the device's write cache is off. */
  private fua: boolean;
  private readonly fuaAlways: boolean;
  private readonly discardMode: "zeroes" | "trim";
  /** Something was written without FUA since the last flush. */
  private dirty = false;
  private closed = false;
  /** Read-modify-write exclusion (only when the minimum block exceeds a sector). */
  private active = 0;
  private exclusive = false;
  private readonly waiting: { exclusive: boolean; run: () => void }[] = [];
  private zeroes: Uint8Array | null = null;
  /** The event loop's connection: null until the first asynchronous request, then for as long as it lives. */
  private socket: SocketConnection | null = null;
  private readonly eventLoopAllowed: boolean;
  /**
   * Writes without FUA went through this connection since the last flush: before the other connection is used,
   * a flush makes them visible there.
   */
  private workerUnflushed = false;
  private socketUnflushed = false;

  private constructor(
    private readonly conn: NbdConnection,
    readonly export_: NbdExportInfo,
    url: string,
    options: NbdOptions,
    /** How to open the event loop's connection: the server and the handshake's options. */
    private readonly second: { target: NbdTarget; handshake: HandshakeOptions },
  ) {
    this.url = url;
    this.minBlock = Math.max(SECTOR_SIZE, export_.minBlock);
    // A payload limit that is not a whole number of minimum blocks is used rounded down to one.
    this.maxPayload = Math.floor(export_.maxPayload / this.minBlock) * this.minBlock;
    // Only whole minimum blocks are addressable; a tail beyond the last one is not part of the disk.
    this.sectorCount = (Math.floor(export_.size / this.minBlock) * this.minBlock) / SECTOR_SIZE;
    this.readOnly = (options.readOnly ?? false) || (export_.flags & NBD_FLAG_READ_ONLY) !== 0;
    this.fuaAlways = options.fua ?? false;
    this.fua = this.fuaAlways;
    this.discardMode = options.discard ?? "zeroes";
    this.describe = `${url}${this.readOnly ? " (ro)" : ""}`;
    this.identity = `nbd:${url}`;
    this.eventLoopAllowed =
      (options.eventLoopConnection ?? true) && (export_.flags & NBD_FLAG_CAN_MULTI_CONN) !== 0;
  }

  /**
   * Connect to an NBD server and negotiate the export (synchronously). Throws `NbdError` (an `ImageError`,
   * code "EOPEN") with one line saying why: a bad URL, no server, TLS required, no such export, a protocol error.
   */
  static open(urlOrAddress: string | NbdAddress, options: NbdOptions = {}): NbdBackend {
    const address = typeof urlOrAddress === "string" ? parseNbdUrl(urlOrAddress) : urlOrAddress;
    const url = formatNbdAddress(address);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${timeoutMs}`);
    const link = new SocketLink(address.target, options.ringBytes ?? RING_BYTES);
    try {
      awaitConnect(link, url, timeoutMs);
      const hs: HandshakeOptions = {
        exportName: address.exportName,
        url,
        timeoutMs,
        structuredReplies: options.structuredReplies,
      };
      const info = handshake(link, hs);
      if (info.size < Math.max(SECTOR_SIZE, info.minBlock))
        throw new NbdError("export", `${url}: the export is ${info.size} bytes, less than one block`, url);
      if (info.maxPayload < Math.max(SECTOR_SIZE, info.minBlock))
        throw new NbdError(
          "export",
          `${url}: the server's maximum payload of ${info.maxPayload} bytes is less than one ${SECTOR_SIZE}-byte sector`,
          url,
        );
      return new NbdBackend(new NbdConnection(link, info, url, timeoutMs), info, url, options, {
        target: address.target,
        handshake: hs,
      });
    } catch (e) {
      link.close();
      throw e;
    }
  }

  /** Export facts for tools and tests: size, transmission flags, block size constraints, replies used. */
  get exportInfo(): NbdExportInfo {
    return this.export_;
  }

  /**
   * Which connection the async engine's requests take now: the worker's, the event loop's, or the worker's while
   * the event loop's is being negotiated.
   */
  get asyncPath(): NbdAsyncPath {
    const s = this.socket;
    return s === null || s.state === "dead" ? "worker" : s.state === "ready" ? "event-loop" : "connecting";
  }

  // ---- sync methods: start the operation, pump until it ends ----

  read(sector: number, bufs: readonly Uint8Array[]): void {
    this.sync((op) => this.readOp(op, sector * SECTOR_SIZE, bufs));
  }

  write(sector: number, bufs: readonly Uint8Array[]): void {
    this.sync((op) => this.writeOp(op, sector * SECTOR_SIZE, bufs));
  }

  /**
   * The device's write cache (BlockBackend.setWriteCache): while it is off every write carries NBD_CMD_FLAG_FUA,
   * so the flush the device then sends after each write has nothing left to do and is not sent.
   */
  setWriteCache(enabled: boolean): void {
    this.fua = this.fuaAlways || !enabled;
  }

  flush(): void {
    this.sync((op) => this.flushOp(op));
  }

  discard(sector: number, count: number): void {
    if (count === 0) return;
    this.sync((op) => this.discardOp(op, sector * SECTOR_SIZE, count * SECTOR_SIZE));
  }

  // ---- asynchronous submission ----

  startIo(req: MediumRequest, done: IoCallback): void {
    if (this.closed) return later(done, this.closedError(req.sector));
    if (req.op === "discard" && req.count === 0) return later(done, undefined);
    const pos = req.sector * SECTOR_SIZE;
    const socket = this.eventLoopSocket();
    if (socket !== null) {
      // The common case in one command, with the engine's own callback: no operation object, no closure.
      if (this.minBlock === SECTOR_SIZE && (req.op === "read" || req.op === "write")) {
        const len = byteLength(req.bufs);
        if (len <= this.maxPayload) {
          if (req.op === "read")
            return socket.submit({
              type: NBD_CMD_READ,
              flags: 0,
              offset: pos,
              length: len,
              data: null,
              dest: req.bufs,
              cb: done,
            });
          const fua = this.fuaFlag();
          if (!this.fua || fua !== 0) {
            if (fua === 0) this.wroteVia(socket);
            return socket.submit({
              type: NBD_CMD_WRITE,
              flags: fua,
              offset: pos,
              length: len,
              data: req.bufs,
              dest: null,
              cb: done,
            });
          }
        }
      }
      return this.run(new Op(socket, (err) => later(done, err)), req, pos);
    }
    const conn = this.conn;
    conn.startAsync();
    this.run(
      new Op(conn, (err) => {
        conn.endAsync();
        later(done, err);
      }),
      req,
      pos,
    );
  }

  private run(op: Op, req: MediumRequest, pos: number): void {
    switch (req.op) {
      case "read":
        return this.readOp(op, pos, req.bufs);
      case "write":
        return this.writeOp(op, pos, req.bufs);
      case "flush":
        return this.flushOp(op);
      case "discard":
        return this.discardOp(op, pos, req.count * SECTOR_SIZE);
    }
  }

  /**
   * The event loop's connection when it can take the next asynchronous request, else null (the worker's takes
   * it). The first call starts it, for an export that allows several connections.
   */
  private eventLoopSocket(): SocketConnection | null {
    const s = this.socket;
    if (s === null) {
      if (this.eventLoopAllowed && this.conn.dead === null)
        // Started now, used once negotiated; given up for good if it fails (the worker's connection stays).
        this.socket = SocketConnection.connect(this.second.target, this.second.handshake, this.export_);
      return null;
    }
    if (s.state !== "ready") return null;
    if (this.workerUnflushed) {
      // Writes through the worker's connection become visible through this one after a flush.
      if (!this.flushWorker()) return null;
    }
    return s;
  }

  /**
   * Make the writes completed so far visible through either connection: the worker's connection's requests
   * in flight finish first (a flush covers only writes completed before it), then NBD_CMD_FLUSH through it,
   * waited for. False when that failed.
   */
  private flushWorker(): boolean {
    const conn = this.conn;
    if (conn.outstanding > 0) conn.runSync(() => conn.outstanding === 0);
    if (conn.dead !== null || conn.outstanding > 0) return false;
    if ((this.export_.flags & NBD_FLAG_SEND_FLUSH) === 0) {
      // No volatile cache on the server: a write replied to is already seen by every connection.
      this.workerUnflushed = false;
      if (this.socket === null || this.socket.outstanding === 0) this.socketUnflushed = false;
      return true;
    }
    let result: IoError | undefined;
    const op = new Op(conn, (err) => (result = err));
    this.flushCommand(op, conn);
    op.release();
    conn.runSync(() => op.finished);
    if (!op.finished || result) return false;
    // Nothing in flight on either connection: every write so far is durable, a medium flush has nothing to do.
    if (this.socket === null || this.socket.outstanding === 0) this.dirty = false;
    return true;
  }

  /** The FUA flag a data command carries now: set when writing through and the export takes it. */
  private fuaFlag(): number {
    return this.fua && (this.export_.flags & NBD_FLAG_SEND_FUA) !== 0 ? NBD_CMD_FLAG_FUA : 0;
  }

  /** A command that changes data without FUA went to `sink`. */
  private wroteVia(sink: CommandSink): void {
    this.dirty = true;
    if (sink === this.conn) this.workerUnflushed = true;
    else this.socketUnflushed = true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket?.close();
    this.conn.close();
  }

  // ---- operations ----

  private sync(start: (op: Op) => void): void {
    if (this.closed) throw this.closedError(0);
    // Writes through the event loop's connection become visible through the worker's after a flush.
    if (this.socketUnflushed && !this.flushWorker()) {
      // The flush failed: the request still runs and meets the same trouble, which it reports.
    }
    let result: IoError | undefined;
    const op = new Op(this.conn, (err) => (result = err));
    start(op);
    this.conn.runSync(() => op.finished);
    if (!op.finished) throw new IoError("EIO", `${this.url}: the request did not complete`);
    if (result) throw result;
  }

  private closedError(sector: number): IoError {
    return new IoError("EIO", `${this.describe} is closed`, sector);
  }

  /** Run `body` under the read-modify-write exclusion (a no-op when every request is aligned anyway). */
  private gate(op: Op, exclusive: boolean, body: () => void): void {
    if (this.minBlock === SECTOR_SIZE) return body();
    const run = (): void => {
      this.active++;
      if (exclusive) this.exclusive = true;
      const end = op.onEnd;
      op.onEnd = (err) => {
        this.active--;
        if (exclusive) this.exclusive = false;
        this.admit();
        end(err);
      };
      body();
    };
    if (this.waiting.length > 0 || this.exclusive || (exclusive && this.active > 0))
      this.waiting.push({ exclusive, run });
    else run();
  }

  private admit(): void {
    while (this.waiting.length > 0) {
      const w = this.waiting[0]!;
      if (this.exclusive || (w.exclusive && this.active > 0)) return;
      this.waiting.shift();
      w.run();
    }
  }

  private readOp(op: Op, pos: number, bufs: readonly Uint8Array[]): void {
    const end = pos + byteLength(bufs);
    const mb = this.minBlock;
    this.gate(op, false, () => {
      // Partial blocks at the ends: the whole block into a bounce buffer, the wanted part copied out.
      for (const block of partialBlocks(pos, end, mb))
        this.readBlock(op, block, (bounce) => {
          const from = Math.max(pos, block);
          copyInto(bufs, from - pos, bounce.subarray(from - block, Math.min(end, block + mb) - block));
        });
      this.pieces(pos, end, bufs, (at, n, views) => {
        op.hold();
        op.sink.submit({
          type: NBD_CMD_READ,
          flags: 0,
          offset: at,
          length: n,
          data: null,
          dest: views,
          cb: op.piece,
        });
      });
      op.release();
    });
  }

  private writeOp(op: Op, pos: number, bufs: readonly Uint8Array[]): void {
    const end = pos + byteLength(bufs);
    const mb = this.minBlock;
    const partial = partialBlocks(pos, end, mb);
    this.gate(op, partial.length > 0, () => {
      // Read-modify-write of a block the request covers in part.
      for (const block of partial)
        this.readBlock(op, block, (bounce) => {
          const from = Math.max(pos, block);
          copyFrom(bufs, from - pos, bounce.subarray(from - block, Math.min(end, block + mb) - block));
          this.dataCommand(op, NBD_CMD_WRITE, block, mb, [bounce]);
        });
      this.pieces(pos, end, bufs, (at, n, views) => this.dataCommand(op, NBD_CMD_WRITE, at, n, views));
      op.release();
    });
  }

  /**
   * The whole minimum blocks of [pos, end) in commands of at most the server's maximum payload: `each` gets a
   * piece's offset, length and its views of `bufs` (the request's buffers, from byte `pos` on).
   */
  private pieces(
    pos: number,
    end: number,
    bufs: readonly Uint8Array[],
    each: (at: number, n: number, views: Uint8Array[]) => void,
  ): void {
    const innerStart = alignUp(pos, this.minBlock);
    const innerEnd = Math.max(innerStart, alignDown(end, this.minBlock));
    for (let at = innerStart; at < innerEnd;) {
      const n = Math.min(this.maxPayload, innerEnd - at);
      each(at, n, slice(bufs, at - pos, n));
      at += n;
    }
  }

  /** Read the minimum block at `block` whole into a bounce buffer; `then` runs with it unless the read failed. */
  private readBlock(op: Op, block: number, then: (bounce: Uint8Array) => void): void {
    op.hold();
    const bounce = new Uint8Array(this.minBlock);
    op.sink.submit({
      type: NBD_CMD_READ,
      flags: 0,
      offset: block,
      length: bounce.length,
      data: null,
      dest: [bounce],
      cb: (err) => {
        if (!err) then(bounce);
        op.piece(err);
      },
    });
  }

  /** A command that changes data: FUA when writing through and the server has it, else a flush after it. */
  private dataCommand(
    op: Op,
    type: number,
    offset: number,
    length: number,
    data: readonly Uint8Array[] | null,
  ): void {
    const fua = this.fuaFlag();
    const flushAfter = this.fua && fua === 0 && (this.export_.flags & NBD_FLAG_SEND_FLUSH) !== 0;
    if (fua === 0) this.wroteVia(op.sink);
    op.hold();
    op.sink.submit({
      type,
      flags: fua,
      offset,
      length,
      data,
      dest: null,
      cb: (err) => {
        if (!err && flushAfter) {
          this.dirty = false;
          this.flushCommand(op, op.sink);
        }
        op.piece(err);
      },
    });
  }

  /** One NBD_CMD_FLUSH through `sink`, a piece of `op`. */
  private flushCommand(op: Op, sink: CommandSink): void {
    // A flush acts for the writes completed before it on every connection (NBD_FLAG_CAN_MULTI_CONN, the only
    // case with two); writes still in flight on a connection are not covered, so its mark stays.
    const marks = [this.workerUnflushed, this.socketUnflushed] as const;
    if (this.conn.outstanding === 0) this.workerUnflushed = false;
    if (this.socket === null || this.socket.outstanding === 0) this.socketUnflushed = false;
    op.hold();
    sink.submit({
      type: NBD_CMD_FLUSH,
      flags: 0,
      offset: 0,
      length: 0,
      data: null,
      dest: null,
      cb: (err) => {
        if (err) {
          this.dirty = true;
          this.workerUnflushed ||= marks[0];
          this.socketUnflushed ||= marks[1];
        }
        op.piece(err);
      },
    });
  }

  private flushOp(op: Op): void {
    // NBD_FLAG_SEND_FLUSH absent: the server has no volatile cache to flush (a client must not send one).
    if (!this.dirty || (this.export_.flags & NBD_FLAG_SEND_FLUSH) === 0) return op.release();
    this.dirty = false;
    this.gate(op, false, () => {
      this.flushCommand(op, op.sink);
      op.release();
    });
  }

  private discardOp(op: Op, pos: number, len: number): void {
    const flags = this.export_.flags;
    const mb = this.minBlock;
    const end = pos + len;
    const innerStart = alignUp(pos, mb);
    const innerEnd = Math.max(innerStart, alignDown(end, mb));
    if (this.discardMode === "trim") {
      // Advisory: only whole blocks, only when the export takes TRIM.
      if ((flags & NBD_FLAG_SEND_TRIM) === 0 || innerEnd <= innerStart) return op.release();
      this.gate(op, false, () => {
        for (let at = innerStart; at < innerEnd; at += MAX_ZERO_REQUEST)
          this.dataCommand(op, NBD_CMD_TRIM, at, Math.min(MAX_ZERO_REQUEST, innerEnd - at), null);
        op.release();
      });
      return;
    }
    if ((flags & NBD_FLAG_SEND_WRITE_ZEROES) === 0) return this.writeZeroes(op, pos, len);
    // Partial blocks at the ends are written as zeroes (read-modify-write); the whole blocks as WRITE_ZEROES.
    const partial = partialBlocks(pos, end, mb);
    if (partial.length > 0) {
      op.hold();
      const edges = new Op(op.sink, (err) => op.piece(err));
      for (const block of partial) {
        const from = Math.max(pos, block);
        const to = Math.min(end, block + mb);
        edges.hold();
        this.writeOp(new Op(op.sink, (err) => edges.piece(err)), from, [
          this.zeroChunk().subarray(0, to - from),
        ]);
      }
      edges.release();
    }
    if (innerEnd > innerStart) {
      this.gate(op, false, () => {
        for (let at = innerStart; at < innerEnd; at += MAX_ZERO_REQUEST)
          this.dataCommand(op, NBD_CMD_WRITE_ZEROES, at, Math.min(MAX_ZERO_REQUEST, innerEnd - at), null);
        op.release();
      });
    } else op.release();
  }

  /** A discard on an export without WRITE_ZEROES: zeroes written, a bounded chunk at a time. */
  private writeZeroes(op: Op, pos: number, len: number): void {
    const zero = this.zeroChunk();
    const step = Math.min(zero.length, this.maxPayload);
    for (let at = pos; at < pos + len; at += step) {
      op.hold();
      this.writeOp(new Op(op.sink, (err) => op.piece(err)), at, [
        zero.subarray(0, Math.min(step, pos + len - at)),
      ]);
    }
    op.release();
  }

  private zeroChunk(): Uint8Array {
    return (this.zeroes ??= new Uint8Array(Math.max(this.minBlock, 1024 * 1024)));
  }
}

/** Complete an async request later, from a microtask (never inside `startIo` or the parser). */
function later(done: IoCallback, err: IoError | undefined): void {
  void RESOLVED.then(() => done(err));
}

function byteLength(bufs: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function alignDown(n: number, a: number): number {
  return Math.floor(n / a) * a;
}

/** The starts of the blocks of size `mb` that [pos, end) covers only in part (0, 1 or 2 of them). */
function partialBlocks(pos: number, end: number, mb: number): number[] {
  const out: number[] = [];
  if (pos % mb !== 0) out.push(alignDown(pos, mb));
  if (end % mb !== 0) {
    const last = alignDown(end, mb);
    if (out[0] !== last) out.push(last);
  }
  return out;
}

/** Views of `n` bytes of consecutive `bufs` from byte `pos` on. */
function slice(bufs: readonly Uint8Array[], pos: number, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (n === 0) break;
    if (pos >= b.length) {
      pos -= b.length;
      continue;
    }
    const k = Math.min(n, b.length - pos);
    out.push(pos === 0 && k === b.length ? b : b.subarray(pos, pos + k));
    n -= k;
    pos = 0;
  }
  return out;
}

/** Copy `src` into consecutive `bufs` at byte `pos`. */
function copyInto(bufs: readonly Uint8Array[], pos: number, src: Uint8Array): void {
  let off = 0;
  for (const view of slice(bufs, pos, src.length)) {
    view.set(src.subarray(off, off + view.length));
    off += view.length;
  }
}

/** Copy bytes of consecutive `bufs` from byte `pos` into `dst`. */
function copyFrom(bufs: readonly Uint8Array[], pos: number, dst: Uint8Array): void {
  let off = 0;
  for (const view of slice(bufs, pos, dst.length)) {
    dst.set(view, off);
    off += view.length;
  }
}
