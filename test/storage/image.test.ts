import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { ImageError } from "../../src/storage/errors.ts";
import { createImage, parseByteSize, parseSize } from "../../src/storage/image.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { pattern, tempDir } from "./helpers.ts";

/** Debian's qemu-img (package qemu-utils), when installed. */
const qemuImg = ["/usr/bin/qemu-img", "/usr/local/bin/qemu-img"].find((p) => fs.existsSync(p));

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ImageError);
    return (e as ImageError).code;
  }
  return undefined;
}

describe("parseSize", () => {
  it("takes plain bytes and K/M/G/T/P/E suffixes as powers of 1024, B as bytes, fractions with a suffix (qemu_strtosz)", () => {
    expect(parseSize("512")).toBe(512);
    expect(parseSize("512B")).toBe(512);
    expect(parseSize("1k")).toBe(1024);
    expect(parseSize("64M")).toBe(64 * 1024 * 1024);
    expect(parseSize("64MiB")).toBe(64 * 1024 * 1024);
    expect(parseSize("2G")).toBe(2 * 1024 ** 3);
    expect(parseSize("1T")).toBe(1024 ** 4);
    expect(parseSize("2P")).toBe(2 * 1024 ** 5);
    expect(parseSize("1.5M")).toBe(1.5 * 1024 * 1024);
    expect(parseSize("1.5G")).toBe(1536 * 1024 * 1024);
    expect(parseSize("0.25t")).toBe(256 * 1024 ** 3);
    expect(parseSize(" 3 M ")).toBe(3 * 1024 * 1024);
    expect(parseByteSize("0.001E")).toBe(1152921504606846); // 2^60 / 1000, the fraction of a byte cut off
    expect(() => parseByteSize("1E")).toThrow(/too large/); // 2^60 bytes: past 2^53
  });

  it("refuses malformed, zero, huge, fractional-byte and non-sector sizes with a typed error", () => {
    for (const bad of [
      "",
      "M",
      "abc",
      "1.5",
      "1.5B",
      ".5M",
      "-1M",
      "64X",
      "0",
      "0M",
      "100",
      "513",
      "99999999999T",
      "8E",
      "1.3K",
    ]) {
      expect(
        code(() => parseSize(bad)),
        bad,
      ).toBe("EBADSIZE");
    }
  });

  it("parseByteSize has no sector rule: any whole number of bytes", () => {
    expect(parseByteSize("1")).toBe(1);
    expect(parseByteSize("1.001K")).toBe(1025);
    expect(parseByteSize("0")).toBe(0);
  });

  it.skipIf(!qemuImg && process.env.CI !== "true")(
    "agrees with qemu-img create on the sizes it takes",
    () => {
      if (!qemuImg) throw new Error("qemu-img is missing (Debian package qemu-utils)");
      for (const text of ["1.5M", "3k", "2.25M", "1G", "512B"]) {
        const img = path.join(dir, `q-${text}.img`);
        execFileSync(qemuImg, ["create", "-q", "-f", "raw", img, text]);
        expect(parseSize(text), text).toBe(fs.statSync(img).size);
      }
    },
  );
});

describe("createImage", () => {
  it("creates a sparse image of the requested size", () => {
    const img = path.join(dir, "sparse.img");
    createImage(img, 64 * 1024 * 1024);
    const st = fs.statSync(img);
    expect(st.size).toBe(64 * 1024 * 1024);
    // st.blocks counts 512-byte units actually allocated: a sparse file has (almost) none.
    expect(st.blocks * 512).toBeLessThanOrEqual(64 * 1024);
    const b = RawImageBackend.open(img);
    expect(b.sectorCount).toBe(131072);
    const buf = pattern(512, 3);
    b.read(131071, [buf]);
    expect(buf).toEqual(new Uint8Array(512));
    b.close();
  });

  it("refuses to overwrite an existing file, leaving it untouched", () => {
    const img = path.join(dir, "exists.img");
    fs.writeFileSync(img, pattern(2048, 5));
    expect(code(() => createImage(img, 4096))).toBe("EEXIST");
    expect(new Uint8Array(fs.readFileSync(img))).toEqual(pattern(2048, 5));
  });

  it("overwrites with force", () => {
    const img = path.join(dir, "forced.img");
    fs.writeFileSync(img, pattern(2048, 5));
    createImage(img, 8192, { force: true });
    expect(new Uint8Array(fs.readFileSync(img))).toEqual(new Uint8Array(8192));
  });

  it("refuses to overwrite an image a live writer holds, even with force", () => {
    const img = path.join(dir, "busy.img");
    createImage(img, 4096);
    const b = RawImageBackend.open(img);
    try {
      expect(code(() => createImage(img, 8192, { force: true }))).toBe("ELOCKED");
      expect(fs.statSync(img).size).toBe(4096);
    } finally {
      b.close();
    }
  });

  it("refuses sizes that are not whole sectors", () => {
    expect(code(() => createImage(path.join(dir, "bad.img"), 1000))).toBe("EBADSIZE");
    expect(code(() => createImage(path.join(dir, "bad.img"), 0))).toBe("EBADSIZE");
    expect(fs.existsSync(path.join(dir, "bad.img"))).toBe(false);
  });
});

describe("opening images", () => {
  it("refuses a file whose size is not a multiple of 512", () => {
    const img = path.join(dir, "odd.img");
    fs.writeFileSync(img, new Uint8Array(1000));
    expect(code(() => RawImageBackend.open(img))).toBe("EBADSIZE");
  });

  it("refuses a missing file and a directory", () => {
    expect(code(() => RawImageBackend.open(path.join(dir, "missing.img")))).toBe("EOPEN");
    expect(code(() => RawImageBackend.open(dir))).toBe("EOPEN");
  });

  it("refuses memory contents that are not whole sectors", () => {
    expect(code(() => new MemoryBackend(new Uint8Array(100)))).toBe("EBADSIZE");
    expect(code(() => new MemoryBackend(-1))).toBe("EBADSIZE");
  });

  it("maps errors of a closed backend to IoError", () => {
    const img = path.join(dir, "closed.img");
    createImage(img, 4096);
    const b = RawImageBackend.open(img);
    b.close();
    expect(() => b.read(0, [new Uint8Array(512)])).toThrow(expect.objectContaining({ name: "IoError" }));
  });
});
