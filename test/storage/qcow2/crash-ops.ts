// The deterministic operation sequence of the crash test, shared by the storm child and the checker.
import { rng } from "./storm.ts";

export interface CrashOp {
  kind: "write" | "discard" | "flush";
  sector: number;
  count: number;
}

/** Op `i` of the storm for `seed` on a disk of `sectors` sectors (ops must be asked for in order 0, 1, 2...). */
export function stormOps(seed: number, sectors: number): (i: number) => CrashOp {
  const r = rng(seed);
  return (i: number) => {
    const kind = r();
    const sector = Math.floor(r() * sectors);
    const count = Math.min(sectors - sector, 1 + Math.floor(r() * 40));
    if (i % 16 === 15) return { kind: "flush", sector: 0, count: 0 };
    return { kind: kind < 0.8 ? "write" : "discard", sector, count };
  };
}

/** What op `op` writes into sector `sector`: the op and sector numbers, then a byte derived from them. */
export function sectorBytes(op: number, sector: number): Uint8Array {
  const b = new Uint8Array(512);
  const v = new DataView(b.buffer);
  v.setUint32(0, op);
  v.setUint32(4, sector);
  b.fill((op * 31 + sector) & 0xff, 8);
  return b;
}
