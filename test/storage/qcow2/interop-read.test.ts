// Images made by QEMU (qemu-img create, qemu-io writes, qemu-img convert -c) read byte for byte as QEMU reads
// them (`qemu-img convert -O raw`): both compat levels, cluster sizes from 512 B to 2 MiB, zero clusters,
// discarded clusters, compressed clusters, backing chains of raw and qcow2 with relative names, and refcount
// widths other than 16 bits.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { openMedium } from "../../../src/storage/open.ts";
import { ImageFormatError, Qcow2Backend } from "../../../src/storage/qcow2/index.ts";
import type { BlockBackend } from "../../../src/storage/types.ts";
import { tempDir } from "../helpers.ts";
import { qemuCheck, qemuImg, qemuIo, qemuRaw, requireQemuUtils } from "./qemu.ts";

const ok = requireQemuUtils("the qcow2 interop read tests");

function readAll(b: BlockBackend): Buffer {
  const out = Buffer.alloc(b.sectorCount * 512);
  // In pieces of odd sizes, so requests start and end inside clusters.
  for (let s = 0; s < b.sectorCount;) {
    const n = Math.min(b.sectorCount - s, 1 + ((s * 7) % 300));
    b.read(s, [out.subarray(s * 512, (s + n) * 512)]);
    s += n;
  }
  return out;
}

function expectSameAsQemu(image: string, dir: string): void {
  const b = openMedium(image, { readOnly: true });
  try {
    const ours = readAll(b);
    const theirs = qemuRaw(image, dir);
    expect(ours.length).toBe(theirs.length);
    expect(ours.equals(theirs)).toBe(true);
  } finally {
    b.close();
  }
}

/** Writes spread over the disk, in and across clusters, with patterns QEMU's qemu-io fills. */
const WRITES = [
  "write -P 0x11 0 64k",
  "write -P 0x22 1000448 3584",
  "write -P 0x33 3m 1536",
  "write -P 0x44 4095k 2k",
  "write -P 0x55 6m 512",
];

