/**
 * Self-describing sectors for the durability tests: bytes 0..3 magic, 4..7 lba, 8..11 generation, the rest a
 * pattern of (lba, generation). A sector either decodes whole or it is not one we wrote.
 */
export const MAGIC = 0x58454e44; // "XEND"

export function fillSector(s: Uint8Array, lba: number, gen: number): void {
  const dv = new DataView(s.buffer, s.byteOffset, 512);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, lba, true);
  dv.setUint32(8, gen, true);
  for (let i = 12; i < 512; i++) s[i] = (lba * 31 + gen * 7 + i) & 0xff;
}

/** The generation a sector holds: 0 for all zeroes (never written), -1 for anything torn or foreign. */
export function sectorGen(s: Uint8Array, lba: number): number {
  const dv = new DataView(s.buffer, s.byteOffset, 512);
  if (dv.getUint32(0, true) !== MAGIC) return s.every((b) => b === 0) ? 0 : -1;
  if (dv.getUint32(4, true) !== lba) return -1;
  const gen = dv.getUint32(8, true);
  for (let i = 12; i < 512; i++) if (s[i] !== ((lba * 31 + gen * 7 + i) & 0xff)) return -1;
  return gen;
}
