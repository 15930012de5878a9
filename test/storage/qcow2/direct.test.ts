// qcow2 with O_DIRECT: guest data in aligned memory moves on an O_DIRECT descriptor (reads and in-place
// writes, sync and async, 32 in flight), metadata and copy-on-write clusters through the page cache; Linux
// keeps the two coherent, so every read agrees with the shadow and qemu-img finds the image clean and equal.
// The image lives on the repository's disk (tmpfs may refuse O_DIRECT); a filesystem without O_DIRECT skips.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { allocAligned } from "../../../src/storage/aligned.ts";
import { ImageError } from "../../../src/storage/errors.ts";
import { makeEngine } from "../../../src/storage/index.ts";
import { openMedium } from "../../../src/storage/open.ts";
import type { IoCompletion, IoRequest } from "../../../src/storage/types.ts";
import { tempDir } from "../helpers.ts";
import { qemuImg, qemuIo, requireQemuUtils } from "./qemu.ts";
import { expectCleanAndEqual, rng } from "./storm.ts";

const ok = requireQemuUtils("the qcow2 O_DIRECT test");
const dir = tempDir(true);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function noDirect(): string | undefined {
  const probe = path.join(dir, "probe.qcow2");
  qemuImg(["create", "-q", "-f", "qcow2", probe, "1M"]);
  try {
    openMedium(probe, { direct: true }).close();
    return undefined;
  } catch (e) {
    if (e instanceof ImageError && e.code === "ENODIRECT") return e.message;
    throw e;
  }
}

const reason = ok ? noDirect() : "qemu-utils missing";
if (ok && reason) console.log(`skipping the qcow2 O_DIRECT test: ${reason}`);

(ok && !reason ? describe : describe.skip)("qcow2 with O_DIRECT", () => {
  it("random I/O, sync and 32 in flight, aligned and unaligned buffers", async () => {
    const SIZE = 16 << 20;
    const img = path.join(dir, "direct.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", img, "16M"]);
    qemuIo("qcow2", img, ["write -P 0x31 0 10m"]);
    const shadow = Buffer.alloc(SIZE);
    shadow.fill(0x31, 0, 10 << 20);
    const b = openMedium(img, { direct: true });
    expect(b.describe).toMatch(/\(direct\)/);
    const mem = allocAligned(32 * 65536, false);
    const r = rng(21);
    const stripe = SIZE / 512 / 32;
    for (const kind of ["sync", "async"] as const) {
      const engine = makeEngine(b, kind);
      for (let batch = 0; batch < 40; batch++) {
        const checks: { buf: Uint8Array; expect: Buffer }[] = [];
        for (let q = 0; q < 32; q++) {
          const count = 1 + Math.floor(r() * 64);
          const sector = q * stripe + Math.floor(r() * (stripe - count));
          const range = shadow.subarray(sector * 512, (sector + count) * 512);
          // Mostly aligned memory (the O_DIRECT descriptor); every fifth an ordinary buffer (the page cache).
          const buf =
            q % 5 === 0 ? new Uint8Array(count * 512) : mem.subarray(q * 65536, q * 65536 + count * 512);
          const req: IoRequest = { op: "read", tag: q, sector, bufs: [buf] };
          const k = r();
          if (k < 0.5) {
            buf.fill((batch * 32 + q + 1) & 0xff);
            req.op = "write";
            range.set(buf);
          } else if (k < 0.6) {
            delete req.bufs;
            req.op = "discard";
            req.count = count;
            range.fill(0);
          } else checks.push({ buf, expect: Buffer.from(range) });
          engine.submit(req);
        }
        if (batch % 8 === 7) engine.submit({ op: "flush", tag: 99, sector: 0 });
        await engine.drain();
        const out: IoCompletion[] = [];
        engine.reap(out);
        expect(out.filter((c) => c.error).map((c) => c.error!.message)).toEqual([]);
        for (const c of checks) expect(Buffer.from(c.buf).equals(c.expect)).toBe(true);
      }
    }
    b.close();
    expectCleanAndEqual(img, shadow, dir);
  });
});
