/**
 * The benchmark builds its emulated paths as a user's program does: only with what the package's entry point
 * (src/index.ts, bundled as dist/index.mjs) exports, and with the default guest RAM, which is page-aligned.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { prepareImage } from "../../src/bench/image.ts";
import { type ImageRef, openSession, pathSpec } from "../../src/bench/paths.ts";
import * as api from "../../src/index.ts";

const PATHS = new URL("../../src/bench/paths.ts", import.meta.url);

/** Names `file` imports from modules outside src/bench, as [name, isType]. */
function outsideImports(file: URL): [string, boolean][] {
  const text = fs.readFileSync(file, "utf8");
  const out: [string, boolean][] = [];
  for (const m of text.matchAll(/import\s+(type\s+)?\{([^}]*)\}\s+from\s+"(\.\.\/[^"]+)"/g)) {
    for (const part of m[2]!.split(",")) {
      const t = part.trim();
      if (!t) continue;
      const isType = m[1] !== undefined || t.startsWith("type ");
      out.push([t.replace(/^type\s+/, "").split(/\s+as\s+/)[0]!, isType]);
    }
  }
  return out;
}

describe("the benchmark's paths use the public API", () => {
  it("imports from outside src/bench only what src/index.ts exports", () => {
    const names = outsideImports(PATHS);
    expect(names.length).toBeGreaterThan(5);
    const index = fs.readFileSync(new URL("../../src/index.ts", import.meta.url), "utf8");
    const storageTypes = fs.readFileSync(new URL("../../src/storage/types.ts", import.meta.url), "utf8");
    const missing = names.filter(([n, isType]) =>
      isType
        ? !new RegExp(`\\b${n}\\b`).test(index) &&
          !new RegExp(`export (interface|type) ${n}\\b`).test(storageTypes)
        : !(n in api),
    );
    expect(missing).toEqual([]);
  });

  describe("sessions", () => {
    let dir = "";
    let image: ImageRef;
    beforeAll(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-paths-api-"));
      image = { path: path.join(dir, "bench.img"), bytes: 4 << 20 };
      prepareImage(image.path, image.bytes);
    });
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    const w = { op: "read" as const, pattern: "seq" as const, blockSize: 4096, qd: 1 };
    for (const [variant, engine] of [
      ["fs-sync", null],
      ["dma", "sync"],
      ["pv", "sync"],
    ] as const) {
      it(`${variant}: data lands in page-aligned memory, and the bytes are the file's`, async () => {
        const s = await openSession(pathSpec(variant, engine), w, "warm", image);
        try {
          expect(s.ramAligned).toBe(true);
          if (s.hv) expect((s.hv.mem as api.GuestRam).pageAligned).toBe(true);
          const got = await s.read(8, 8, 0);
          const fd = fs.openSync(image.path, "r");
          const want = new Uint8Array(4096);
          fs.readSync(fd, want, 0, 4096, 8 * 512);
          fs.closeSync(fd);
          expect(Buffer.compare(Buffer.from(got), Buffer.from(want))).toBe(0);
        } finally {
          await s.close();
        }
      });
    }

    // Each slot's buffer takes whole pages: small blocks at depth need a page per slot granted, not their bytes'
    // worth (a full run once lost every PV row to 512-byte blocks at QD4).
    for (const [blockSize, qd] of [
      [512, 4],
      [512, 32],
      [4096, 32],
    ] as const) {
      it(`pv: ${blockSize}-byte blocks at QD${qd} open, and every slot reads the file's bytes`, async () => {
        const s = await openSession(pathSpec("pv", "sync"), { ...w, blockSize, qd }, "warm", image);
        try {
          const fd = fs.openSync(image.path, "r");
          const sectors = blockSize / 512;
          for (let slot = 0; slot < qd; slot++) {
            const got = await s.read(slot * sectors, sectors, slot);
            const want = new Uint8Array(blockSize);
            fs.readSync(fd, want, 0, blockSize, slot * blockSize);
            expect(Buffer.compare(Buffer.from(got), Buffer.from(want)), `slot ${slot}`).toBe(0);
          }
          fs.closeSync(fd);
        } finally {
          await s.close();
        }
      });
    }
  });
});
