/**
 * A second connection to the same export, whose socket lives on the event loop of the thread that uses the
 * medium: the async engine's requests go from `startIo` straight onto it, and replies are parsed, as the socket
 * delivers them, straight into the requests' buffers. No thread is crossed, no wake-up is signalled, no byte is
 * copied through a ring: per request there is one header in a batch, one parse and one callback.
 *
 * The worker's connection (connection.ts) stays: a synchronous call must block, and a socket on this thread cannot
 * make progress while this thread waits. The medium uses this connection only for an export that allows several
 * (NBD_FLAG_CAN_MULTI_CONN, proto.md: flushes and FUA then act across connections, so writes through one are
 * seen by reads through the other once flushed); see backend.ts for how it keeps the two coherent.
 *
 * Life: `connect` starts the socket and the handshake (the same negotiation as the worker's, driven by the
 * socket's data) and the connection becomes `ready` when the export it finds is the one the medium opened.
 * Requests submitted in one turn of the event loop go out in one socket write (a microtask after the first).
 * Replies complete requests from the socket's read callback. A server that closes the connection, breaks the
 * protocol or stays silent for `timeoutMs` while requests wait ends it: every request in flight fails with EIO,
 * and the medium sends later ones to the worker's connection, which reports the same end if the server is gone.
 */
import { Socket, connect as netConnect } from "node:net";

import { IoError } from "../types.ts";
import { type HandshakeOptions, type NbdExportInfo, negotiate, type Negotiation } from "./handshake.ts";
import { encodeRequest, NBD_CMD_DISC, NBD_CMD_WRITE, REQUEST_SIZE } from "./protocol.ts";
import {
  type ByteSource,
  type Command,
  type CommandSink,
  type Pending,
  ReplyParser,
  type ReplyOwner,
} from "./replies.ts";
import type { NbdTarget } from "./url.ts";

const SECTOR = 512;
/** The buffer every socket read lands in: room for the replies to 32 reads of 4 KiB and more in one read. */
const READ_BYTES = 256 * 1024;
/** Request headers of one batch go out in one buffer; a batch of more starts another. */
const HEADERS_PER_BUFFER = 64;

export type SocketConnectionState = "connecting" | "ready" | "dead";

export class SocketConnection implements CommandSink, ReplyOwner, ByteSource {
  private readonly socket: Socket;
  private readonly inflight = new Map<number, Pending>();
  private nextHandle = 1;
  private parser: ReplyParser | null = null;
  private deadReason: string | null = null;
  private ready = false;
  // Handshake.
  private steps: Negotiation | null;
  private want = 0;
  private handshakeTimer: ReturnType<typeof setTimeout> | null = null;
  // Received bytes while parsing: the current read (with what an earlier read left of a header before it).
  private chunk: Uint8Array = new Uint8Array(0);
  private pos = 0;
  // Outgoing: the current batch, as the buffers one socket write takes.
  private batch: Uint8Array[] = [];
  private headers = Buffer.allocUnsafe(REQUEST_SIZE * HEADERS_PER_BUFFER);
  private headersView = new DataView(this.headers.buffer, this.headers.byteOffset, this.headers.length);
  /** Bytes of `headers` already in the batch, and bytes filled. */
  private headersTaken = 0;
  private headersUsed = 0;
  private flushQueued = false;
  // Liveness.
  private progress = 0;
  private readonly watchdog: ReturnType<typeof setInterval>;
  private watchProgress = 0;
  private watchSince = 0;
  private referenced = false;

  private constructor(
    target: NbdTarget,
    private readonly o: HandshakeOptions,
    private readonly expected: NbdExportInfo,
  ) {
    this.steps = negotiate(o);
    const onread = { buffer: Buffer.allocUnsafe(READ_BYTES), callback: this.onRead };
    this.socket =
      target.transport === "unix"
        ? netConnect({ path: target.path, onread })
        : netConnect({ host: target.host, port: target.port, onread });
    // An open medium does not keep the process alive by itself; requests in flight do.
    this.socket.unref();
    this.socket.on("connect", () => {
      if (target.transport === "tcp") this.socket.setNoDelay(true);
      this.advance();
    });
    this.socket.on("end", () => this.fail("the server closed the connection"));
    this.socket.on("close", () => this.fail("the connection was closed"));
    this.socket.on("error", (e: Error) => this.fail(e.message));
    this.handshakeTimer = setTimeout(
      () => this.fail(`the server did not answer within ${o.timeoutMs} ms during the handshake`),
      o.timeoutMs,
    );
    this.handshakeTimer.unref();
    const every = Math.max(10, Math.min(1000, Math.floor(o.timeoutMs / 4)));
    this.watchdog = setInterval(this.watch, every);
    this.watchdog.unref();
  }