(ok ? describe : describe.skip)("qcow2 images made by qemu-img read as QEMU reads them", () => {
  const dir = tempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const file = (ext: string) => path.join(dir, `i${n++}.${ext}`);

  for (const compat of ["0.10", "1.1"] as const) {
    for (const cluster of [512, 4096, 65536, 2 * 1024 * 1024]) {
      it(`compat=${compat}, ${cluster}-byte clusters: data, zeroed and discarded ranges`, () => {
        const img = file("qcow2");
        qemuImg(["create", "-q", "-f", "qcow2", "-o", `compat=${compat},cluster_size=${cluster}`, img, "8M"]);
        qemuIo("qcow2", img, [...WRITES, "write -z 2m 128k", "discard 0 32k", "write -P 0x66 7m 1m"]);
        expectSameAsQemu(img, dir);
        const info = (openMedium(img, { readOnly: true }) as Qcow2Backend).info();
        expect(info.version).toBe(compat === "0.10" ? 2 : 3);
        expect(info.clusterSize).toBe(cluster);
      });
    }
  }

  it("an unallocated image reads as zeroes; a 7-sector image past the last cluster too", () => {
    const img = file("qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", img, "3584"]);
    const b = openMedium(img, { readOnly: true });
    expect(b.sectorCount).toBe(7);
    expect(readAll(b).every((x) => x === 0)).toBe(true);
    b.close();
  });

  for (const bits of [1, 8, 64]) {
    it(`refcount_bits=${bits}: reads, and writes that qemu-img check finds consistent`, () => {
      const img = file("qcow2");
      qemuImg(["create", "-q", "-f", "qcow2", "-o", `refcount_bits=${bits},cluster_size=4096`, img, "8M"]);
      qemuIo("qcow2", img, WRITES);
      expectSameAsQemu(img, dir);
      const b = openMedium(img);
      b.write(100, [Buffer.alloc(5 * 4096, 0x77)]);
      b.discard(8, 8);
      b.close();
      const c = qemuCheck(img);
      expect(c.out).not.toMatch(/ERROR|Leaked/);
      expect(c.status).toBe(0);
      expectSameAsQemu(img, dir);
    });
  }

  it("a raw base under a qcow2 overlay named by a relative path, base smaller than the overlay", () => {
    const base = file("raw");
    fs.writeFileSync(base, Buffer.alloc(4 << 20, 0xab));
    qemuIo("raw", base, ["write -P 0xcd 64k 4k"]);
    const top = file("qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-b", path.basename(base), "-F", "raw", top, "8M"]);
    qemuIo("qcow2", top, WRITES);
    expectSameAsQemu(top, dir);
    const info = (openMedium(top, { readOnly: true }) as Qcow2Backend).info();
    expect(info.backingFile).toBe(path.basename(base));
    expect(info.backingFormat).toBe("raw");
  });

  it("a chain of three qcow2 images across folders, relative names resolved from each image's folder", () => {
    const sub = path.join(dir, "sub");
    fs.mkdirSync(sub, { recursive: true });
    const base = path.join(sub, "base.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "8M"]);
    qemuIo("qcow2", base, ["write -P 0x01 0 8M"]);
    const mid = path.join(dir, "mid.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-b", "sub/base.qcow2", "-F", "qcow2", mid]);
    qemuIo("qcow2", mid, ["write -P 0x02 1m 1m", "write -z 5m 64k"]);
    const top = path.join(sub, "top.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "../mid.qcow2", "-F", "qcow2", top]);
    qemuIo("qcow2", top, ["write -P 0x03 1536k 3k"]);
    expectSameAsQemu(top, dir);
  });

  it("compressed clusters (qemu-img convert -c) read, and partial writes into them copy the cluster out", () => {
    for (const cluster of [4096, 65536]) {
      const src = file("raw");
      const data = Buffer.alloc(4 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 12)) & 0xff & (i % 7 === 0 ? 0 : 0xff);
      fs.writeFileSync(src, data);
      const img = file("qcow2");
      qemuImg(["convert", "-q", "-c", "-O", "qcow2", "-o", `cluster_size=${cluster}`, src, img]);
      expect(qemuImg(["info", img]).out).toMatch(/compressed|qcow2/);
      expectSameAsQemu(img, dir);
      const b = openMedium(img) as Qcow2Backend;
      expect(b.info().compressedClusters).toBeGreaterThan(0);
      b.write(3, [Buffer.alloc(1024, 0xee)]);
      b.discard(cluster / 512, cluster / 512);
      b.close();
      const c = qemuCheck(img);
      expect(c.out).not.toMatch(/ERROR|Leaked/);
      data.fill(0xee, 3 * 512, 5 * 512);
      data.fill(0, cluster, 2 * cluster);
      expect(qemuRaw(img, dir).equals(data)).toBe(true);
    }
  });

  it("refuses encrypted images and external data files with a clear error", () => {
    const enc = file("qcow2");
    // LUKS times its key derivation first (encrypt.iter-time); on a busy machine a short timing can come out
    // unmeasurable ("Unable to get accurate CPU usage"), so a failed attempt is tried again, longer.
    const luks = (ms: number) =>
      qemuImg(
        [
          "create",
          "-q",
          "--object",
          "secret,id=sec0,data=123456",
          "-f",
          "qcow2",
          "-o",
          `encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=${ms}`,
          enc,
          "1M",
        ],
        { mayFail: true },
      );
    let made: number | null = null;
    for (const ms of [100, 500, 2000]) {
      made = luks(ms).status;
      if (made === 0) break;
    }
    expect(made).toBe(0);
    expect(() => openMedium(enc, { readOnly: true })).toThrow(ImageFormatError);
    expect(() => openMedium(enc, { readOnly: true })).toThrow(/encrypted/);
    const ext = file("qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", `data_file=${ext}.data`, ext, "1M"]);
    try {
      openMedium(ext);
      throw new Error("opened");
    } catch (e) {
      expect(e).toBeInstanceOf(ImageFormatError);
      expect((e as ImageFormatError).reason).toBe("external-data-file");
    }
  });
});
