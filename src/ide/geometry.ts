/**
 * CHS geometry of a hard disk: the default one a drive reports in IDENTIFY words 1, 3 and 6, guessed from the
 * medium as QEMU does, and the translation INITIALIZE DEVICE PARAMETERS sets (words 54-58).
 */

export interface Geometry {
  cylinders: number;
  heads: number;
  sectors: number;
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
