// O_DIRECT: page-cache bypass with aligned memory, and a bounce for the caller's unaligned buffers.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { allocAligned, isDirectAligned } from "../../src/storage/aligned.ts";
import { AsyncEngine, SyncEngine } from "../../src/storage/engine.ts";
import { ImageError } from "../../src/storage/errors.ts";
import { createImage } from "../../src/storage/image.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { SECTOR_SIZE } from "../../src/storage/types.ts";
import { pattern, run, sameBytes, tempDir } from "./helpers.ts";

// On the repository's own disk, not os.tmpdir(), which may be a tmpfs.
const dir = tempDir(true);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Why O_DIRECT cannot be tested here, or undefined when it can. */
function directUnsupported(): string | undefined {
  const probe = path.join(dir, "probe.img");
  createImage(probe, 4096);
  try {
    RawImageBackend.open(probe, { direct: true, lock: false }).close();
    return undefined;
  } catch (e) {
    if (e instanceof ImageError && e.code === "ENODIRECT") return e.message;
    throw e;
  } finally {
    fs.rmSync(probe);
  }
}

const reason = directUnsupported();
if (reason && process.env.CI === "true") throw new Error(`O_DIRECT required in CI: ${reason}`);

describe.skipIf(reason !== undefined)(`O_DIRECT${reason ? ` (skipped: ${reason})` : ""}`, () => {
  const BIG = 600 * 1024; // more than one bounce chunk

  function freshImage(name: string): string {
    const img = path.join(dir, name);
    createImage(img, 4 * 1024 * 1024);
    return img;
  }

  it("allocAligned memory really is aligned: an 8 KiB O_DIRECT read into it succeeds on allocated blocks", () => {
    const img = freshImage("aligned.img");
    // Allocate real blocks (O_DIRECT reads of holes skip the alignment checks).
    const fd0 = fs.openSync(img, "r+");
    fs.writeSync(fd0, pattern(8192, 1), 0, 8192, 0);
    fs.fdatasyncSync(fd0);
    fs.closeSync(fd0);
    const fd = fs.openSync(img, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
    try {
      const mem = allocAligned(65536);
      expect(fs.readSync(fd, mem, 0, 8192, 0)).toBe(8192);
      expect(mem.subarray(0, 8192)).toEqual(pattern(8192, 1));
      expect(fs.readSync(fd, mem, 4096, 8192, 0)).toBe(8192);
    } finally {
      fs.closeSync(fd);
    }
    expect(isDirectAligned(allocAligned(4096))).toBe(true);
    expect(isDirectAligned(allocAligned(8192).subarray(512))).toBe(true);
    expect(isDirectAligned(allocAligned(8192).subarray(16))).toBe(false);
    expect(isDirectAligned(new Uint8Array(8192))).toBe(false);
  });

  for (const kind of ["sync", "async"] as const) {
    it(`${kind}: round trips through aligned views and bounced unaligned buffers`, async () => {
      const img = freshImage(`rt-${kind}.img`);
      const b = RawImageBackend.open(img, { direct: true });
      expect(b.direct).toBe(true);
      const e = kind === "sync" ? new SyncEngine(b) : new AsyncEngine(b);
      try {
        const plain = pattern(BIG, 2); // ordinary (malloc'd) memory: bounced
        const aligned = allocAligned(BIG + 4096);
        aligned.set(pattern(8192, 3), 512);
        const odd = allocAligned(BIG + 4096).subarray(16, 16 + 8192); // known-unaligned view
        odd.set(pattern(8192, 4));
        const w = [
          await run(e, { op: "write", tag: 1, sector: 0, bufs: [plain] }),
          await run(e, { op: "write", tag: 2, sector: 2048, bufs: [aligned.subarray(512, 512 + 8192)] }),
          await run(e, { op: "write", tag: 3, sector: 4096, bufs: [odd, pattern(SECTOR_SIZE, 5)] }),
        ];
        for (const c of w) expect(c.error).toBeUndefined();
        expect((await run(e, { op: "flush", tag: 4, sector: 0 })).error).toBeUndefined();

        // What is on disk, read back through the page cache by an independent descriptor.
        const file = new Uint8Array(fs.readFileSync(img));
        expect(sameBytes(file.subarray(0, BIG), plain)).toBe("same");
        expect(file.subarray(2048 * 512, 2048 * 512 + 8192)).toEqual(pattern(8192, 3));
        expect(file.subarray(4096 * 512, 4096 * 512 + 8192)).toEqual(pattern(8192, 4));
        expect(file.subarray(4096 * 512 + 8192, 4096 * 512 + 8704)).toEqual(pattern(SECTOR_SIZE, 5));

        const r1 = new Uint8Array(BIG);
        const r2 = allocAligned(8192);
        const r3 = allocAligned(16384).subarray(8, 8 + 8192);
        expect((await run(e, { op: "read", tag: 5, sector: 0, bufs: [r1] })).error).toBeUndefined();
        expect((await run(e, { op: "read", tag: 6, sector: 2048, bufs: [r2] })).error).toBeUndefined();
        expect((await run(e, { op: "read", tag: 7, sector: 4096, bufs: [r3] })).error).toBeUndefined();
        expect(sameBytes(r1, plain)).toBe("same");
        expect(r2).toEqual(pattern(8192, 3));
        expect(r3).toEqual(pattern(8192, 4));

        expect((await run(e, { op: "discard", tag: 8, sector: 1, count: 7 })).error).toBeUndefined();
        const z = new Uint8Array(8 * SECTOR_SIZE);
        await run(e, { op: "read", tag: 9, sector: 0, bufs: [z] });
        expect(z.subarray(0, 512)).toEqual(plain.subarray(0, 512));
        expect(z.subarray(512).every((x) => x === 0)).toBe(true);
      } finally {
        b.close();
      }
    });
  }
});
