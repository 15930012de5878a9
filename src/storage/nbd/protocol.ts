/**
 * The NBD wire protocol: magic numbers, option, reply, flag and command values, and the byte layouts the client
 * writes and parses. Source: the NBD protocol document (NetworkBlockDevice/nbd, doc/proto.md), sections
 * "Handshake", "Transmission" and "Values", with the INFO, STRUCTURED_REPLY and WRITE_ZEROES extensions it now
 * includes. Every number on the wire is big-endian ("network byte order").
 */
import type { IoErrorCode } from "../types.ts";

// ---- handshake (proto.md "Newstyle negotiation", "Fixed newstyle negotiation") ----

/** 'NBDMAGIC': the first 8 bytes a server sends, oldstyle and newstyle alike (INIT_PASSWD). */
export const NBDMAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': the second magic of a newstyle server, and the magic of every option the client sends. */
export const IHAVEOPT = 0x49484156454f5054n;
/** cliserv_magic: the second magic of an oldstyle server (size and flags follow at once; no export names). */
export const CLISERV_MAGIC = 0x00420281861253n;
/** Magic of every option reply in fixed newstyle negotiation. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;

/** Handshake flags (16 bits, from the server). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits, the client's answer). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Options ("Option types"). */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;

/** Option reply types ("Option reply types"); errors have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_INFO = 3;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

/** Information types of NBD_OPT_GO / NBD_REP_INFO. */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags (16 bits, with the export's size). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

/** Bytes of zeroes that end an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
export const EXPORT_NAME_ZEROES = 124;

// ---- transmission ("Request message", "Simple reply message", "Structured reply chunk message") ----

export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Request: magic u32, flags u16, type u16, handle u64, offset u64, length u32 (then a write's data). */
export const REQUEST_SIZE = 28;
/** Simple reply: magic u32, error u32, handle u64 (then a read's data). */
export const SIMPLE_REPLY_SIZE = 16;
/** Structured reply chunk header: magic u32, flags u16, type u16, handle u64, length u32. */
export const CHUNK_HEADER_SIZE = 20;

/** Commands ("Request types"). */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_WRITE_ZEROES = 6;

/** Command flags. */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;

/** Structured reply flags and chunk types; error chunk types have bit 15 set. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

/** Error values ("Error values"): the errno numbers the protocol allows. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/**
 * Without NBD_INFO_BLOCK_SIZE a client should not send a payload larger than 32 MiB ("Block size
 * constraints": the default maximum).
 */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** The largest minimum block size a server may advertise (a power of two up to 64 KiB). */
export const MAX_MIN_BLOCK = 64 * 1024;

/** What a failed command tells the guest: the NBD error mapped onto the medium's error codes. */
export function ioCodeOf(nbdError: number): IoErrorCode {
  switch (nbdError) {
    case NBD_EPERM:
      return "EROFS"; // the server's answer to a write or trim on a read-only export
    case NBD_ENOSPC:
      return "ENOSPC";
    case NBD_EINVAL:
    case NBD_EOVERFLOW:
      return "EINVAL";
    case NBD_ENOTSUP:
      return "ENOTSUP";
    default:
      return "EIO";
  }
}

/** The protocol name of an NBD error value, for messages. */
export function nbdErrorName(nbdError: number): string {
  const names: Record<number, string> = {
    [NBD_EPERM]: "EPERM",
    [NBD_EIO]: "EIO",
    [NBD_ENOMEM]: "ENOMEM",
    [NBD_EINVAL]: "EINVAL",
    [NBD_ENOSPC]: "ENOSPC",
    [NBD_EOVERFLOW]: "EOVERFLOW",
    [NBD_ENOTSUP]: "ENOTSUP",
    [NBD_ESHUTDOWN]: "ESHUTDOWN",
  };
  return names[nbdError] ?? `error ${nbdError}`;
}

/** The name of an option reply error, for messages. */
export function repErrorName(rep: number): string {
  const names: Record<number, string> = {
    [NBD_REP_ERR_UNSUP]: "NBD_REP_ERR_UNSUP",
    [NBD_REP_ERR_POLICY]: "NBD_REP_ERR_POLICY",
    [NBD_REP_ERR_INVALID]: "NBD_REP_ERR_INVALID",
    [NBD_REP_ERR_PLATFORM]: "NBD_REP_ERR_PLATFORM",
    [NBD_REP_ERR_TLS_REQD]: "NBD_REP_ERR_TLS_REQD",
    [NBD_REP_ERR_UNKNOWN]: "NBD_REP_ERR_UNKNOWN",
    [NBD_REP_ERR_SHUTDOWN]: "NBD_REP_ERR_SHUTDOWN",
    [NBD_REP_ERR_BLOCK_SIZE_REQD]: "NBD_REP_ERR_BLOCK_SIZE_REQD",
    [NBD_REP_ERR_TOO_BIG]: "NBD_REP_ERR_TOO_BIG",
  };
  return names[rep] ?? `reply type 0x${(rep >>> 0).toString(16)}`;
}

/** Write a request header into `out` at `off`. `handle` and `offset` are below 2^53 (the client counts handles from 1). */
export function encodeRequest(
  out: DataView,
  off: number,
  flags: number,
  type: number,
  handle: number,
  offset: number,
  length: number,
): void {
  out.setUint32(off, NBD_REQUEST_MAGIC);
  out.setUint16(off + 4, flags);
  out.setUint16(off + 6, type);
  // Both below 2^53: written as two 32-bit halves (no BigInt per request).
  out.setUint32(off + 8, Math.floor(handle / 0x100000000));
  out.setUint32(off + 12, handle >>> 0);
  out.setUint32(off + 16, Math.floor(offset / 0x100000000));
  out.setUint32(off + 20, offset >>> 0);
  out.setUint32(off + 24, length);
}

/** An option: IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, IHAVEOPT);
  v.setUint32(8, option);
  v.setUint32(12, data.length);
  out.set(data, 16);
  return out;
}

/** NBD_OPT_GO's data: name length, name, number of information requests, the requests. */
export function encodeGo(exportName: string, infos: readonly number[]): Uint8Array {
  const name = new TextEncoder().encode(exportName);
  const out = new Uint8Array(4 + name.length + 2 + 2 * infos.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, name.length);
  out.set(name, 4);
  v.setUint16(4 + name.length, infos.length);
  infos.forEach((info, i) => v.setUint16(6 + name.length + 2 * i, info));
  return out;
}

/** A u64 read from the wire as a number, or undefined when it is beyond 2^53 (no disk here is that large). */
export function safeU64(v: DataView, off: number): number | undefined {
  const big = v.getBigUint64(off);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : undefined;
}
