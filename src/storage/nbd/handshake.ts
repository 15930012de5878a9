/**
 * The fixed newstyle handshake (proto.md "Fixed newstyle negotiation", "Option types"), run synchronously so an
 * NBD medium opens like a file: the server's greeting, the client flags, NBD_OPT_STRUCTURED_REPLY, then
 * NBD_OPT_GO with the export name, asking for NBD_INFO_BLOCK_SIZE (so the server knows the client honours block
 * size constraints). A server that answers NBD_OPT_GO with NBD_REP_ERR_UNSUP, or that is newstyle but not fixed
 * newstyle, gets NBD_OPT_EXPORT_NAME instead, as QEMU's client does. Oldstyle servers and TLS are refused with a
 * message saying so.
 */
import type { SocketLink } from "./link.ts";
import {
  CLISERV_MAGIC,
  DEFAULT_MAX_PAYLOAD,
  encodeGo,
  encodeOption,
  EXPORT_NAME_ZEROES,
  IHAVEOPT,
  MAX_MIN_BLOCK,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_FLAG_ERROR,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBDMAGIC,
  repErrorName,
  safeU64,
} from "./protocol.ts";
import { NbdError, type NbdFailure } from "./url.ts";

/** What the handshake agreed: the export and how to talk to it. */
export interface NbdExportInfo {
  /** Export size in bytes. */
  readonly size: number;
  /** Transmission flags. */
  readonly flags: number;
  /** Replies to reads come as structured reply chunks. */
  readonly structuredReplies: boolean;
  /** Block size constraints (proto.md "Block size constraints"); defaults when the server sent none. */
  readonly minBlock: number;
  readonly preferredBlock: number;
  readonly maxPayload: number;
  /** Whether NBD_OPT_GO was used (false: the NBD_OPT_EXPORT_NAME fallback). */
  readonly go: boolean;
}

export interface HandshakeOptions {
  exportName: string;
  /** For messages. */
  url: string;
  timeoutMs: number;
  /** Ask for structured replies (default true). */
  structuredReplies?: boolean;
}

/** Blocking reads and writes over a link, each bounded by the timeout (handshake only). */
class SyncStream {
  constructor(
    private readonly link: SocketLink,
    private readonly timeoutMs: number,
    private readonly fail: (reason: NbdFailure, message: string) => never,
  ) {}

  read(n: number): DataView {
    const out = new Uint8Array(n);
    let got = 0;
    let deadline = Date.now() + this.timeoutMs;
    while (got < n) {
      const seen = this.link.seq();
      const k = Math.min(this.link.available(), n - got);
      if (k > 0) {
        this.link.take(out.subarray(got, got + k));
        got += k;
        deadline = Date.now() + this.timeoutMs;
        continue;
      }
      if (this.link.state !== "open") {
        this.fail("closed", `the server closed the connection during the handshake (${this.link.reason})`);
      }
      const left = deadline - Date.now();
      if (left <= 0 || !this.link.waitSync(seen, left)) {
        if (this.link.available() === 0 && this.link.seq() === seen)
          this.fail("timeout", `the server did not answer within ${this.timeoutMs} ms during the handshake`);
      }
    }
    return new DataView(out.buffer);
  }

  write(bytes: Uint8Array): void {
    let off = 0;
    const deadline = Date.now() + this.timeoutMs;
    while (off < bytes.length) {
      const seen = this.link.seq();
      const k = Math.min(this.link.room(), bytes.length - off);
      if (k > 0) {
        this.link.put(bytes.subarray(off, off + k));
        this.link.flush();
        off += k;
        continue;
      }
      if (this.link.state !== "open") this.fail("closed", `the connection closed: ${this.link.reason}`);
      this.link.watchRoom();
      if (this.link.room() > 0) continue;
      const left = deadline - Date.now();
      if (left <= 0)
        this.fail("timeout", `the server did not take the handshake within ${this.timeoutMs} ms`);
      this.link.waitSync(seen, left);
    }
  }
}

/** How long a worker thread may take to start: generous, since only a broken runtime takes longer. */
const WORKER_START_MS = 60_000;

/** Wait for the worker's connect; throws `NbdError("connect" | "timeout")`. */
export function awaitConnect(link: SocketLink, url: string, timeoutMs: number): void {
  // The thread's start-up does not count against the server's time.
  const started = Date.now() + Math.max(timeoutMs, WORKER_START_MS);
  while (!link.alive && link.state === "connecting") {
    const seen = link.seq();
    if (link.alive) break;
    const left = started - Date.now();
    if (left <= 0)
      throw new NbdError("timeout", `cannot connect to ${url}: the connection's thread did not start`, url);
    link.waitSync(seen, left);
  }
  const deadline = Date.now() + timeoutMs;
  while (link.state === "connecting") {
    const seen = link.seq();
    if (link.state !== "connecting") break;
    const left = deadline - Date.now();
    if (left <= 0)
      throw new NbdError("timeout", `cannot connect to ${url}: no answer within ${timeoutMs} ms`, url);
    link.waitSync(seen, left);
  }
  if (link.state === "failed") throw new NbdError("connect", `cannot connect to ${url}: ${link.reason}`, url);
}

