import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import {
  allocPageAligned,
  GuestRam,
  isFault,
  isPageAligned,
  MemoryFault,
  PAGE_SIZE,
} from "../../src/hypervisor/memory.ts";
import { isDirectAligned } from "../../src/storage/aligned.ts";

describe("guest memory", () => {
  const mem = new GuestRam(4 * PAGE_SIZE);

  it("is backed by a SharedArrayBuffer so another thread can share it", () => {
    expect(mem.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(mem.pages).toBe(4);
  });

  it("refuses sizes that are not whole pages", () => {
    expect(() => new GuestRam(PAGE_SIZE + 1)).toThrow(RangeError);
    expect(() => new GuestRam(0)).toThrow(RangeError);
  });

  it("round-trips scalars little-endian", () => {
    expect(mem.writeU32(0x100, 0xdeadbeef)).toBeUndefined();
    expect(mem.readU8(0x100)).toBe(0xef);
    expect(mem.readU16(0x102)).toBe(0xdead);
    expect(mem.readU32(0x100)).toBe(0xdeadbeef);
    expect(mem.writeU64(0x200, 0x0123456789abcdefn)).toBeUndefined();
    expect(mem.readU32(0x200)).toBe(0x89abcdef);
    expect(mem.readU64(0x200)).toBe(0x0123456789abcdefn);
  });

  it("returns a fault value, not an exception, for every access that leaves RAM", () => {
    const end = mem.size;
    const faults = [
      mem.readU8(end),
      mem.readU16(end - 1),
      mem.readU32(end - 3),
      mem.readU64(end - 7),
      mem.writeU8(-1, 0),
      mem.writeU16(end - 1, 0),
      mem.writeU32(end, 0),
      mem.writeU64(end - 4, 0n),
      mem.read(end - 4, new Uint8Array(8)),
      mem.write(end - 4, new Uint8Array(8)),
      mem.view(end - 4, 8),
      mem.view(0.5, 1),
    ];
    for (const f of faults) {
      expect(isFault(f)).toBe(true);
      expect((f as MemoryFault).ramSize).toBe(mem.size);
    }
  });

  it("leaves memory untouched on a faulting write", () => {
    mem.u8.fill(0x5a, mem.size - 4);
    expect(isFault(mem.write(mem.size - 4, new Uint8Array(8)))).toBe(true);
    expect([...mem.u8.subarray(mem.size - 4)]).toEqual([0x5a, 0x5a, 0x5a, 0x5a]);
  });

  it("gives zero-copy views that alias guest RAM", () => {
    const v = mem.view(PAGE_SIZE, 16) as Uint8Array;
    v[3] = 0x77;
    expect(mem.readU8(PAGE_SIZE + 3)).toBe(0x77);
    expect(v.buffer).toBe(mem.buffer);
  });

  it("can wrap an existing shared WebAssembly memory", () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    const m = new GuestRam(65536, { buffer: wasm.buffer });
    m.writeU32(8, 42);
    expect(new Uint32Array(wasm.buffer)[2]).toBe(42);
  });

  it("allocates page-aligned guest ranges and refuses to overcommit", () => {
    const a = mem.allocator(0x10);
    expect(a.alloc(1)).toBe(PAGE_SIZE);
    expect(a.alloc(PAGE_SIZE + 1)).toBe(2 * PAGE_SIZE);
    expect(() => a.alloc(PAGE_SIZE)).toThrow(RangeError);
  });
});

describe("guest RAM is page-aligned by default", () => {
  it("every new Hypervisor's RAM is recorded page-aligned, and storage sees it so", () => {
    const hv = new Hypervisor({ ramSize: 1 << 20 });
    const ram = hv.mem as GuestRam;
    expect(ram.pageAligned).toBe(true);
    expect(isPageAligned(ram.buffer)).toBe(true);
    // The storage layer (which may not import this one) recognises a sector-aligned view of it for O_DIRECT.
    expect(isDirectAligned(ram.u8.subarray(4096, 8192))).toBe(true);
    expect(isDirectAligned(ram.u8.subarray(100, 612))).toBe(false);
    expect(new GuestRam(PAGE_SIZE, { buffer: new SharedArrayBuffer(PAGE_SIZE) }).pageAligned).toBe(false);
    expect(allocPageAligned(1)!.byteLength).toBe(65536);
  });

  // The kernel checks the address: O_DIRECT into memory that is not 512-byte aligned fails with EINVAL. On the
  // repository's disk (a tmpfs refuses O_DIRECT altogether).
  const dir = fileURLToPath(new URL("../../tmp/", import.meta.url));
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `ram-align-${process.pid}.img`);
  let direct = true;
  try {
    fs.writeFileSync(file, new Uint8Array(65536).fill(0xa5));
    fs.closeSync(fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT));
  } catch {
    direct = false;
  }
  if (!direct && process.env.CI === "true") throw new Error("O_DIRECT is required in CI");
  it.skipIf(!direct)(
    `an O_DIRECT read lands at guest address 0 of default RAM${direct ? "" : " (skipped: no O_DIRECT here)"}`,
    () => {
      const ram = new Hypervisor({ ramSize: 1 << 20 }).mem as GuestRam;
      const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
      try {
        expect(fs.readSync(fd, ram.u8, 0, 4096, 0)).toBe(4096);
        expect(ram.readU32(0)).toBe(0xa5a5a5a5);
      } finally {
        fs.closeSync(fd);
        fs.rmSync(file, { force: true });
      }
    },
  );
});
