import { describe, expect, it } from "vitest";
import { GuestRam, isFault, MemoryFault, PAGE_SIZE } from "../../src/hypervisor/memory.ts";

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
