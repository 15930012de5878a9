// Raw-file specifics: vectored I/O limits, a file shrunk under us, errno mapping.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { fsError } from "../../src/storage/check.ts";
import { AsyncEngine, SyncEngine } from "../../src/storage/engine.ts";
import { createImage } from "../../src/storage/image.ts";
import { makeEngine, openImage } from "../../src/storage/index.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { SECTOR_SIZE } from "../../src/storage/types.ts";
import { pattern, run, sameBytes, tempDir } from "./helpers.ts";

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
function image(sectors: number): string {
  const f = path.join(dir, `r${n++}.img`);
  createImage(f, sectors * SECTOR_SIZE);
  return f;
}

describe("RawImageBackend", () => {
  for (const kind of ["sync", "async"] as const) {
    it(`${kind}: scatter-gather beyond IOV_MAX (1100 one-sector buffers) round trips`, async () => {
      const img = image(2048);
      const b = RawImageBackend.open(img);
      const e = kind === "sync" ? new SyncEngine(b) : new AsyncEngine(b);
      try {
        const data = pattern(1100 * SECTOR_SIZE, 41);
        const out = Array.from({ length: 1100 }, (_, i) => data.subarray(i * 512, i * 512 + 512));
        expect((await run(e, { op: "write", tag: 1, sector: 7, bufs: out })).error).toBeUndefined();
        const file = new Uint8Array(fs.readFileSync(img));
        expect(sameBytes(file.subarray(7 * 512, 1107 * 512), data)).toBe("same");
        // Read back into buffers of uneven sizes (1, 2, 3, ... sectors) laid out in reverse in one arena.
        const arena = new Uint8Array(1100 * SECTOR_SIZE);
        const bufs: Uint8Array[] = [];
        let end = arena.length;
        for (let s = 0, k = 1; s < 1100; s += k, k++) {
          const len = Math.min(k, 1100 - s) * SECTOR_SIZE;
          bufs.push(arena.subarray(end - len, end));
          end -= len;
        }
        expect((await run(e, { op: "read", tag: 2, sector: 7, bufs })).error).toBeUndefined();
        let off = 0;
        for (const buf of bufs) {
          expect(sameBytes(buf, data.subarray(off, off + buf.length))).toBe("same");
          off += buf.length;
        }
      } finally {
        b.close();
      }
    });

    it(`${kind}: sectors past the end of a file shrunk by someone else read as zeroes`, async () => {
      const img = image(16);
      const b = RawImageBackend.open(img);
      const e = makeEngine(b, kind);
      try {
        fs.writeFileSync(img, pattern(16 * SECTOR_SIZE, 5));
        fs.truncateSync(img, 10 * SECTOR_SIZE + 100);
        const one = new Uint8Array(6 * SECTOR_SIZE).fill(0xff);
        expect((await run(e, { op: "read", tag: 1, sector: 10, bufs: [one] })).error).toBeUndefined();
        expect(one.subarray(0, 100)).toEqual(pattern(16 * SECTOR_SIZE, 5).subarray(5120, 5220));
        expect(one.subarray(100).every((x) => x === 0)).toBe(true);
        // Vectored: sector 9 whole, 100 bytes of sector 10, then end of file in the middle of the second buffer.
        const data = pattern(16 * SECTOR_SIZE, 5);
        const a = new Uint8Array(SECTOR_SIZE).fill(0xff);
        const m = new Uint8Array(SECTOR_SIZE).fill(0xff);
        const c = new Uint8Array(4 * SECTOR_SIZE).fill(0xff);
        expect((await run(e, { op: "read", tag: 2, sector: 9, bufs: [a, m, c] })).error).toBeUndefined();
        expect(a).toEqual(data.subarray(9 * SECTOR_SIZE, 10 * SECTOR_SIZE));
        expect(m.subarray(0, 100)).toEqual(data.subarray(10 * SECTOR_SIZE, 10 * SECTOR_SIZE + 100));
        expect(m.subarray(100).every((x) => x === 0) && c.every((x) => x === 0)).toBe(true);
      } finally {
        b.close();
      }
    });
  }

  it("openImage and makeEngine build the requested pieces", () => {
    const img = image(8);
    const b = openImage(img, { readOnly: true });
    expect(b.readOnly).toBe(true);
    expect(b.describe).toContain(img);
    expect(makeEngine(b, "sync").kind).toBe("sync");
    expect(makeEngine(b, "async").kind).toBe("async");
    b.close();
  });

  it("maps host errno codes to IoError codes, keeping the failing sector", () => {
    const err = (code: string) => Object.assign(new Error(code), { code });
    expect(fsError(err("ENOSPC"), 9, "write")).toMatchObject({ code: "ENOSPC", sector: 9 });
    expect(fsError(err("EDQUOT"), 9, "write")).toMatchObject({ code: "ENOSPC" });
    expect(fsError(err("EIO"), 3, "read")).toMatchObject({ code: "EIO", sector: 3 });
    expect(fsError(err("EROFS"), 0, "write")).toMatchObject({ code: "EROFS" });
    expect(fsError(err("EINVAL"), 0, "read")).toMatchObject({ code: "EINVAL" });
    expect(fsError(err("EFBIG"), 0, "write")).toMatchObject({ code: "ERANGE" });
    expect(fsError(err("EWHATEVER"), 1, "read")).toMatchObject({ code: "EIO", sector: 1 });
  });
});
