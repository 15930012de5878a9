// A raw image's flush makes durable what was written since the last flush, and skips its fdatasync when nothing
// was (QEMU's write_gen against flushed_gen in block/io.c, bdrv_co_flush): a machine that wrote nothing closes
// without one. fdatasync calls are counted by spying on node:fs; the backend's named import of it sees the spy
// once syncBuiltinESMExports() has copied the module object's properties to the ES module's exports.
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import path from "node:path";

import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { buildMachine } from "../../src/machine/builder.ts";
import { AsyncEngine } from "../../src/storage/engine.ts";
import { createImage } from "../../src/storage/image.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { SECTOR_SIZE } from "../../src/storage/types.ts";
import { pattern, tempDir } from "./helpers.ts";

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
function image(): string {
  const f = path.join(dir, `f${n++}.img`);
  createImage(f, 64 * SECTOR_SIZE);
  return f;
}

let syncs: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  syncs = vi.spyOn(fs, "fdatasyncSync");
  syncBuiltinESMExports();
});
afterEach(() => {
  vi.restoreAllMocks();
  syncBuiltinESMExports();
});

describe("RawImageBackend flush", () => {
  it("fdatasyncs after a write, and not again until the next write", () => {
    const b = RawImageBackend.open(image(), { lock: false });
    try {
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(0); // nothing written since the open
      b.write(3, [pattern(SECTOR_SIZE, 3)]);
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(1);
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(1);
      b.read(3, [new Uint8Array(SECTOR_SIZE)]);
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(1); // a read writes nothing
      b.discard(8, 2);
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(2);
    } finally {
      b.close();
    }
  });

  it("counts an asynchronous write once it has ended (a flush before its completion need not cover it)", async () => {
    const b = RawImageBackend.open(image(), { lock: false });
    const e = new AsyncEngine(b);
    try {
      e.submit({ op: "write", tag: 1, sector: 5, bufs: [pattern(SECTOR_SIZE, 5)] });
      b.flush(); // the write is on its way, not acknowledged: nothing to make durable yet
      expect(syncs).toHaveBeenCalledTimes(0);
      await e.drain();
      e.reap([]);
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(1);
      b.flush();
      expect(syncs).toHaveBeenCalledTimes(1);
    } finally {
      b.close();
    }
  });
});

describe("machine close", () => {
  it("closes a writable image it never wrote without an fdatasync, and one it wrote with one", async () => {
    const clean = image();
    const m = buildMachine({ ide: [{ position: "primary-master", medium: { image: clean } }] });
    await m.close();
    expect(syncs).toHaveBeenCalledTimes(0);

    const written = image();
    const w = buildMachine({ ide: [{ position: "primary-master", medium: { image: written } }] });
    const backend = w.ide.get("primary-master")!.backend;
    backend.write(9, [pattern(SECTOR_SIZE, 9)]);
    await w.close();
    expect(syncs).toHaveBeenCalledTimes(1);
    expect(fs.readFileSync(written).subarray(9 * SECTOR_SIZE, 10 * SECTOR_SIZE)).toEqual(
      Buffer.from(pattern(SECTOR_SIZE, 9)),
    );
  });
});
