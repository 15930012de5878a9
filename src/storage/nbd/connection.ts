/**
 * The transmission phase of one NBD connection (proto.md "Transmission"): requests written into the link's
 * outgoing ring in submission order, replies parsed from its incoming ring as they stream in, simple or
 * structured, matched to their requests by handle, any number in flight. A read's data goes straight from the
 * ring into the request's buffers (usually guest memory), whatever order or split the server's chunks come in.
 *
 * Commands complete through their callback, called while the connection parses (inside `pump`); what a caller
 * does there must not wait. Two ways to drive it: `runSync` pumps and sleeps with `Atomics.wait` until a
 * condition holds (the medium's synchronous methods), and `startAsync`/`endAsync` bracket requests driven by the
 * worker's wake-ups from the event loop (the medium's `startIo`). Either way a connection that makes no progress
 * for `timeoutMs` while requests are outstanding is declared dead: every request fails with EIO and the socket
 * is closed, so nothing waits forever. A server that closes the connection or breaks the protocol ends the same.
 */
import { IoError } from "../types.ts";
import type { NbdExportInfo } from "./handshake.ts";
import type { SocketLink } from "./link.ts";
import {
  CHUNK_HEADER_SIZE,
  encodeRequest,
  ioCodeOf,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_ESHUTDOWN,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  nbdErrorName,
  REQUEST_SIZE,
  safeU64,
  SIMPLE_REPLY_SIZE,
} from "./protocol.ts";

const SECTOR = 512;
/** The longest error message payload accepted in an error chunk (proto.md: strings are at most 4096 bytes). */
const MAX_ERROR_PAYLOAD = 4096 + 14;

export type CommandCallback = (error: IoError | undefined) => void;

/** One NBD request on the wire. */
export interface Command {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  /** NBD_CMD_WRITE: the data, consecutive buffers totalling `length`. */
  readonly data: readonly Uint8Array[] | null;
  /** NBD_CMD_READ: where the data goes, consecutive buffers totalling `length`. */
  readonly dest: readonly Uint8Array[] | null;
  readonly cb: CommandCallback;
}

/** A command while the connection owns it. */
interface Pending {
  cmd: Command;
  handle: number;
  /** Bytes of header + payload already in the outgoing ring. */
  sentBytes: number;
  /** Read data bytes received (structured: the sum of content chunks, which must not overlap). */
  received: number;
  error: IoError | undefined;
}

const RX_MAGIC = 0;
const RX_SIMPLE = 1;
const RX_CHUNK = 2;
const RX_DATA_OFFSET = 3;
const RX_DATA = 4;
const RX_SMALL = 5;