/**
 * One step of the handshake as the negotiation asks for it: bytes to send, or a number of bytes to receive (the
 * driver resumes the negotiation with them). The same negotiation runs over the worker's link, blocking
 * (`handshake`), and over a socket on the event loop (socket-connection.ts).
 */
export type HandshakeStep = { readonly send: Uint8Array } | { readonly receive: number };
export type Negotiation = Generator<HandshakeStep, NbdExportInfo, DataView | undefined>;

/** Run the handshake on a connected link; throws `NbdError` with one line saying what went wrong. */
export function handshake(link: SocketLink, o: HandshakeOptions): NbdExportInfo {
  const fail = failWith(o.url);
  const s = new SyncStream(link, o.timeoutMs, fail);
  const steps = negotiate(o);
  let input: DataView | undefined;
  for (;;) {
    const r = steps.next(input);
    if (r.done) return r.value;
    const step = r.value;
    if ("send" in step) {
      s.write(step.send);
      input = undefined;
    } else input = s.read(step.receive);
  }
}

/** A thrower of `NbdError`s about `url`. */
export function failWith(url: string): (reason: NbdFailure, message: string) => never {
  return (reason, message) => {
    throw new NbdError(reason, `${url}: ${message}`, url);
  };
}

/** Receive `n` bytes (inside a negotiation). */
function* receive(n: number): Generator<HandshakeStep, DataView, DataView | undefined> {
  return (yield { receive: n })!;
}

