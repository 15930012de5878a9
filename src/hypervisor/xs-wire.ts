/**
 * The xenstored wire protocol (xen/include/public/io/xs_wire.h): every message is a 16-byte little-endian
 * header `struct xsd_sockmsg { u32 type, req_id, tx_id, len }` followed by `len` payload bytes, `len` at most
 * XENSTORE_PAYLOAD_MAX. Payloads are NUL-separated strings; errors travel as XS_ERROR with the errno's name
 * from `xsd_errors` and a NUL ("ENOENT\0"). The same framing runs over the unix socket and the guest's ring.
 */

import { XENSTORE_PAYLOAD_MAX, XSD_ERRORS, type XsErrno } from "./xenstore.ts";

/** enum xsd_sockmsg_type (xs_wire.h). */
export const XsType = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  /* 20 was XS_RESTRICT, removed */
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;
export type XsTypeValue = (typeof XsType)[keyof typeof XsType];

/** XS_TYPE_COUNT: types at or above it are invalid. */
export const XS_TYPE_COUNT = 23;

/** sizeof(struct xsd_sockmsg). */
export const XSD_SOCKMSG_SIZE = 16;

export { XENSTORE_PAYLOAD_MAX, XSD_ERRORS, type XsErrno };

export const XS_TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(XsType).map(([k, v]) => [v, k]),
);

export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Uint8Array;
}

/** A peer broke the framing (oversized payload): the connection cannot continue. */
export class XsProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "XsProtocolError";
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: false });

/** Encode one message: header and payload. */
export function encodeXsMessage(m: {
  type: number;
  reqId: number;
  txId: number;
  payload: Uint8Array;
}): Uint8Array {
  if (m.payload.length > XENSTORE_PAYLOAD_MAX)
    throw new RangeError(`xenstore payload of ${m.payload.length} bytes exceeds ${XENSTORE_PAYLOAD_MAX}`);
  const out = new Uint8Array(XSD_SOCKMSG_SIZE + m.payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, m.type >>> 0, true);
  dv.setUint32(4, m.reqId >>> 0, true);
  dv.setUint32(8, m.txId >>> 0, true);
  dv.setUint32(12, m.payload.length, true);
  out.set(m.payload, XSD_SOCKMSG_SIZE);
  return out;
}

/** A payload of NUL-terminated strings ("a\0b\0"). */
export function xsStrings(...parts: string[]): Uint8Array {
  return enc.encode(parts.map((p) => `${p}\0`).join(""));
}

/** A payload of bytes without a trailing NUL (an XS_READ reply, an XS_WRITE value). */
export function xsBytes(s: string): Uint8Array {
  return enc.encode(s);
}

/** The XS_ERROR payload for an errno name. */
export function xsErrorPayload(code: XsErrno): Uint8Array {
  return xsStrings(code);
}

/**
 * Split a payload at NULs. A trailing NUL ends the last string; text after the last NUL is one more string
 * (XS_WRITE's value has none).
 */
export function splitXsPayload(p: Uint8Array): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) {
      out.push(dec.decode(p.subarray(start, i)));
      start = i + 1;
    }
  }
  if (start < p.length) out.push(dec.decode(p.subarray(start)));
  return out;
}

export function decodeXsText(p: Uint8Array): string {
  return dec.decode(p);
}

/**
 * Reassembles messages from a byte stream (a socket's chunks, a ring's bytes). A header announcing more than
 * XENSTORE_PAYLOAD_MAX bytes is a protocol violation: `push` throws XsProtocolError and the reader is dead.
 */
export class XsMessageReader {
  private buf = new Uint8Array(0);
  private dead = false;

  push(chunk: Uint8Array): XsMessage[] {
    if (this.dead) throw new XsProtocolError("connection already failed");
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    const out: XsMessage[] = [];
    let off = 0;
    while (joined.length - off >= XSD_SOCKMSG_SIZE) {
      const dv = new DataView(joined.buffer, joined.byteOffset + off, XSD_SOCKMSG_SIZE);
      const len = dv.getUint32(12, true);
      if (len > XENSTORE_PAYLOAD_MAX) {
        this.dead = true;
        throw new XsProtocolError(
          `message of ${len} bytes exceeds XENSTORE_PAYLOAD_MAX (${XENSTORE_PAYLOAD_MAX})`,
        );
      }
      if (joined.length - off < XSD_SOCKMSG_SIZE + len) break;
      out.push({
        type: dv.getUint32(0, true),
        reqId: dv.getUint32(4, true),
        txId: dv.getUint32(8, true),
        payload: joined.slice(off + XSD_SOCKMSG_SIZE, off + XSD_SOCKMSG_SIZE + len),
      });
      off += XSD_SOCKMSG_SIZE + len;
    }
    this.buf = joined.slice(off);
    return out;
  }

  /** Bytes of an incomplete message waiting for the rest. */
  get pending(): number {
    return this.buf.length;
  }
}
