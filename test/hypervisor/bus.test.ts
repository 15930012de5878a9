import { describe, expect, it } from "vitest";
import { type AccessSize, PortBus, PortConflictError, type PortIoDevice } from "../../src/hypervisor/bus.ts";

class Scratch implements PortIoDevice {
  regs = new Map<number, number>();
  writes: [number, number, number][] = [];
  ioRead(port: number, size: AccessSize): number {
    return this.regs.get(port) ?? 0x12345678 & (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1);
  }
  ioWrite(port: number, size: AccessSize, value: number): void {
    this.writes.push([port, size, value]);
    this.regs.set(port, value);
  }
}

describe("port I/O bus", () => {
  it("dispatches to the owner of the port with the access size", () => {
    const bus = new PortBus();
    const d = new Scratch();
    bus.register(0x1f0, 8, d, "ide0");
    bus.write(0x1f2, 1, 0x1ff); // wider than a byte: masked to the access size
    expect(d.writes).toEqual([[0x1f2, 1, 0xff]]);
    expect(bus.read(0x1f2, 1)).toBe(0xff);
    bus.write(0x1f0, 4, 0xfedcba98);
    expect(bus.read(0x1f0, 4)).toBe(0xfedcba98);
    expect(bus.nameAt(0x1f7)).toBe("ide0");
    expect(bus.nameAt(0x1f8)).toBeUndefined();
  });

  it("refuses any overlapping registration and names the owner", () => {
    const bus = new PortBus();
    bus.register(0x1f0, 8, new Scratch(), "ide0");
    expect(() => bus.register(0x1f7, 2, new Scratch(), "other")).toThrow(PortConflictError);
    expect(() => bus.register(0x1e8, 9, new Scratch(), "other")).toThrow(/owned by ide0/);
    // The refused claim took nothing: the ports next to the range are still free.
    bus.register(0x1f8, 1, new Scratch(), "neighbour");
    bus.register(0x1e8, 8, new Scratch(), "below");
  });

  it("refuses ranges outside the 64 KiB port space", () => {
    const bus = new PortBus();
    expect(() => bus.register(0xffff, 2, new Scratch(), "x")).toThrow(RangeError);
    expect(() => bus.register(0x10, 0, new Scratch(), "x")).toThrow(RangeError);
  });

  it("reads all-ones from an unclaimed port and drops writes", () => {
    const bus = new PortBus();
    expect(bus.read(0x80, 1)).toBe(0xff);
    expect(bus.read(0x80, 2)).toBe(0xffff);
    expect(bus.read(0x80, 4)).toBe(0xffffffff);
    expect(() => bus.write(0x80, 1, 0)).not.toThrow();
  });

  it("frees a range on unregister so it can be claimed again (a PCI BAR moving)", () => {
    const bus = new PortBus();
    bus.register(0xc000, 16, new Scratch(), "bm");
    expect(bus.unregister(0xc001)).toBe(false);
    expect(bus.unregister(0xc000)).toBe(true);
    expect(bus.read(0xc000, 1)).toBe(0xff);
    bus.register(0xc000, 16, new Scratch(), "bm2");
  });
});
