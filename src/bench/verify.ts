/**
 * Before a path is measured, check that it moves the right bytes: write a patterned block through it, read it
 * back through it, and read the image file directly; all three must agree. A path that fails is still
 * measured, but its rows carry the failure.
 */
import fs from "node:fs";

import { fillPattern, SECTOR } from "./offsets.ts";
import { type ImageRef, openSession } from "./paths.ts";
import type { PathSpec } from "./types.ts";

export interface PathCheck {
  path: string;
  ok: boolean;
  note: string;
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

export async function verifyPath(
  spec: PathSpec,
  image: ImageRef,
  lba: number,
  blockSize = 65536,
): Promise<PathCheck> {
  const w = { op: "write" as const, pattern: "seq" as const, blockSize, qd: 1 };
  const s = await openSession(spec, w, "warm", image);
  try {
    const want = fillPattern(new Uint8Array(blockSize), lba, 0xc0ffee ^ lba);
    // Written from the slot's own buffer (guest memory on the PV and IDE paths, as the measured cells use it),
    // which is then cleared, so the read back must really bring the bytes.
    const slot = s.bufs[0]!;
    slot.set(want);
    const wr = s.write(lba, slot, 0);
    if (wr instanceof Promise) await wr;
    slot.fill(0);
    const rd = s.read(lba, blockSize / SECTOR, 0);
    const got = rd instanceof Promise ? await rd : rd;
    let at = firstDiff(want, got);
    if (at >= 0)
      return { path: spec.id, ok: false, note: `read back through the path differs at byte ${at}` };
    const fd = fs.openSync(image.path, "r");
    const file = new Uint8Array(blockSize);
    try {
      fs.readSync(fd, file, 0, blockSize, lba * SECTOR);
    } finally {
      fs.closeSync(fd);
    }
    at = firstDiff(want, file);
    if (at >= 0) return { path: spec.id, ok: false, note: `the image file differs at byte ${at}` };
    return { path: spec.id, ok: true, note: `${blockSize} bytes written and read back at LBA ${lba}` };
  } catch (e) {
    return { path: spec.id, ok: false, note: (e as Error).message };
  } finally {
    await s.close();
  }
}
