// The random operation storm shared by the qcow2 tests, and the qemu-img verdict on its result.
import fs from "node:fs";
import path from "node:path";

import { expect } from "vitest";

import type { BlockBackend } from "../../../src/storage/types.ts";
import { qemuCheck, qemuCompare } from "./qemu.ts";

/** A small xorshift generator: the same run every time for a seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

export interface StormCounts {
  writes: number;
  discards: number;
  flushes: number;
  reads: number;
}

/** `ops` random operations on `b` and on `shadow` (the expected guest bytes), reads checked as they happen. */
export function storm(
  b: BlockBackend,
  shadow: Buffer,
  ops: number,
  seed: number,
  maxSectors = 64,
): StormCounts {
  const r = rng(seed);
  const total = b.sectorCount;
  const counts: StormCounts = { writes: 0, discards: 0, flushes: 0, reads: 0 };
  for (let op = 0; op < ops; op++) {
    const kind = r();
    const sector = Math.floor(r() * total);
    const count = Math.min(total - sector, 1 + Math.floor(r() * maxSectors));
    const bytes = shadow.subarray(sector * 512, (sector + count) * 512);
    if (kind < 0.55) {
      const data = Buffer.alloc(count * 512, (op * 7 + 1) & 0xff);
      data.writeUInt32LE(op, 0);
      b.write(sector, [data]);
      bytes.set(data);
      counts.writes++;
    } else if (kind < 0.75) {
      b.discard(sector, count * 2 > total - sector ? total - sector : count * 2);
      shadow.fill(0, sector * 512, Math.min(total, sector + count * 2) * 512);
      counts.discards++;
    } else if (kind < 0.8) {
      b.flush();
      counts.flushes++;
    } else {
      const got = Buffer.alloc(count * 512);
      b.read(sector, [got]);
      if (!got.equals(bytes))
        throw new Error(`op ${op}: read of ${count} sectors at ${sector} differs from the shadow`);
      counts.reads++;
    }
  }
  return counts;
}

export function expectCleanAndEqual(image: string, shadow: Buffer, dir: string): void {
  const c = qemuCheck(image);
  expect(c.out).not.toMatch(/ERROR|Leaked/);
  expect({ status: c.status, corruptions: c.corruptions, leaks: c.leaks }).toEqual({
    status: 0,
    corruptions: 0,
    leaks: 0,
  });
  const raw = path.join(dir, `${path.basename(image)}.shadow.raw`);
  fs.writeFileSync(raw, shadow);
  const cmp = qemuCompare(image, raw);
  expect(cmp.out).toMatch(/Images are identical/);
  expect(cmp.status).toBe(0);
}
