/**
 * IDENTIFY DEVICE data (ATA/ATAPI-6 §8.15, Table 27) and the default CHS geometry of a hard disk.
 *
 * The word values follow what QEMU 7.2 reports for an ide-hd (so that guests see the same capabilities), with
 * these differences taken from the standard: word 255 carries the integrity word (A5h + checksum, §8.15.66),
 * words 54-58 and 59 always reflect the current CHS translation and multiple setting, and words 82/85 bit 3
 * advertise the Power Management feature set whose commands the device implements.
 */

import { LBA28_MAX_SECTORS, MAX_MULT_SECTORS } from "./ata.ts";

export interface Geometry {
  cylinders: number;
  heads: number;
  sectors: number;
}

/** The live state IDENTIFY reports, filled in by the drive at each IDENTIFY. */
export interface IdentifyState {
  model: string;
  serial: string;
  firmware: string;
  sectorCount: number;
  /** Default geometry (words 1, 3, 6). */
  geometry: Geometry;
  /** Current CHS translation (words 54-58), or null when INITIALIZE DEVICE PARAMETERS set an invalid one. */
  current: Geometry | null;
  multipleSectors: number;
  writeCache: boolean;
  smartEnabled: boolean;
  /** Words 62, 63 and 88 as last patched by SET FEATURES 03h. */
  swdma: number;
  mwdma: number;
  udma: number;
}

/** ATA strings: two characters per word, the first in the high byte (ATA/ATAPI-6 §3.2.9), space padded. */
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
 * Default geometry from the sector count: 16 heads, 63 sectors per track, cylinders = sectors / 1008 clamped
 * to 2..16383 (the ATA limit of words 1/54), as QEMU's guess_chs_for_size.
 */
export function geometryForSize(sectorCount: number): Geometry {
  let cylinders = Math.floor(sectorCount / (16 * 63));
  if (cylinders > 16383) cylinders = 16383;
  else if (cylinders < 2) cylinders = 2;
  return { cylinders, heads: 16, sectors: 63 };
}

/**
 * Geometry from a valid MBR partition table (sector 0 ending in 55 AA): the first used entry's ending head and
 * sector give heads and sectors per track, as the partitioning tool saw them. Entries that imply more than 16
 * heads (a BIOS LBA translation) or an impossible cylinder count are not a physical geometry and are skipped,
 * as in QEMU's hd-geometry.c. Returns null when the table gives nothing usable.
 */
export function geometryFromMbr(sector0: Uint8Array, sectorCount: number): Geometry | null {
  if (sector0.length < 512 || sector0[510] !== 0x55 || sector0[511] !== 0xaa) return null;
  for (let i = 0; i < 4; i++) {
    const e = 0x1be + 16 * i;
    const nrSects =
      (sector0[e + 12]! | (sector0[e + 13]! << 8) | (sector0[e + 14]! << 16) | (sector0[e + 15]! << 24)) >>>
      0;
    const endHead = sector0[e + 5]!;
    const endSector = sector0[e + 6]! & 63;
    if (nrSects === 0 || endSector === 0) continue;
    const heads = endHead + 1;
    if (heads > 16) continue;
    const cylinders = Math.floor(sectorCount / (heads * endSector));
    if (cylinders < 1 || cylinders > 16383) continue;
    return { cylinders, heads, sectors: endSector };
  }
  return null;
}

/** Build the 256 IDENTIFY words into `w` (reused by the drive, no allocation per IDENTIFY). */
export function buildIdentify(st: IdentifyState, w: Uint16Array): void {
  w.fill(0);
  const g = st.geometry;
  const n = st.sectorCount;
  w[0] = 0x0040; // fixed device, not removable
  w[1] = g.cylinders;
  w[3] = g.heads;
  w[4] = 512 * g.sectors; // retired: unformatted bytes per track
  w[5] = 512; // retired: unformatted bytes per sector
  w[6] = g.sectors;
  putString(w, 10, 10, st.serial);
  w[20] = 3; // retired: buffer type (dual-ported, read cache)
  w[21] = 512; // retired: buffer size in sectors
  w[22] = 4; // obsolete: ECC bytes on READ/WRITE LONG
  putString(w, 23, 4, st.firmware);
  putString(w, 27, 20, st.model);
  w[47] = 0x8000 | MAX_MULT_SECTORS; // READ/WRITE MULTIPLE: up to 16 sectors per DRQ block
  w[48] = 1; // dword I/O supported (QEMU reports it; 32-bit data-port access works)
  w[49] = (1 << 11) | (1 << 9) | (1 << 8); // IORDY supported, LBA supported, DMA supported
  w[51] = 0x200; // obsolete PIO timing mode 2
  w[52] = 0x200; // obsolete DMA timing mode 2
  const cur = st.current;
  w[53] = (cur ? 1 : 0) | 2 | 4; // words 54-58 valid (only with a valid translation), 64-70 valid, 88 valid
  if (cur) {
    const cap = Math.min(cur.cylinders * cur.heads * cur.sectors, 0xffffffff);
    w[54] = cur.cylinders;
    w[55] = cur.heads;
    w[56] = cur.sectors;
    w[57] = cap & 0xffff;
    w[58] = cap >>> 16;
  }
  if (st.multipleSectors) w[59] = 0x100 | st.multipleSectors;
  const lba28 = Math.min(n, LBA28_MAX_SECTORS);
  w[60] = lba28 & 0xffff;
  w[61] = lba28 >>> 16;
  w[62] = st.swdma;
  w[63] = st.mwdma;
  w[64] = 0x03; // PIO modes 3 and 4
  w[65] = 120; // minimum multiword DMA cycle time (ns)
  w[66] = 120; // recommended multiword DMA cycle time
  w[67] = 120; // minimum PIO cycle time without flow control
  w[68] = 120; // minimum PIO cycle time with IORDY
  w[69] = 1 << 14; // deterministic read after TRIM (as QEMU)
  w[80] = 0xf0; // major versions ATA-4..ATA-7
  w[81] = 0x16; // minor version
  const pm = 1 << 3; // Power Management feature set
  w[82] = (1 << 14) | (1 << 5) | pm | 1; // NOP, write cache, power management, SMART supported
  w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); // FLUSH CACHE EXT, FLUSH CACHE, 48-bit
  w[84] = 1 << 14;
  w[85] = (1 << 14) | (st.writeCache ? 1 << 5 : 0) | pm | (st.smartEnabled ? 1 : 0);
  w[86] = (1 << 13) | (1 << 12) | (1 << 10);
  w[87] = 1 << 14;
  w[88] = st.udma;
  w[93] = 0x6001; // hardware reset result, as QEMU reports it for either device
  const lo = n % 0x100000000;
  const hi = Math.floor(n / 0x100000000);
  w[100] = lo & 0xffff;
  w[101] = lo >>> 16;
  w[102] = hi & 0xffff;
  w[103] = (hi >>> 16) & 0xffff;
  w[106] = (1 << 14) | (1 << 13); // word valid; one logical sector per physical sector (bits 3:0 = 0)
  w[169] = 1; // DATA SET MANAGEMENT TRIM supported
  // Integrity word (§8.15.66): signature A5h in the low byte, and a high byte that makes the byte sum of
  // all 512 bytes zero modulo 256.
  let sum = 0xa5;
  for (let i = 0; i < 255; i++) sum += (w[i]! & 0xff) + (w[i]! >> 8);
  w[255] = (((256 - (sum & 0xff)) & 0xff) << 8) | 0xa5;
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