export class NbdConnection {
  private readonly inflight = new Map<number, Pending>();
  /** Commands not yet fully in the outgoing ring, in order; the first may be partly there. */
  private readonly outQueue: Pending[] = [];
  private nextHandle = 1;
  private readonly reqBuf = new Uint8Array(REQUEST_SIZE);
  private readonly reqView = new DataView(this.reqBuf.buffer);
  // Reply parser state.
  private rx = RX_MAGIC;
  private readonly hdr = new Uint8Array(CHUNK_HEADER_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private cur: Pending | null = null;
  private chunkFlags = 0;
  private chunkType = 0;
  private chunkLength = 0;
  private simple = false;
  /** RX_DATA: where the next byte goes (relative to the command's offset) and how many remain. */
  private dataPos = 0;
  private dataLeft = 0;
  private small = new Uint8Array(0);
  /** An NBD_ESHUTDOWN error arrived: disconnect once its reply is complete. */
  private shutdownSeen = false;
  // Liveness.
  private deadReason: string | null = null;
  private asyncCount = 0;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private watchSeq = 0;
  private watchSince = 0;

  constructor(
    private readonly link: SocketLink,
    readonly info: NbdExportInfo,
    /** For messages ("nbd+unix:///disk?socket=..."). */
    readonly url: string,
    readonly timeoutMs: number,
  ) {
    link.onProgress = () => {
      if (this.asyncCount > 0) link.arm();
      this.pump();
    };
  }

  /** Why the connection is no longer usable, or null while it is. */
  get dead(): string | null {
    return this.deadReason;
  }

  /** Requests sent or queued and not yet answered. */
  get outstanding(): number {
    return this.inflight.size;
  }

  /** Queue a command; its callback runs once, when the reply (or the connection's end) arrives. */
  submit(cmd: Command): void {
    if (this.deadReason !== null) return cmd.cb(this.lostError(cmd.offset));
    const p: Pending = { cmd, handle: this.nextHandle++, sentBytes: 0, received: 0, error: undefined };
    this.inflight.set(p.handle, p);
    this.outQueue.push(p);
    // Into the ring now, onto the socket once the caller's current burst of submissions is over: requests
    // started together go out in one write (a synchronous caller's `runSync` publishes them at once anyway).
    this.pumpOut(false);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushLater);
    }
  }

  private flushQueued = false;
  private readonly flushLater = (): void => {
    this.flushQueued = false;
    if (this.deadReason === null) this.pumpOut();
  };

  /** Move bytes both ways as far as the rings allow; completes commands whose replies are in. */
  pump(): void {
    if (this.deadReason !== null) return;
    this.pumpOut();
    this.pumpIn();
    // Commands the replies' callbacks submitted (a read-modify-write's write) go out before anyone sleeps.
    if (this.outQueue.length > 0 || !this.link.published()) this.pumpOut();
    if (this.deadReason === null && this.link.state !== "open" && this.link.available() === 0)
      this.fail(this.link.reason || "the connection closed");
  }

  /**
   * Pump, sleeping between the worker's changes, until `done()` holds. Returns early only when the connection
   * dies, which completes every command with an error first.
   */
  runSync(done: () => boolean): void {
    let since = Date.now();
    for (;;) {
      const seen = this.link.seq();
      this.pump();
      if (done() || this.deadReason !== null) return;
      const left = this.timeoutMs - (Date.now() - since);
      if (left <= 0) {
        this.fail(`no answer from the server for ${this.timeoutMs} ms`);
        return;
      }
      if (this.link.waitSync(seen, left)) since = Date.now();
    }
  }

  /** An asynchronous request begins: keep the process alive and be woken at the worker's changes until `endAsync`. */
  startAsync(): void {
    if (this.asyncCount++ === 0) {
      this.link.ref();
      this.startWatchdog();
    }
    this.link.arm();
  }

  endAsync(): void {
    if (--this.asyncCount === 0) {
      this.link.unref();
      if (this.watchdog) clearInterval(this.watchdog);
      this.watchdog = null;
    }
  }

  /** End the connection: NBD_CMD_DISC (a soft disconnect) when it is healthy, then close the socket. */
  close(): void {
    if (this.deadReason === null) {
      // Outstanding requests are the caller's to have waited for; any left fail as the connection ends.
      this.submitDisc();
      const deadline = Date.now() + Math.min(this.timeoutMs, 2000);
      for (;;) {
        const seen = this.link.seq();
        this.pumpOut();
        this.link.watchRoom();
        if ((this.outQueue.length === 0 && this.link.sent()) || this.link.state !== "open") break;
        const left = deadline - Date.now();
        if (left <= 0) break;
        this.link.waitSync(seen, left);
      }
      this.fail("the medium was closed");
    }
    this.link.close();
  }

  /** Declare the connection dead: every outstanding command fails with EIO and the socket closes. */
  fail(reason: string): void {
    if (this.deadReason !== null) return;
    this.deadReason = reason;
    this.link.close();
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    const all = [...this.inflight.values()];
    this.inflight.clear();
    this.outQueue.length = 0;
    for (const p of all) p.cmd.cb(this.lostError(p.cmd.offset));
  }

  private lostError(offset: number): IoError {
    return new IoError("EIO", `${this.url}: ${this.deadReason}`, Math.floor(offset / SECTOR));
  }

  private submitDisc(): void {
    const p: Pending = {
      cmd: {
        type: NBD_CMD_DISC,
        flags: 0,
        offset: 0,
        length: 0,
        data: null,
        dest: null,
        cb: () => undefined,
      },
      handle: this.nextHandle++,
      sentBytes: 0,
      received: 0,
      error: undefined,
    };
    this.outQueue.push(p); // no reply comes: not in `inflight`
  }

  private startWatchdog(): void {
    this.watchSeq = this.link.seq();
    this.watchSince = Date.now();
    const every = Math.max(10, Math.min(1000, Math.floor(this.timeoutMs / 4)));
    this.watchdog = setInterval(() => {
      const s = this.link.seq();
      if (s !== this.watchSeq) {
        this.watchSeq = s;
        this.watchSince = Date.now();
      }
      this.pump(); // also covers a wake-up that came while a sync call had already taken the bytes
      if (this.inflight.size > 0 && Date.now() - this.watchSince >= this.timeoutMs)
        this.fail(`no answer from the server for ${this.timeoutMs} ms`);
    }, every);
  }

  // ---- outgoing ----

  /** Move queued commands into the outgoing ring as far as it has room; `flush` publishes them to the worker. */
  private pumpOut(flush = true): void {
    for (;;) {
      const room = this.fillOut();
      if (this.outQueue.length === 0) break;
      // The ring is full: ask to hear when the socket frees some, then look once more (see watchRoom).
      this.link.watchRoom();
      if (this.link.room() === room) break;
    }
    if (flush) this.link.flush();
  }

  /** Returns the room left in the ring when it stopped. */
  private fillOut(): number {
    const link = this.link;
    while (this.outQueue.length > 0) {
      const p = this.outQueue[0]!;
      const cmd = p.cmd;
      if (p.sentBytes === 0) {
        if (link.room() < REQUEST_SIZE) break;
        encodeRequest(this.reqView, 0, cmd.flags, cmd.type, p.handle, cmd.offset, cmd.length);
        link.put(this.reqBuf);
        p.sentBytes = REQUEST_SIZE;
      }
      const payload = cmd.type === NBD_CMD_WRITE ? cmd.length : 0;
      while (p.sentBytes - REQUEST_SIZE < payload) {
        const room = link.room();
        if (room === 0) break;
        const pos = p.sentBytes - REQUEST_SIZE;
        const [buf, off] = locate(cmd.data!, pos);
        const n = Math.min(room, buf.length - off, payload - pos);
        link.put(buf.subarray(off, off + n));
        p.sentBytes += n;
      }
      if (p.sentBytes - REQUEST_SIZE < payload) break;
      this.outQueue.shift();
    }
    return link.room();
  }

  // ---- incoming ----

  private pumpIn(): void {
    const link = this.link;
    for (;;) {
      if (this.deadReason !== null) return;
      const avail = link.available();
      switch (this.rx) {
        case RX_MAGIC: {
          if (avail < 4) return;
          link.take(this.hdr.subarray(0, 4));
          const magic = this.hdrView.getUint32(0);
          if (magic === NBD_SIMPLE_REPLY_MAGIC) this.rx = RX_SIMPLE;
          else if (magic === NBD_STRUCTURED_REPLY_MAGIC) this.rx = RX_CHUNK;
          else return this.protocolError(`bad reply magic 0x${magic.toString(16)}`);
          break;
        }
        case RX_SIMPLE: {
          if (avail < SIMPLE_REPLY_SIZE - 4) return;
          link.take(this.hdr.subarray(4, SIMPLE_REPLY_SIZE));
          const error = this.hdrView.getUint32(4);
          const p = this.lookup(this.hdrView.getBigUint64(8));
          if (!p) return;
          this.cur = p;
          this.simple = true;
          if (error !== 0) {
            p.error = this.nbdError(p, error, "");
            this.endReply();
          } else if (p.cmd.type === NBD_CMD_READ) {
            if (this.info.structuredReplies)
              return this.protocolError("a simple reply to a read after structured replies were agreed");
            this.dataPos = 0;
            this.dataLeft = p.cmd.length;
            this.rx = RX_DATA;
          } else this.endReply();
          break;
        }
        case RX_CHUNK: {
          if (avail < CHUNK_HEADER_SIZE - 4) return;
          link.take(this.hdr.subarray(4, CHUNK_HEADER_SIZE));
          this.chunkFlags = this.hdrView.getUint16(4);
          this.chunkType = this.hdrView.getUint16(6);
          const p = this.lookup(this.hdrView.getBigUint64(8));
          if (!p) return;
          this.cur = p;
          this.simple = false;
          const len = (this.chunkLength = this.hdrView.getUint32(16));
          const type = this.chunkType;
          if (type === NBD_REPLY_TYPE_NONE) {
            if (len !== 0) return this.protocolError("NBD_REPLY_TYPE_NONE with a payload");
            this.endChunk();
          } else if (type === NBD_REPLY_TYPE_OFFSET_DATA) {
            if (p.cmd.type !== NBD_CMD_READ || len < 9)
              return this.protocolError("a bad NBD_REPLY_TYPE_OFFSET_DATA");
            this.rx = RX_DATA_OFFSET;
          } else if (type === NBD_REPLY_TYPE_OFFSET_HOLE) {
            if (p.cmd.type !== NBD_CMD_READ || len !== 12)
              return this.protocolError("a bad NBD_REPLY_TYPE_OFFSET_HOLE");
            this.small = new Uint8Array(len);
            this.rx = RX_SMALL;
          } else if ((type & NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
            if (len < 6 || len > MAX_ERROR_PAYLOAD)
              return this.protocolError(`an error chunk of ${len} bytes`);
            this.small = new Uint8Array(len);
            this.rx = RX_SMALL;
          } else {
            // Block status and anything else were never asked for (proto.md: a hard disconnect).
            return this.protocolError(`an unexpected reply chunk of type ${type}`);
          }
          break;
        }
        case RX_DATA_OFFSET: {
          if (avail < 8) return;
          link.take(this.hdr.subarray(0, 8));
          const p = this.cur!;
          const offset = safeU64(this.hdrView, 0);
          const n = this.chunkLength - 8;
          const rel = offset === undefined ? -1 : offset - p.cmd.offset;
          if (rel < 0 || rel + n > p.cmd.length) return this.protocolError("read data outside the request");
          this.dataPos = rel;
          this.dataLeft = n;
          this.rx = RX_DATA;
          break;
        }
        case RX_DATA: {
          if (avail === 0) return;
          const p = this.cur!;
          let n = Math.min(avail, this.dataLeft);
          while (n > 0) {
            const [buf, off] = locate(p.cmd.dest!, this.dataPos);
            const k = Math.min(n, buf.length - off);
            link.take(buf.subarray(off, off + k));
            this.dataPos += k;
            this.dataLeft -= k;
            p.received += k;
            n -= k;
          }
          if (this.dataLeft === 0) {
            if (this.simple) this.endReply();
            else this.endChunk();
          }
          break;
        }
        case RX_SMALL: {
          if (avail < this.small.length) return;
          link.take(this.small);
          if (!this.smallChunk()) return;
          this.endChunk();
          break;
        }
      }
    }
  }

  /** A hole or an error chunk, whole in `small`; false after a protocol error. */
  private smallChunk(): boolean {
    const p = this.cur!;
    const v = new DataView(this.small.buffer);
    if (this.chunkType === NBD_REPLY_TYPE_OFFSET_HOLE) {
      const offset = safeU64(v, 0);
      const size = v.getUint32(8);
      const rel = offset === undefined ? -1 : offset - p.cmd.offset;
      if (size === 0 || rel < 0 || rel + size > p.cmd.length) {
        this.protocolError("a hole outside the request");
        return false;
      }
      for (let pos = rel, left = size; left > 0;) {
        const [buf, off] = locate(p.cmd.dest!, pos);
        const k = Math.min(left, buf.length - off);
        buf.fill(0, off, off + k);
        pos += k;
        left -= k;
      }
      p.received += size;
      return true;
    }
    // An error chunk: error u32, message length u16, message, then (ERROR_OFFSET) the offset.
    const error = v.getUint32(0);
    const msgLen = v.getUint16(4);
    if (6 + msgLen > this.small.length || error === 0) {
      this.protocolError("a malformed error chunk");
      return false;
    }
    const message = new TextDecoder().decode(this.small.subarray(6, 6 + msgLen));
    let at = p.cmd.offset;
    if (this.chunkType === NBD_REPLY_TYPE_ERROR_OFFSET && this.small.length >= 6 + msgLen + 8) {
      const o = safeU64(v, 6 + msgLen);
      if (o !== undefined && o >= p.cmd.offset && o < p.cmd.offset + p.cmd.length) at = o;
    }
    // The first error reported stands, unless a later one points earlier.
    const err = this.nbdError(p, error, message, at);
    if (!p.error || (err.sector ?? 0) < (p.error.sector ?? 0)) p.error = err;
    return true;
  }

  private nbdError(p: Pending, error: number, message: string, at = p.cmd.offset): IoError {
    const what = p.cmd.type === NBD_CMD_READ ? "read" : p.cmd.type === NBD_CMD_WRITE ? "write" : "request";
    const text = `${this.url}: the server failed the ${what} at byte ${at} with ${nbdErrorName(error)}${message ? `: ${message}` : ""}`;
    if (error === NBD_ESHUTDOWN) this.shutdownSeen = true;
    return new IoError(ioCodeOf(error), text, Math.floor(at / SECTOR));
  }

  private endChunk(): void {
    if ((this.chunkFlags & NBD_REPLY_FLAG_DONE) !== 0) this.endReply();
    else this.rx = RX_MAGIC;
  }

  /** The reply to `cur` is complete. */
  private endReply(): void {
    const p = this.cur!;
    this.cur = null;
    this.rx = RX_MAGIC;
    this.inflight.delete(p.handle);
    if (!p.error && p.cmd.type === NBD_CMD_READ && p.received !== p.cmd.length) {
      p.error = new IoError(
        "EIO",
        `${this.url}: the server's reply to a read covered ${p.received} of ${p.cmd.length} bytes`,
        Math.floor(p.cmd.offset / SECTOR),
      );
    }
    p.cmd.cb(p.error);
    // proto.md: "If the client receives an ESHUTDOWN error it MUST initiate a soft disconnect."
    if (this.shutdownSeen && this.deadReason === null) {
      this.submitDisc();
      this.pumpOut();
      this.fail("the server is shutting down");
    }
  }

  private lookup(handle: bigint): Pending | undefined {
    const p = handle <= BigInt(Number.MAX_SAFE_INTEGER) ? this.inflight.get(Number(handle)) : undefined;
    if (!p) this.protocolError(`a reply for unknown handle ${handle}`);
    return p;
  }

  private protocolError(what: string): void {
    this.fail(`protocol error: the server sent ${what}`);
  }
}

/** The buffer holding byte `pos` of consecutive `bufs`, and the offset of that byte in it. */
function locate(bufs: readonly Uint8Array[], pos: number): [Uint8Array, number] {
  for (const b of bufs) {
    if (pos < b.length) return [b, pos];
    pos -= b.length;
  }
  throw new RangeError("position outside the buffers");
}
