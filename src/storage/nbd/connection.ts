/**
 * The transmission phase of the connection whose socket lives in a worker (proto.md "Transmission"): requests
 * written into the link's outgoing ring in submission order, replies parsed (replies.ts) from its incoming ring
 * as they stream in, any number in flight. A read's data goes straight from the ring into the request's buffers
 * (usually guest memory). The medium's synchronous calls and its handshake use it, and the async engine's
 * requests too unless the event loop's connection (socket-connection.ts) carries them.
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
import { encodeRequest, NBD_CMD_DISC, NBD_CMD_WRITE, REQUEST_SIZE } from "./protocol.ts";
import {
  type Command,
  type CommandSink,
  locate,
  type Pending,
  ReplyParser,
  type ReplyOwner,
} from "./replies.ts";

const SECTOR = 512;

export type { Command, CommandCallback } from "./replies.ts";

export class NbdConnection implements CommandSink, ReplyOwner {
  private readonly inflight = new Map<number, Pending>();
  /** Commands not yet fully in the outgoing ring, in order; the first may be partly there. */
  private readonly outQueue: Pending[] = [];
  private nextHandle = 1;
  private readonly reqBuf = new Uint8Array(REQUEST_SIZE);
  private readonly reqView = new DataView(this.reqBuf.buffer);
  private readonly parser: ReplyParser;
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
    this.parser = new ReplyParser(this, info.structuredReplies);
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
    this.parser.parse(this.link);
  }

  /** ReplyOwner: the request with this handle. */
  pending(handle: number): Pending | undefined {
    return this.inflight.get(handle);
  }

  /** ReplyOwner: the reply to `p` is complete. */
  complete(p: Pending): void {
    this.inflight.delete(p.handle);
    p.cmd.cb(p.error);
    // proto.md: "If the client receives an ESHUTDOWN error it MUST initiate a soft disconnect."
    if (this.parser.shutdownSeen && this.deadReason === null) {
      this.submitDisc();
      this.pumpOut();
      this.fail("the server is shutting down");
    }
  }

  /** ReplyOwner: the server broke the protocol. */
  protocolError(reason: string): void {
    this.fail(reason);
  }
}