  /** Connect and negotiate in the background: `state` is "connecting" until it is "ready" (or "dead"). */
  static connect(target: NbdTarget, o: HandshakeOptions, expected: NbdExportInfo): SocketConnection {
    return new SocketConnection(target, o, expected);
  }

  get state(): SocketConnectionState {
    return this.deadReason !== null ? "dead" : this.ready ? "ready" : "connecting";
  }

  get url(): string {
    return this.o.url;
  }

  /** ReplyOwner: why the connection ended, or null. */
  get dead(): string | null {
    return this.deadReason;
  }

  /** Requests sent and not yet answered. */
  get outstanding(): number {
    return this.inflight.size;
  }

  // ---- handshake ----

  /** Run the negotiation as far as the bytes at hand allow (it waits for `want` bytes when they are not). */
  private advance(): void {
    const steps = this.steps;
    if (!steps) return;
    try {
      let input: DataView | undefined;
      if (this.want > 0) {
        if (this.available() < this.want) return;
        input = this.receive(this.want);
        this.want = 0;
      }
      for (;;) {
        const r = steps.next(input);
        if (r.done) return this.negotiated(r.value);
        const step = r.value;
        input = undefined;
        if ("send" in step) this.socket.write(step.send);
        else if (this.available() >= step.receive) input = this.receive(step.receive);
        else {
          this.want = step.receive;
          return;
        }
      }
    } catch (e) {
      this.fail((e as Error).message);
    }
  }

  private receive(n: number): DataView {
    const out = new Uint8Array(n); // a copy: the bytes may be in the socket's read buffer
    this.take(out);
    return new DataView(out.buffer);
  }

  private negotiated(info: NbdExportInfo): void {
    this.steps = null;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    const e = this.expected;
    if (
      info.size !== e.size ||
      info.flags !== e.flags ||
      info.structuredReplies !== e.structuredReplies ||
      info.minBlock !== e.minBlock ||
      info.maxPayload !== e.maxPayload
    )
      return this.fail("the second connection found a different export");
    this.parser = new ReplyParser(this, info.structuredReplies);
    this.ready = true;
    if (this.pos < this.chunk.length) this.parser.parse(this);
    this.keep();
  }

  // ---- outgoing ----

