/**
 * What IDENTIFY data of every drive kind shares: ATA strings, the integrity word, the default serial number.
 * The words a hard disk reports are in hd/identify.ts.
 */

import { ID, ID_INTEGRITY_SIGNATURE } from "../spec/ata.ts";

/** ATA strings (IDENTIFY serial, firmware, model; ACS-3 §7.12.7): two characters per word, the first in the high byte, space padded. */
export function putString(words: Uint16Array, first: number, count: number, s: string): void {
  for (let i = 0; i < count; i++) {
    const hi = s.charCodeAt(2 * i);
    const lo = s.charCodeAt(2 * i + 1);
    words[first + i] = ((Number.isNaN(hi) ? 0x20 : hi & 0xff) << 8) | (Number.isNaN(lo) ? 0x20 : lo & 0xff);
  }
}

/** Read back an ATA string (for tests and tools). */
export function getString(words: Uint16Array, first: number, count: number): string {
  let s = "";
  for (let i = 0; i < count; i++) {
    const w = words[first + i]!;
    s += String.fromCharCode(w >> 8, w & 0xff);
  }
  return s;
}

/**
 * Words 108-111 (ACS-3 §7.12.7.58): the 64-bit World Wide Name, its most significant word first (NAA in bits
 * 15:12 of word 108). Nothing is written for 0n (no name).
 */
export function putWwn(w: Uint16Array, wwn: bigint): void {
  if (wwn === 0n) return;
  for (let i = 0; i < 4; i++) w[ID.WORLD_WIDE_NAME + i] = Number((wwn >> BigInt(48 - 16 * i)) & 0xffffn);
}

/**
 * Word 255 (ACS-3 §7.12.7): the signature A5h in the low byte, and a high byte that makes the byte sum of all
 * 512 bytes zero modulo 256.
 */
export function setIntegrityWord(w: Uint16Array): void {
  let sum = ID_INTEGRITY_SIGNATURE;
  for (let i = 0; i < ID.INTEGRITY; i++) sum += (w[i]! & 0xff) + (w[i]! >> 8);
  w[ID.INTEGRITY] = (((256 - (sum & 0xff)) & 0xff) << 8) | ID_INTEGRITY_SIGNATURE;
}

/** Deterministic default serial number: "XI" + 12 hex digits of an FNV-1a hash of what identifies the disk. */
export function defaultSerial(key: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x01000193) >>> 0;
  }
  return (
    "XI" +
    h1.toString(16).padStart(8, "0").toUpperCase() +
    (h2 & 0xffff).toString(16).padStart(4, "0").toUpperCase()
  );
}
