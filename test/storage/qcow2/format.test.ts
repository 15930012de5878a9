// What xenide refuses in a qcow2 header, and how (an ImageFormatError naming the image and the reason), on
// images made by createQcow2 and then changed byte by byte at the header offsets of QEMU's
// docs/interop/qcow2.txt; format probing and its guard for images probed as raw; backing files that are
// missing or loop. Needs no outside program.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { IoError } from "../../../src/storage/types.ts";
import { makeEngine } from "../../../src/storage/index.ts";
import { openMedium, probeFormat } from "../../../src/storage/open.ts";
import { createQcow2, ImageFormatError, Qcow2Backend } from "../../../src/storage/qcow2/index.ts";
import { getRefcount, setRefcount } from "../../../src/storage/qcow2/refcount.ts";
import { RawImageBackend } from "../../../src/storage/raw.ts";
import { run, tempDir } from "../helpers.ts";

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A fresh 1 MiB v3 image with header bytes at `patches` (offset -> big-endian bytes) replaced. */
function patched(
  patches: [number, number[]][],
  options: Parameters<typeof createQcow2>[1] = { size: 1 << 20 },
): string {
  const img = path.join(dir, `p${n++}.qcow2`);
  createQcow2(img, options);
  const fd = fs.openSync(img, "r+");
  for (const [off, bytes] of patches) fs.writeSync(fd, Buffer.from(bytes), 0, bytes.length, off);
  fs.closeSync(fd);
  return img;
}

function refusal(img: string, readOnly = false): ImageFormatError {
  try {
    openMedium(img, { readOnly }).close();
  } catch (e) {
    expect(e).toBeInstanceOf(ImageFormatError);
    expect((e as Error).message).toContain(img);
    return e as ImageFormatError;
  }
  throw new Error(`${img} opened`);
}

/** A big-endian u64 with bit `b` set. */
const bit64 = (b: number) => [
  ...Buffer.from(
    BigInt.asUintN(64, 1n << BigInt(b))
      .toString(16)
      .padStart(16, "0"),
    "hex",
  ),
];

describe("qcow2 header checks", () => {
  it("a dirty image (incompatible bit 0) opens read-only but not for writing", () => {
    const img = patched([[72, bit64(0)]]);
    expect(refusal(img).reason).toBe("dirty");
    expect(refusal(img).message).toMatch(/qemu-img check -r all/);
    openMedium(img, { readOnly: true }).close();
  });

  it("a corrupt image (bit 1) likewise", () => {
    const img = patched([[72, bit64(1)]]);
    expect(refusal(img).reason).toBe("corrupt");
    openMedium(img, { readOnly: true }).close();
  });

  it("an external data file (bit 2), extended L2 (bit 4), zstd (bit 3 + type 1) and unknown bits are refused", () => {
    expect(refusal(patched([[72, bit64(2)]]), true).reason).toBe("external-data-file");
    expect(refusal(patched([[72, bit64(4)]]), true).message).toMatch(/extended L2/);
    // header_length 112 leaves room for the compression type byte at 104.
    expect(
      refusal(
        patched([
          [72, bit64(3)],
          [100, [0, 0, 0, 112]],
          [104, [1]],
        ]),
        true,
      ).message,
    ).toMatch(/zstd/);
    expect(refusal(patched([[72, bit64(9)]]), true).message).toMatch(/unsupported qcow2 feature\(s\): bit 9/);
  });

  it("encryption (crypt_method 1, AES) is refused", () => {
    const e = refusal(patched([[32, [0, 0, 0, 1]]]), true);
    expect(e.reason).toBe("encrypted");
  });

  it("internal snapshots: readable, not writable", () => {
    const img = patched([[60, [0, 0, 0, 1]]]);
    expect(refusal(img).message).toMatch(/internal snapshot/);
    openMedium(img, { readOnly: true }).close();
  });

  it.each([
    [[[20, [0, 0, 0, 8]]], /cluster_bits 8/],
    [[[20, [0, 0, 0, 22]]], /cluster_bits 22/],
    [[[96, [0, 0, 0, 7]]], /refcount_order 7/],
    [[[4, [0, 0, 0, 4]]], /version 4/],
    [[[0, [0x51, 0x46, 0x49, 0xfc]]], /not a qcow2 image/],
    [[[36, [0, 0, 0, 0]]], /L1 table of 0 entries is too small/],
  ] as [number, number[]][][][])("a bad header field is refused: %j", (patches, msg) => {
    const img = patched(patches as unknown as [number, number[]][]);
    const e = (() => {
      try {
        Qcow2Backend.open(img, { readOnly: true });
      } catch (err) {
        return err as Error;
      }
      return new Error("opened");
    })();
    expect(e).toBeInstanceOf(ImageFormatError);
    expect(e.message).toMatch(msg as unknown as RegExp);
  });

  it("refcount entries of every width pack as QEMU's get_refcount_ro0..ro6", () => {
    for (let order = 0; order <= 6; order++) {
      const block = new Uint8Array(64);
      const max = order === 6 ? 2 ** 40 : 2 ** (1 << order) - 1;
      setRefcount(block, order, 3, max);
      setRefcount(block, order, 2, 1);
      expect([
        getRefcount(block, order, 2),
        getRefcount(block, order, 3),
        getRefcount(block, order, 4),
      ]).toEqual([1, max, 0]);
    }
    // 1-bit entries: entry 3 is bit 3 of byte 0 (least significant first); 16-bit entries are big-endian.
    const b1 = new Uint8Array(1);
    setRefcount(b1, 0, 3, 1);
    expect(b1[0]).toBe(0b1000);
    const b16 = new Uint8Array(4);
    setRefcount(b16, 4, 1, 0x1234);
    expect([...b16]).toEqual([0, 0, 0x12, 0x34]);
  });
});

