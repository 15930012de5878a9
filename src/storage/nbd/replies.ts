/**
 * The reply side of an NBD connection's transmission phase (proto.md "Simple reply message", "Structured reply
 * chunk message"): replies parsed as their bytes stream in, simple or structured, matched to their requests by
 * handle. A read's data goes straight from the received bytes into the request's buffers (usually guest memory),
 * whatever order or split the server's chunks come in. One parser serves both connections a medium may use: the
 * worker's link (connection.ts) and a socket on the event loop (socket-connection.ts).
 */
import { IoError } from "../types.ts";
import {
  CHUNK_HEADER_SIZE,
  ioCodeOf,
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

/** Where commands go: the worker's connection or the event loop's. */
export interface CommandSink {
  /** Queue a command; its callback runs once, when the reply (or the connection's end) arrives. */
  submit(cmd: Command): void;
}

/** A command while a connection owns it. */
export interface Pending {
  cmd: Command;
  handle: number;
  /** Bytes of header + payload already handed on towards the socket. */
  sentBytes: number;
  /** Read data bytes received (structured: the sum of content chunks, which must not overlap). */
  received: number;
  error: IoError | undefined;
}

/** Received bytes, consumed in order. */
export interface ByteSource {
  available(): number;
  /** Move the next `dst.length` bytes (no more than `available()`) into `dst`. */
  take(dst: Uint8Array): void;
}

/** What the parser needs of its connection. */
export interface ReplyOwner {
  readonly url: string;
  /** Why the connection ended, or null while it is usable (the parser stops at once when it ends). */
  readonly dead: string | null;
  /** The request with this handle, or undefined (the parser then reports a protocol error). */
  pending(handle: number): Pending | undefined;
  /** The reply to `p` is complete; `p.error` holds its error, if any. */
  complete(p: Pending): void;
  /** The server broke the protocol: end the connection. */
  protocolError(what: string): void;
}

const RX_MAGIC = 0;
const RX_SIMPLE = 1;
const RX_CHUNK = 2;
const RX_DATA_OFFSET = 3;
const RX_DATA = 4;
const RX_SMALL = 5;

export class ReplyParser {
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
  /** An NBD_ESHUTDOWN error arrived: the connection must disconnect once its reply is complete. */
  shutdownSeen = false;

  constructor(
    private readonly owner: ReplyOwner,
    /** Structured replies were agreed: a simple reply to a read is then a protocol error. */
    private readonly structuredReplies: boolean,
  ) {}

  /** Parse what `src` holds, completing requests as their replies end. */
  parse(src: ByteSource): void {
    const owner = this.owner;
    for (;;) {
      if (owner.dead !== null) return;
      const avail = src.available();
      switch (this.rx) {
        case RX_MAGIC: {
          if (avail < 4) return;
          src.take(this.hdr.subarray(0, 4));
          const magic = this.hdrView.getUint32(0);
          if (magic === NBD_SIMPLE_REPLY_MAGIC) this.rx = RX_SIMPLE;
          else if (magic === NBD_STRUCTURED_REPLY_MAGIC) this.rx = RX_CHUNK;
          else return this.protocolError(`bad reply magic 0x${magic.toString(16)}`);
          break;
        }
        case RX_SIMPLE: {
          if (avail < SIMPLE_REPLY_SIZE - 4) return;
          src.take(this.hdr.subarray(4, SIMPLE_REPLY_SIZE));
          const error = this.hdrView.getUint32(4);
          const p = this.lookup();
          if (!p) return;
          this.cur = p;
          this.simple = true;
          if (error !== 0) {
            p.error = this.nbdError(p, error, "");
            this.endReply();
          } else if (p.cmd.type === NBD_CMD_READ) {
            if (this.structuredReplies)
              return this.protocolError("a simple reply to a read after structured replies were agreed");
            this.dataPos = 0;
            this.dataLeft = p.cmd.length;
            this.rx = RX_DATA;
          } else this.endReply();
          break;
        }
        case RX_CHUNK: {
          if (avail < CHUNK_HEADER_SIZE - 4) return;
          src.take(this.hdr.subarray(4, CHUNK_HEADER_SIZE));
          this.chunkFlags = this.hdrView.getUint16(4);
          this.chunkType = this.hdrView.getUint16(6);
          const p = this.lookup();
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
          src.take(this.hdr.subarray(0, 8));
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
          if (avail === 0 && this.dataLeft > 0) return;
          const p = this.cur!;
          let n = Math.min(avail, this.dataLeft);
          while (n > 0) {
            const [buf, off] = locate(p.cmd.dest!, this.dataPos);
            const k = Math.min(n, buf.length - off);
            src.take(off === 0 && k === buf.length ? buf : buf.subarray(off, off + k));
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
          src.take(this.small);
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
    const text = `${this.owner.url}: the server failed the ${what} at byte ${at} with ${nbdErrorName(error)}${message ? `: ${message}` : ""}`;
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
    if (!p.error && p.cmd.type === NBD_CMD_READ && p.received !== p.cmd.length) {
      p.error = new IoError(
        "EIO",
        `${this.owner.url}: the server's reply to a read covered ${p.received} of ${p.cmd.length} bytes`,
        Math.floor(p.cmd.offset / SECTOR),
      );
    }
    this.owner.complete(p);
  }

  /** The request the header in `hdr` (bytes 8-15) names. */
  private lookup(): Pending | undefined {
    // Handles are counted from 1 and stay below 2^53: the high word is small, the whole fits a double.
    const hi = this.hdrView.getUint32(8);
    const lo = this.hdrView.getUint32(12);
    const p = hi < 0x200000 ? this.owner.pending(hi * 0x100000000 + lo) : undefined;
    if (!p) this.protocolError(`a reply for unknown handle ${this.hdrView.getBigUint64(8)}`);
    return p;
  }

  private protocolError(what: string): void {
    this.owner.protocolError(`protocol error: the server sent ${what}`);
  }
}

/** The buffer holding byte `pos` of consecutive `bufs`, and the offset of that byte in it. */
export function locate(bufs: readonly Uint8Array[], pos: number): [Uint8Array, number] {
  for (const b of bufs) {
    if (pos < b.length) return [b, pos];
    pos -= b.length;
  }
  throw new RangeError("position outside the buffers");
}
