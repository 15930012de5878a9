// Random writes, discards, flushes and reads through the qcow2 medium, checked against a raw shadow written
// with the same data: every read agrees as it happens, and afterwards `qemu-img check` finds no errors and no
// leaks, and `qemu-img compare` finds the image identical to the shadow. Fresh images (xenide's own) and
// images qemu-img made, with and without backing files, small caches (evictions mid-run) and 512-byte clusters
// (the refcount table grows mid-run).
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { makeEngine } from "../../../src/storage/index.ts";
import { openMedium } from "../../../src/storage/open.ts";
import type { IoCompletion, IoRequest } from "../../../src/storage/types.ts";
import { createQcow2, Qcow2Backend } from "../../../src/storage/qcow2/index.ts";
import { fastTempDir, qemuImg, qemuIo, requireQemuUtils } from "./qemu.ts";
import { expectCleanAndEqual, storm } from "./storm.ts";

const ok = requireQemuUtils("the qcow2 random I/O tests");

(ok ? describe : describe.skip)("random I/O on qcow2 images, judged by qemu-img", () => {
  const dir = fastTempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("10,000 operations on a fresh v3 image with 4 KiB clusters", () => {
    const img = path.join(dir, "fresh.qcow2");
    createQcow2(img, { size: 16 << 20, clusterSize: 4096 });
    const shadow = Buffer.alloc(16 << 20);
    const b = openMedium(img);
    const counts = storm(b, shadow, 10_000, 1);
    expect(counts.flushes).toBeGreaterThan(200);
    b.close();
    expect(counts.writes).toBeGreaterThan(5000);
    expect(counts.discards).toBeGreaterThan(1500);
    expectCleanAndEqual(img, shadow, dir);
  });

  for (const compat of ["0.10", "1.1"] as const) {
    it(`2,000 operations on a compat=${compat} qemu-img image over a raw backing file QEMU wrote to`, () => {
      const base = path.join(dir, `base-${compat}.raw`);
      fs.writeFileSync(base, Buffer.alloc(12 << 20));
      qemuIo("raw", base, ["write -P 0x5a 0 12m", "write -P 0xa5 1m 1m"]);
      const img = path.join(dir, `over-${compat}.qcow2`);
      qemuImg([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        `compat=${compat}`,
        "-b",
        path.basename(base),
        "-F",
        "raw",
        img,
        "16M",
      ]);
      qemuIo("qcow2", img, ["write -P 0x11 3m 100k", "write -z 5m 64k"]);
      const shadow = Buffer.alloc(16 << 20);
      fs.readFileSync(base).copy(shadow);
      shadow.fill(0x11, 3 << 20, (3 << 20) + 100 * 1024);
      shadow.fill(0, 5 << 20, (5 << 20) + 65536);
      const before = fs.readFileSync(base);
      const b = openMedium(img);
      storm(b, shadow, 2000, 2, 300);
      b.close();
      expectCleanAndEqual(img, shadow, dir);
      expect(fs.readFileSync(base).equals(before)).toBe(true);
    });
  }

  it("512-byte clusters and tiny caches: evictions mid-run and a refcount table that grows", () => {
    const img = path.join(dir, "tiny.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "16M"]);
    const reftableBefore = qemuImg(["info", "--output=json", img]).out;
    const shadow = Buffer.alloc(16 << 20);
    const b = Qcow2Backend.open(img, { l2CacheBytes: 1024, refcountCacheBytes: 2048 });
    storm(b, shadow, 3000, 3, 128);
    b.close();
    expect(reftableBefore).toMatch(/"cluster-size": 512/);
    const hdr = fs.readFileSync(img).subarray(48, 60);
    // refcount_table_clusters grew past qemu-img's single cluster (64 blocks of 256 clusters = 8 MiB).
    expect(hdr.readUInt32BE(8)).toBeGreaterThan(1);
    expectCleanAndEqual(img, shadow, dir);
  });

  it("32 requests in flight at once on the async engine (reads and in-place writes as fs callbacks)", async () => {
    const img = path.join(dir, "qd32.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "16M"]);
    // Preallocate half the disk so that many writes land in place (the asynchronous path).
    qemuIo("qcow2", img, ["write -P 0x21 0 8m"]);
    const shadow = Buffer.alloc(16 << 20);
    shadow.fill(0x21, 0, 8 << 20);
    const b = openMedium(img);
    expect(typeof b.startIo).toBe("function");
    const engine = makeEngine(b, "async");
    const stripe = (16 << 20) / 512 / 32;
    let x = 7;
    const r = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let batch = 0; batch < 60; batch++) {
      const checks: { buf: Buffer; expect: Buffer }[] = [];
      for (let q = 0; q < 32; q++) {
        const count = 1 + Math.floor(r() * 16);
        const sector = q * stripe + Math.floor(r() * (stripe - count));
        const kind = r();
        const req: IoRequest = { op: "read", tag: q, sector };
        const range = shadow.subarray(sector * 512, (sector + count) * 512);
        if (kind < 0.45) {
          const data = Buffer.alloc(count * 512, (batch * 32 + q) & 0xff);
          req.op = "write";
          req.bufs = [data];
          range.set(data);
        } else if (kind < 0.55) {
          req.op = "discard";
          req.count = count;
          range.fill(0);
        } else {
          const buf = Buffer.alloc(count * 512);
          req.bufs = [
            buf.subarray(0, 512 * Math.ceil(count / 2)),
            buf.subarray(512 * Math.ceil(count / 2)),
          ].filter((v) => v.length > 0);
          checks.push({ buf, expect: Buffer.from(range) });
        }
        engine.submit(req);
      }
      if (batch % 5 === 4) engine.submit({ op: "flush", tag: 99, sector: 0 });
      await engine.drain();
      const out: IoCompletion[] = [];
      engine.reap(out);
      expect(out.filter((c) => c.error).map((c) => c.error!.message)).toEqual([]);
      for (const c of checks) expect(c.buf.equals(c.expect)).toBe(true);
    }
    b.close();
    expectCleanAndEqual(img, shadow, dir);
  });
});