/** The negotiation itself, independent of how bytes move; throws `NbdError` as `handshake` does. */
export function* negotiate(o: HandshakeOptions): Negotiation {
  const fail = failWith(o.url);
  const greeting = yield* receive(16);
  if (greeting.getBigUint64(0) !== NBDMAGIC) fail("protocol", "not an NBD server (no NBDMAGIC greeting)");
  const second = greeting.getBigUint64(8);
  if (second === CLISERV_MAGIC)
    fail(
      "protocol",
      "the server uses oldstyle negotiation, which has no export names; xenide needs a newstyle server",
    );
  if (second !== IHAVEOPT) fail("protocol", "not an NBD server (unknown magic after NBDMAGIC)");
  const serverFlags = (yield* receive(2)).getUint16(0);
  const fixed = (serverFlags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (serverFlags & NBD_FLAG_NO_ZEROES) !== 0;
  const clientFlags = new Uint8Array(4);
  new DataView(clientFlags.buffer).setUint32(
    0,
    (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0),
  );
  yield { send: clientFlags };

  // Non-fixed newstyle allows NBD_OPT_EXPORT_NAME only.
  if (!fixed) return yield* exportName(o.exportName, noZeroes, false, fail);

  /** One option reply: its type and data. */
  function* reply(
    option: number,
  ): Generator<HandshakeStep, { type: number; data: DataView }, DataView | undefined> {
    const h = yield* receive(20);
    if (h.getBigUint64(0) !== NBD_REP_MAGIC) fail("protocol", "bad option reply magic");
    if (h.getUint32(8) !== option)
      fail("protocol", `reply to option ${h.getUint32(8)} while waiting for ${option}`);
    const type = h.getUint32(12);
    const len = h.getUint32(16);
    if (len > 64 * 1024) fail("protocol", `option reply of ${len} bytes`);
    return { type, data: len > 0 ? yield* receive(len) : new DataView(new ArrayBuffer(0)) };
  }
  const text = (d: DataView): string =>
    new TextDecoder().decode(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  const refuse = (option: string, type: number, data: DataView): never => {
    const why = data.byteLength > 0 ? `: ${text(data)}` : "";
    if (type === NBD_REP_ERR_TLS_REQD)
      fail("tls", `the server requires TLS, which xenide does not support (yet)${why}`);
    if (type === NBD_REP_ERR_UNKNOWN)
      fail("export", `the server has no export named '${o.exportName}'${why}`);
    if (type === NBD_REP_ERR_POLICY)
      fail("export", `the server refused ${option} (${repErrorName(type)})${why}`);
    if (type === NBD_REP_ERR_SHUTDOWN) fail("closed", `the server is shutting down${why}`);
    return fail("protocol", `the server refused ${option} with ${repErrorName(type)}${why}`);
  };

  let structured = false;
  if (o.structuredReplies ?? true) {
    yield { send: encodeOption(NBD_OPT_STRUCTURED_REPLY) };
    const r = yield* reply(NBD_OPT_STRUCTURED_REPLY);
    if (r.type === NBD_REP_ACK) structured = true;
    else if (r.type === NBD_REP_ERR_TLS_REQD) refuse("NBD_OPT_STRUCTURED_REPLY", r.type, r.data);
    else if ((r.type & NBD_REP_FLAG_ERROR) === 0)
      fail("protocol", `unexpected reply ${r.type} to NBD_OPT_STRUCTURED_REPLY`);
    // Any other error: simple replies.
  }

  yield { send: encodeOption(NBD_OPT_GO, encodeGo(o.exportName, [NBD_INFO_BLOCK_SIZE])) };
  let size: number | undefined;
  let flags = 0;
  let minBlock = 0;
  let preferredBlock = 0;
  let maxPayload = 0;
  for (;;) {
    const r = yield* reply(NBD_OPT_GO);
    if (r.type === NBD_REP_ACK) break;
    if (r.type === NBD_REP_INFO) {
      if (r.data.byteLength < 2) fail("protocol", "empty NBD_REP_INFO");
      const info = r.data.getUint16(0);
      if (info === NBD_INFO_EXPORT) {
        if (r.data.byteLength !== 12) fail("protocol", `NBD_INFO_EXPORT of ${r.data.byteLength} bytes`);
        size = safeU64(r.data, 2);
        if (size === undefined) fail("protocol", "the export is larger than 2^53 bytes");
        flags = r.data.getUint16(10);
      } else if (info === NBD_INFO_BLOCK_SIZE) {
        if (r.data.byteLength !== 14) fail("protocol", `NBD_INFO_BLOCK_SIZE of ${r.data.byteLength} bytes`);
        minBlock = r.data.getUint32(2);
        preferredBlock = r.data.getUint32(6);
        maxPayload = r.data.getUint32(10);
      }
      // Other information (name, description) is not needed.
      continue;
    }
    if (r.type === NBD_REP_ERR_UNSUP) return yield* exportName(o.exportName, noZeroes, structured, fail);
    if ((r.type & NBD_REP_FLAG_ERROR) !== 0) refuse("NBD_OPT_GO", r.type, r.data);
    fail("protocol", `unexpected reply ${r.type} to NBD_OPT_GO`);
  }
  if (size === undefined) fail("protocol", "the server ended NBD_OPT_GO without NBD_INFO_EXPORT");
  return checked(
    { size: size!, flags, structuredReplies: structured, minBlock, preferredBlock, maxPayload, go: true },
    fail,
  );
}

/** NBD_OPT_EXPORT_NAME: no error reply is possible; a refusing server just closes the connection. */
function* exportName(
  name: string,
  noZeroes: boolean,
  structured: boolean,
  fail: (reason: NbdFailure, message: string) => never,
): Negotiation {
  yield { send: encodeOption(NBD_OPT_EXPORT_NAME, new TextEncoder().encode(name)) };
  const r = yield* receive(10 + (noZeroes ? 0 : EXPORT_NAME_ZEROES));
  const size = safeU64(r, 0);
  if (size === undefined) fail("protocol", "the export is larger than 2^53 bytes");
  return checked(
    {
      size: size!,
      flags: r.getUint16(8),
      structuredReplies: structured,
      minBlock: 0,
      preferredBlock: 0,
      maxPayload: 0,
      go: false,
    },
    fail,
  );
}

/** Fill in the defaults of block size constraints and check what the server sent is usable. */
function checked(i: NbdExportInfo, fail: (reason: NbdFailure, message: string) => never): NbdExportInfo {
  let { minBlock, preferredBlock, maxPayload } = i;
  if (minBlock === 0) minBlock = 1;
  if ((minBlock & (minBlock - 1)) !== 0 || minBlock > MAX_MIN_BLOCK)
    fail("protocol", `invalid minimum block size ${minBlock} (a power of two up to 64 KiB)`);
  if (preferredBlock === 0) preferredBlock = Math.max(4096, minBlock);
  // No maximum advertised: 32 MiB; one advertised: at most that, and never more than the export.
  maxPayload = maxPayload === 0 ? DEFAULT_MAX_PAYLOAD : Math.min(maxPayload, 0xffffffff);
  maxPayload = Math.min(maxPayload, DEFAULT_MAX_PAYLOAD);
  if (maxPayload < minBlock)
    fail("protocol", `maximum block size ${maxPayload} is below the minimum ${minBlock}`);
  return { ...i, minBlock, preferredBlock, maxPayload };
}
