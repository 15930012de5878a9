/**
 * A disk that fails part-way through a transfer (the path's read or write throws at its third chunk): one
 * line, exit 1, and for `read -o FILE` no partial FILE, an existing FILE unchanged and no temporary file.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { IoError } from "../../src/storage/types.ts";
import { cli } from "./in-process.ts";

const calls = { read: 0, write: 0 };

vi.mock("../../src/cli/disk-options.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../src/cli/disk-options.ts")>();
  return {
    ...real,
    openDisk: async (...args: Parameters<typeof real.openDisk>) => {
      const disk = await real.openDisk(...args);
      const path = disk.path;
      const read = path.read.bind(path);
      const write = path.write.bind(path);
      path.read = (lba, count) => {
        if (++calls.read === 3)
          return Promise.reject(new IoError("EIO", `injected read failure at sector ${lba}`, lba));
        return read(lba, count);
      };
      path.write = (lba, data) => {
        if (++calls.write === 3)
          return Promise.reject(new IoError("EIO", `injected write failure at sector ${lba}`, lba));
        return write(lba, data);
      };
      return disk;
    },
  };
});

const dir = mkdtempSync(join(tmpdir(), "xenide-fault-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function image(name: string): string {
  const p = join(dir, name);
  const b = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + (i >> 9)) & 0xff;
  writeFileSync(p, b);
  return p;
}

describe("a disk that fails mid-transfer", () => {
  it("read -o FILE: one line, exit 1, FILE as it was, no temporary file", async () => {
    const img = image("r.img");
    const out = join(dir, "out.bin");
    writeFileSync(out, "before");
    calls.read = 0;
    const r = await cli("read", img, "--lba", "0", "--count", String(5 * 2048), "--via", "dma", "-o", out);
    expect(calls.read).toBe(3);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("xenide: injected read failure at sector 4096\n");
    expect(r.stdout.toString()).toBe("");
    expect(readFileSync(out, "utf8")).toBe("before");
    expect(readdirSync(dir).filter((f) => f.includes("xenide-partial"))).toEqual([]);
  });

  it("write -i FILE: one line, exit 1, the chunks before the failure written", async () => {
    const img = image("w.img");
    const input = join(dir, "in.bin");
    const data = Buffer.alloc(3 * 1024 * 1024, 0xa5);
    writeFileSync(input, data);
    calls.write = 0;
    const r = await cli("write", img, "--lba", "0", "-i", input, "--via", "pv");
    expect(calls.write).toBe(3);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("xenide: injected write failure at sector 4096\n");
    expect(
      readFileSync(img)
        .subarray(0, 2 * 1024 * 1024)
        .equals(data.subarray(0, 2 * 1024 * 1024)),
    ).toBe(true);
  });
});
