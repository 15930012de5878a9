/**
 * A PIIX IDE function built without its Bus Master block (`busMaster: false`): PCI IDE Controller Specification
 * 1.0 programming interface bit 7 ("bus master IDE device") reads 0, and BAR4, unimplemented, is hardwired to 0
 * (PCI 3.0 §6.2.5.1: software sizing an unimplemented BAR reads 0 back). The default function is QEMU 7.2's
 * (class dword 01018000h, BAR4 sizing FFFFFFF1h).
 */
import { describe, expect, it } from "vitest";
import { createPc } from "../../src/machine/pc.ts";
import { makeEngine } from "../../src/storage/index.ts";
import { bareHv, patternedDisk } from "./helpers.ts";

const IDE = (reg: number) => (0x80000000 | (1 << 11) | (1 << 8) | reg) >>> 0;

function machine(busMaster: boolean, firmwareInit: boolean) {
  const hv = bareHv();
  const m = createPc({
    hv,
    busMaster,
    firmwareInit,
    primary: { master: { engine: makeEngine(patternedDisk(64), "sync") } },
  });
  const cpu = hv.vcpu(0);
  const rd = (reg: number) => (cpu.outl(0xcf8, IDE(reg)), cpu.inl(0xcfc));
  const wr = (reg: number, v: number) => (cpu.outl(0xcf8, IDE(reg)), cpu.outl(0xcfc, v));
  return { m, cpu, rd, wr };
}

describe("PIIX IDE without a Bus Master block", () => {
  it("prog-if bit 7 clear and BAR4 hardwired to zero; the default keeps QEMU's values", () => {
    const without = machine(false, false);
    expect(without.rd(0x08)).toBe(0x01010000);
    without.wr(0x20, 0xffffffff);
    expect(without.rd(0x20)).toBe(0);
    const withBm = machine(true, false);
    expect(withBm.rd(0x08)).toBe(0x01018000);
    withBm.wr(0x20, 0xffffffff);
    expect(withBm.rd(0x20)).toBe(0xfffffff1);
  });

  it("nothing decodes a Bus Master block, even when software writes a base and enables I/O and mastering", () => {
    const { m, cpu, wr } = machine(false, true);
    expect(m.bmBase).toBeNull();
    wr(0x20, 0xc001);
    wr(0x04, 0x0005);
    expect(m.ide.bmBase).toBe(-1);
    expect(cpu.inb(0xc000)).toBe(0xff); // unclaimed port: all ones
    // The legacy channel still answers: the drive is there (DRDY, DSC).
    expect(cpu.inb(0x1f7) & 0x40).toBe(0x40);
  });
});
