/**
 * PCI configuration mechanism #1 and the PIIX3 IDE function's configuration space, against the values QEMU 7.2
 * reports for `-machine pc` (qemu-ide-observed §4.0) and the PCI Local Bus Specification 2.1 §3.7.4.1.
 */
import { describe, expect, it } from "vitest";
import { GuestRam, PortBus } from "../../src/hypervisor/index.ts";
import { createPc } from "../../src/machine/pc.ts";
import { PiixIde } from "../../src/ide/piix.ts";
import { makeEngine } from "../../src/storage/index.ts";
import { bareHv, pattern, patternedDisk } from "./helpers.ts";

function cfgAddr(dev: number, fn: number, reg: number): number {
  return (0x80000000 | (dev << 11) | (fn << 8) | reg) >>> 0;
}

describe("PCI configuration space", () => {
  const setup = (firmwareInit = false) => {
    const hv = bareHv();
    const m = createPc({
      hv,
      firmwareInit,
      primary: { master: { engine: makeEngine(patternedDisk(2048), "sync") } },
    });
    const cpu = hv.vcpu(0);
    const rd = (dev: number, fn: number, reg: number) => {
      cpu.outl(0xcf8, cfgAddr(dev, fn, reg));
      return cpu.inl(0xcfc);
    };
    const wr = (dev: number, fn: number, reg: number, v: number) => {
      cpu.outl(0xcf8, cfgAddr(dev, fn, reg));
      cpu.outl(0xcfc, v);
    };
    return { hv, m, cpu, rd, wr };
  };

  it("bus 0 functions: i440FX 00:00.0, PIIX3 ISA 00:01.0, PIIX3 IDE 00:01.1 (QEMU §4.0)", () => {
    const { rd } = setup();
    expect(rd(0, 0, 0)).toBe(0x12378086);
    expect(rd(0, 0, 8)).toBe(0x06000002);
    expect(rd(1, 0, 0)).toBe(0x70008086);
    expect(rd(1, 0, 8) >>> 8).toBe(0x060100);
    expect((rd(1, 0, 0x0c) >>> 16) & 0xff).toBe(0x80); // multi-function header
    expect(rd(1, 1, 0)).toBe(0x70108086);
    expect(rd(2, 0, 0)).toBe(0xffffffff); // nothing at 00:02.0
    expect(rd(1, 2, 0)).toBe(0xffffffff);
  });

  it("IDE function config 0x00-0x4f at reset equals QEMU's dump (QEMU §4.0)", () => {
    const { rd } = setup();
    const dump = Array.from({ length: 20 }, (_, i) => rd(1, 1, i * 4));
    expect(dump).toEqual([
      0x70108086, 0x02800000, 0x01018000, 0, 0, 0, 0, 0, 0x00000001, 0, 0, 0x11001af4, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });

  it("BAR4 sizing reads 0xfffffff1; BARs 0-3 are fixed at 0 in legacy mode", () => {
    const { rd, wr } = setup();
    wr(1, 1, 0x20, 0xffffffff);
    expect(rd(1, 1, 0x20)).toBe(0xfffffff1);
    wr(1, 1, 0x10, 0xffffffff);
    expect(rd(1, 1, 0x10)).toBe(0);
    wr(1, 1, 0x30, 0xffffffff);
    expect(rd(1, 1, 0x30)).toBe(0); // no expansion ROM
  });

  it("byte and word accesses to 0xCFC-0xCFF, enable bit, CONFIG_ADDRESS readback", () => {
    const { cpu, rd } = setup();
    cpu.outl(0xcf8, cfgAddr(1, 1, 0));
    expect(cpu.inl(0xcf8)).toBe(cfgAddr(1, 1, 0));
    expect(cpu.inb(0xcfc)).toBe(0x86);
    expect(cpu.inb(0xcfd)).toBe(0x80);
    expect(cpu.inw(0xcfe)).toBe(0x7010);
    cpu.outl(0xcf8, cfgAddr(1, 1, 8));
    expect(cpu.inb(0xcfe)).toBe(0x01); // sub-class
    expect(cpu.inb(0xcff)).toBe(0x01); // class
    expect(cpu.inb(0xcfd)).toBe(0x80); // prog-if
    // Enable bit clear: no configuration cycle; reads float high, writes are dropped.
    cpu.outl(0xcf8, (1 << 11) | (1 << 8) | 0x04);
    expect(cpu.inl(0xcfc)).toBe(0xffffffff);
    cpu.outw(0xcfc, 0x0005);
    expect(rd(1, 1, 4) & 0xffff).toBe(0);
    // Byte write to the command register through 0xCFC.
    cpu.outl(0xcf8, cfgAddr(1, 1, 4));
    cpu.outb(0xcfc, 0x05);
    expect(rd(1, 1, 4)).toBe(0x02800005);
  });

  it("IDETIM 0x40/0x42 are stored; command register keeps I/O, memory, master, INTx-disable", () => {
    const { rd, wr, cpu } = setup();
    cpu.outl(0xcf8, cfgAddr(1, 1, 0x40));
    cpu.outw(0xcfc, 0x8000);
    cpu.outw(0xcfe, 0xa307);
    expect(rd(1, 1, 0x40)).toBe(0xa3078000);
    wr(1, 1, 4, 0xffff);
    expect(rd(1, 1, 4) & 0xffff).toBe(0x0407);
  });

  it("BAR4 decodes only with I/O space enabled, and moves with the BAR", () => {
    const { cpu, wr } = setup();
    wr(1, 1, 0x20, 0xc001);
    expect(cpu.inb(0xc002)).toBe(0xff); // I/O decode off: floating bus
    wr(1, 1, 4, 0x0001);
    expect(cpu.inb(0xc002)).toBe(0x00);
    expect(cpu.inb(0xc001)).toBe(0xff);
    wr(1, 1, 0x20, 0xd041);
    expect(cpu.inb(0xc002)).toBe(0xff);
    expect(cpu.inb(0xd042)).toBe(0x00);
    wr(1, 1, 4, 0x0000);
    expect(cpu.inb(0xd042)).toBe(0xff);
    // A BAR over the legacy task file is refused, not a crash; the task file keeps working.
    wr(1, 1, 0x20, 0x1f1);
    wr(1, 1, 4, 0x0001);
    expect(cpu.inb(0x3f6)).toBe(0x50);
  });

  it("firmwareInit leaves the state SeaBIOS does: BAR4 0xc000, command I/O|master, IDETIM decode", () => {
    const { rd, cpu } = setup(true);
    expect(rd(1, 1, 0x20)).toBe(0xc001);
    expect(rd(1, 1, 4) & 0xffff).toBe(0x0005);
    expect(rd(1, 1, 0x40)).toBe(0x80008000);
    expect(cpu.inb(0xc002)).toBe(0x00);
  });
});

describe("PiixIde on a foreign host", () => {
  it("registers its ports on the given bus, signals interrupts through a callback, DMA through GuestMemory", async () => {
    const bus = new PortBus();
    const mem = new GuestRam(1 << 20);
    const lines: [number, boolean][] = [];
    const ide = new PiixIde({
      bus,
      mem,
      irq: (line, level) => lines.push([line, level]),
      secondary: { master: { engine: makeEngine(patternedDisk(64), "sync") } },
    });
    expect(bus.nameAt(0x170)).toBe("ide1-cmd");
    expect(bus.nameAt(0x376)).toBe("ide1-ctl");
    expect(bus.nameAt(0x1f0)).toBe("ide0-cmd");
    expect(bus.read(0x1f7, 1)).toBe(0); // empty primary
    ide.configWrite(0x20, 4, 0xc041);
    ide.configWrite(0x04, 2, 0x0005);
    expect(ide.bmBase).toBe(0xc040);
    // READ DMA of sector 3 on the secondary master through the secondary BM block (+8).
    mem.writeU32(0x1000, 0x2000);
    mem.writeU32(0x1004, 0x80000200);
    bus.write(0xc04c, 4, 0x1000);
    bus.write(0x176, 1, 0xe0);
    bus.write(0x172, 1, 1);
    bus.write(0x173, 1, 3);
    bus.write(0x174, 1, 0);
    bus.write(0x175, 1, 0);
    bus.write(0x177, 1, 0xc8);
    bus.write(0xc048, 1, 0x09);
    expect(bus.read(0xc04a, 1)).toBe(0x04);
    expect(lines).toEqual([[15, true]]);
    const got = new Uint8Array(512);
    mem.read(0x2000, got);
    expect(got).toEqual(pattern(3));
    expect(bus.read(0x177, 1)).toBe(0x50);
    expect(lines).toEqual([
      [15, true],
      [15, false],
    ]);
  });
});