describe("format probing and backing files", () => {
  it("probes qcow2 by its magic and version, raw otherwise", () => {
    const q = patched([]);
    expect(probeFormat(q)).toBe("qcow2");
    const raw = path.join(dir, "r.img");
    fs.writeFileSync(raw, Buffer.alloc(4096));
    expect(probeFormat(raw)).toBe("raw");
    expect(openMedium(q, { readOnly: true })).toBeInstanceOf(Qcow2Backend);
    const r = openMedium(raw, { readOnly: true });
    expect(r).toBeInstanceOf(RawImageBackend);
    r.close();
  });

  it("a guest may not write a qcow2 header into sector 0 of an image probed as raw; with format raw it may", async () => {
    const raw = path.join(dir, "guest.img");
    fs.writeFileSync(raw, Buffer.alloc(8192));
    const header = fs.readFileSync(patched([])).subarray(0, 512);
    const probed = openMedium(raw);
    expect(() => probed.write(0, [header])).toThrow(IoError);
    expect(() => probed.write(0, [header])).toThrow(/probed as raw/);
    probed.write(1, [header]); // elsewhere is fine
    probed.write(0, [Buffer.alloc(512, 1)]);
    probed.close();
    expect(fs.readFileSync(raw).subarray(0, 4).equals(Buffer.alloc(4, 1))).toBe(true);
    // The async engine's path (startIo) refuses it the same way.
    const again = openMedium(raw);
    const engine = makeEngine(again, "async");
    const done = await run(engine, { op: "write", tag: 1, sector: 0, bufs: [header] });
    expect(done.error?.message).toMatch(/probed as raw/);
    again.close();
    const named = openMedium(raw, { format: "raw" });
    named.write(0, [header]);
    named.close();
    expect(probeFormat(raw)).toBe("qcow2");
  });

  it("a missing backing file and backing chains that loop are refused", () => {
    const missing = path.join(dir, "m.qcow2");
    createQcow2(missing, { size: 1 << 20, backingFile: "nowhere.img", backingFormat: "raw" });
    expect(() => openMedium(missing, { readOnly: true })).toThrow(/nowhere\.img/);
    const loop = path.join(dir, "loop.qcow2");
    createQcow2(loop, { size: 1 << 20, backingFile: "loop.qcow2", backingFormat: "qcow2" });
    expect(() => openMedium(loop, { readOnly: true })).toThrow(/loops back to/);
    const a = path.join(dir, "a.qcow2");
    const b = path.join(dir, "b.qcow2");
    createQcow2(a, { size: 1 << 20, backingFile: "b.qcow2", backingFormat: "qcow2" });
    createQcow2(b, { size: 1 << 20, backingFile: "a.qcow2", backingFormat: "qcow2" });
    expect(() => openMedium(a, { readOnly: true })).toThrow(ImageFormatError);
  });

  it("the base is opened read-only and locked for reading; the overlay's writes never reach it", () => {
    const base = path.join(dir, "b.img");
    fs.writeFileSync(base, Buffer.alloc(1 << 20, 0x61));
    const top = path.join(dir, "t.qcow2");
    createQcow2(top, { size: 2 << 20, clusterSize: 4096, backingFile: "b.img", backingFormat: "raw" });
    const m = openMedium(top) as Qcow2Backend;
    expect(m.backing?.readOnly).toBe(true);
    m.write(1, [Buffer.alloc(512, 0x62)]);
    const got = Buffer.alloc(4096 * 2);
    m.read(0, [got]);
    // Sector 1 new, the rest of cluster 0 copied from the base; past the base's end zeroes.
    expect(got.subarray(0, 512).every((b) => b === 0x61)).toBe(true);
    expect(got.subarray(512, 1024).every((b) => b === 0x62)).toBe(true);
    expect(got.subarray(1024).every((b) => b === 0x61)).toBe(true);
    const tail = Buffer.alloc(512, 9);
    m.read((2 << 20) / 512 - 1, [tail]);
    expect(tail.every((b) => b === 0)).toBe(true);
    // Another writer of the base is refused while the overlay is open.
    expect(() => openMedium(base, { format: "raw" })).toThrow(/in use/);
    m.close();
    expect(fs.readFileSync(base).every((b) => b === 0x61)).toBe(true);
  });
});
