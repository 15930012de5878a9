/**
 * The qtest line protocol's lexical rules and reply formats, as QEMU 7.2's softmmu/qtest.c defines them:
 * space-separated words, integers in C `strtoul(..., 0)` syntax (0x hex, leading-0 octal, decimal), one reply
 * line per request (`OK`, `OK <value>`, `FAIL <why>`), and asynchronous `IRQ raise N` / `IRQ lower N` lines.
 */

/** A request the server answers with `FAIL <message>` (QEMU asserts on most of these and dies). */
export class QtestArgError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "QtestArgError";
  }
}

const U64 = (1n << 64n) - 1n;

/**
 * Parse an unsigned integer as `strtoull(s, &end, 0)` with the whole word consumed (qemu_strtou64): optional
 * sign (a minus wraps modulo 2^64, as strtoull does), then hex, octal or decimal digits.
 */
export function parseU64(word: string | undefined, what: string): bigint {
  if (word === undefined || word === "") throw new QtestArgError(`missing ${what}`);
  const m = /^[ \t]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(word);
  if (!m) throw new QtestArgError(`bad ${what} '${word}'`);
  const digits = m[2]!;
  let v: bigint;
  if (/^0[xX]/.test(digits)) v = BigInt(digits);
  else if (digits.length > 1 && digits[0] === "0") v = BigInt("0o" + digits.slice(1));
  else v = BigInt(digits);
  if (v > U64) throw new QtestArgError(`${what} '${word}' out of range`);
  if (m[1] === "-") v = -v & U64;
  return v;
}

/** A port number: QEMU asserts `addr <= 0xffff`; we refuse with FAIL instead. */
export function parsePort(word: string | undefined): number {
  const v = parseU64(word, "port");
  if (v > 0xffffn) throw new QtestArgError(`port ${word} out of range (max 0xffff)`);
  return Number(v);
}

/** `OK 0x%04x` — inb/inw/inl replies (an inl value above 0xffff simply prints more digits). */
export function fmtPortValue(v: number): string {
  return `OK 0x${(v >>> 0).toString(16).padStart(4, "0")}`;
}

/** `OK 0x%016" PRIx64` — readb..readq replies. */
export function fmtMemValue(v: bigint): string {
  return `OK 0x${v.toString(16).padStart(16, "0")}`;
}

/** `read` reply: every byte as two lower-case hex digits, in memory order. */
export function fmtHexBytes(data: Uint8Array): string {
  return `OK 0x${Buffer.from(data.buffer, data.byteOffset, data.length).toString("hex")}`;
}

function nibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * The DATA word of `write ADDR SIZE DATA`: QEMU skips the first two characters (the `0x`) and takes two hex
 * digits per byte; bytes the data does not cover are zero. QEMU turns a non-hex digit into garbage; we FAIL.
 */
export function parseHexData(word: string, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    if (i * 2 + 4 > word.length) break;
    const hi = nibble(word.charCodeAt(i * 2 + 2));
    const lo = nibble(word.charCodeAt(i * 2 + 3));
    if (hi < 0 || lo < 0) throw new QtestArgError(`bad hex data at byte ${i}`);
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/** Base64 as glib's g_base64_decode is lenient: we accept the standard alphabet with or without padding. */
export function parseBase64(word: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(word)) throw new QtestArgError("bad base64 data");
  return new Uint8Array(Buffer.from(word, "base64"));
}

export function fmtBase64(data: Uint8Array): string {
  return `OK ${Buffer.from(data.buffer, data.byteOffset, data.length).toString("base64")}`;
}

/** Split a request line as g_strsplit(line, " ", 0) does: every single space separates (empty words kept). */
export function splitWords(line: string): string[] {
  return line.split(" ");
}