  /** Queue a command for the next socket write; its callback runs once, from the event loop. */
  submit(cmd: Command): void {
    if (this.deadReason !== null || !this.ready) {
      const err = this.lostError(cmd.offset);
      queueMicrotask(() => cmd.cb(err));
      return;
    }
    const handle = this.nextHandle++;
    this.inflight.set(handle, { cmd, handle, sentBytes: 0, received: 0, error: undefined });
    if (!this.referenced) {
      this.referenced = true;
      this.socket.ref();
      this.watchSince = Date.now();
      this.watchProgress = this.progress;
    }
    this.header(cmd.flags, cmd.type, handle, cmd.offset, cmd.length);
    if (cmd.type === NBD_CMD_WRITE) {
      // The data goes from the caller's buffers as they are: they stay unchanged until the reply.
      this.cutHeaders();
      for (const b of cmd.data!) this.batch.push(b);
    }
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushOut);
    }
  }

  private header(flags: number, type: number, handle: number, offset: number, length: number): void {
    if (this.headersUsed === this.headers.length) {
      this.cutHeaders();
      this.headers = Buffer.allocUnsafe(REQUEST_SIZE * HEADERS_PER_BUFFER);
      this.headersView = new DataView(this.headers.buffer, this.headers.byteOffset, this.headers.length);
      this.headersTaken = this.headersUsed = 0;
    }
    encodeRequest(this.headersView, this.headersUsed, flags, type, handle, offset, length);
    this.headersUsed += REQUEST_SIZE;
  }

  /** Put the headers written since the last cut into the batch (they are never written again). */
  private cutHeaders(): void {
    if (this.headersUsed > this.headersTaken) {
      this.batch.push(this.headers.subarray(this.headersTaken, this.headersUsed));
      this.headersTaken = this.headersUsed;
    }
  }

  /** One socket write for everything submitted since the last one. */
  private readonly flushOut = (): void => {
    this.flushQueued = false;
    if (this.deadReason !== null) return;
    this.cutHeaders();
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    if (batch.length === 1) {
      this.socket.write(batch[0]!);
      return;
    }
    this.socket.cork();
    for (const b of batch) this.socket.write(b);
    this.socket.uncork();
  };

  // ---- incoming ----

  private readonly onRead = (n: number, buf: Buffer): boolean => {
    this.progress++;
    if (this.pos < this.chunk.length) {
      // Part of a header (or of a small chunk) from the last read comes first.
      const rest = this.chunk.subarray(this.pos);
      const joined = new Uint8Array(rest.length + n);
      joined.set(rest);
      joined.set(buf.subarray(0, n), rest.length);
      this.chunk = joined;
    } else this.chunk = buf.subarray(0, n);
    this.pos = 0;
    if (this.parser) this.parser.parse(this);
    else if (this.steps) this.advance();
    else this.pos = this.chunk.length; // nothing is wanted after a failed handshake
    // The read buffer is reused by the next read: what is left (part of a header) is copied out of it.
    this.chunk = this.pos < this.chunk.length ? Uint8Array.from(this.chunk.subarray(this.pos)) : EMPTY;
    this.pos = 0;
    return true;
  };

  /** ByteSource: received bytes not yet parsed. */
  available(): number {
    return this.chunk.length - this.pos;
  }

  /** ByteSource: the next `dst.length` bytes into `dst`. */
  take(dst: Uint8Array): void {
    const n = dst.length;
    dst.set(this.chunk.subarray(this.pos, this.pos + n));
    this.pos += n;
  }

  /** ReplyOwner: the request with this handle. */
  pending(handle: number): Pending | undefined {
    return this.inflight.get(handle);
  }

  /** ReplyOwner: the reply to `p` is complete. */
  complete(p: Pending): void {
    this.inflight.delete(p.handle);
    this.keep();
    p.cmd.cb(p.error);
    // proto.md: "If the client receives an ESHUTDOWN error it MUST initiate a soft disconnect."
    if (this.parser?.shutdownSeen && this.deadReason === null) this.close("the server is shutting down");
  }

  /** ReplyOwner: the server broke the protocol. */
  protocolError(reason: string): void {
    this.fail(reason);
  }

  // ---- liveness and the end ----

  /** Keep the process alive while requests are in flight, and only then. */
  private keep(): void {
    if (this.referenced && this.inflight.size === 0) {
      this.referenced = false;
      this.socket.unref();
    }
  }

  private readonly watch = (): void => {
    if (this.deadReason !== null || this.inflight.size === 0) return;
    if (this.progress !== this.watchProgress) {
      this.watchProgress = this.progress;
      this.watchSince = Date.now();
    } else if (Date.now() - this.watchSince >= this.o.timeoutMs)
      this.fail(`no answer from the server for ${this.o.timeoutMs} ms`);
  };

  private lostError(offset: number): IoError {
    return new IoError(
      "EIO",
      `${this.o.url}: ${this.deadReason ?? "the connection is not open"}`,
      Math.floor(offset / SECTOR),
    );
  }

  /** End with a soft disconnect (NBD_CMD_DISC) while healthy; requests still in flight fail. */
  close(reason = "the medium was closed"): void {
    if (this.deadReason !== null) return;
    if (this.ready) {
      this.flushOut();
      const disc = Buffer.alloc(REQUEST_SIZE);
      encodeRequest(
        new DataView(disc.buffer, disc.byteOffset, REQUEST_SIZE),
        0,
        0,
        NBD_CMD_DISC,
        this.nextHandle++,
        0,
        0,
      );
      this.socket.end(disc);
    }
    this.fail(reason);
  }

  /** Declare the connection dead: every request in flight fails with EIO and the socket closes. */
  fail(reason: string): void {
    if (this.deadReason !== null) return;
    this.deadReason = reason;
    this.steps = null;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    clearInterval(this.watchdog);
    // After a soft disconnect the socket finishes sending and closes by itself; otherwise close it now.
    if (!this.socket.writableEnded) this.socket.destroy();
    this.socket.unref();
    this.batch = [];
    const all = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of all) p.cmd.cb(this.lostError(p.cmd.offset));
  }
}

const EMPTY = new Uint8Array(0);
