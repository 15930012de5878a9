/**
 * REP INS/OUTS batching of the v86 host, against a stand-in for v86's CPU state (identity paging, flat
 * segments) and a counting device: one string exit per page-bounded pass, exactly the items v86's fast path
 * moves (src/rust/cpu/string.rs: ECX clamped to the end of the destination page), and one exit per item for
 * everything that is not a REP string instruction on the data port.
 */

import { describe, expect, it } from "vitest";
import type { AccessSize, PortIoDevice } from "../../src/hypervisor/bus.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import type { V86Cpu } from "../../src/hosts/v86/internals.ts";
import { V86GuestMemory } from "../../src/hosts/v86/memory.ts";
import { RepStringBatcher, StringIoError } from "../../src/hosts/v86/string-io.ts";

const RAM = 1 << 20;
const PORT = 0x1f0;
const IP = 0x8000;

function fakeCpu(code: number[], regs: { ecx: number; esi?: number; edi?: number }, is32 = true): V86Cpu {
  const wasm_memory = new WebAssembly.Memory({ initial: RAM / 65536 });
  const mem8 = new Uint8Array(wasm_memory.buffer, 0, RAM);
  mem8.set(code, IP);
  const reg32 = new Int32Array(8);
  reg32[1] = regs.ecx;
  reg32[2] = PORT;
  reg32[6] = regs.esi ?? 0;
  reg32[7] = regs.edi ?? 0;
  return {
    mem8,
    wasm_memory,
    memory_size: Uint32Array.of(RAM),
    reg32,
    flags: Int32Array.of(0x2),
    previous_ip: Int32Array.of(IP),
    is_32: Int32Array.of(is32 ? 1 : 0),
    segment_offsets: new Int32Array(8),
    translate_address_system_read: (a: number) => a,
    in_mapped_range: () => false,
    write_blob: (b: Uint8Array, off: number) => mem8.set(b, off),
    device_raise_irq: () => {},
    device_lower_irq: () => {},
    io: undefined as never,
    devices: undefined as never,
  };
}

/** A data port that hands out 1, 2, 3, ... and records what is written to it. */
class CountingPort implements PortIoDevice {
  next = 1;
  written: number[] = [];
  ioRead(_port: number, _size: AccessSize): number {
    return this.next++;
  }
  ioWrite(_port: number, _size: AccessSize, value: number): void {
    this.written.push(value);
  }
}

function setup(code: number[], regs: { ecx: number; esi?: number; edi?: number }, is32 = true) {
  const cpu = fakeCpu(code, regs, is32);
  const hv = new Hypervisor({ memory: new V86GuestMemory(cpu) });
  const dev = new CountingPort();
  hv.bus.register(PORT, 1, dev, "data");
  return { cpu, hv, dev, b: new RepStringBatcher(cpu, hv) };
}

describe("REP INS/OUTS on the v86 host", () => {
  it("REP INSD is one string exit per pass, clamped to the destination page", () => {
    const edi = 0x2000 - 40; // 10 dwords before the page boundary
    const { cpu, hv, b } = setup([0xf3, 0x6d], { ecx: 200, edi });
    const got = Array.from({ length: 10 }, () => b.read(PORT, 4));
    expect(got).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(hv.acct.counts.stringIo).toBe(1);
    expect(hv.acct.counts.pioIn).toBe(0);
    expect(new DataView(cpu.mem8.buffer).getUint32(edi + 36, true)).toBe(10);
    // v86 writes back ECX/EDI and re-executes for the rest: the next pass is the whole next page.
    cpu.reg32[1] = 190;
    cpu.reg32[7] = 0x2000;
    for (let i = 0; i < 190; i++) expect(b.read(PORT, 4)).toBe(11 + i);
    expect(hv.acct.counts.stringIo).toBe(2);
    expect(b.stats).toEqual({ passes: 2, items: 200 });
  });

  it("a plain IN (no REP) is one port exit", () => {
    const { hv, b } = setup([0xed], { ecx: 50 }); // in eax, dx
    expect(b.read(PORT, 4)).toBe(1);
    expect(b.read(PORT, 4)).toBe(2);
    expect(hv.acct.counts).toMatchObject({ pioIn: 2, stringIo: 0 });
  });

  it("16-bit addressing (v86's item-by-item path) stays one exit per item", () => {
    const { hv, b } = setup([0xf3, 0x6d], { ecx: 4, edi: 0x100 }, false); // rep insw in 16-bit code
    for (let i = 0; i < 4; i++) b.read(PORT, 2);
    expect(hv.acct.counts).toMatchObject({ pioIn: 4, stringIo: 0 });
  });

  it("an instruction for another port or another operand size is not batched", () => {
    const other = setup([0xf3, 0x6d], { ecx: 8, edi: 0x100 });
    other.cpu.reg32[2] = 0x170;
    other.b.read(PORT, 4);
    expect(other.hv.acct.counts).toMatchObject({ pioIn: 1, stringIo: 0 });
    const size = setup([0xf3, 0x6d], { ecx: 8, edi: 0x100 }); // REP INSD seen by a 16-bit access
    size.b.read(PORT, 2);
    expect(size.hv.acct.counts).toMatchObject({ pioIn: 1, stringIo: 0 });
  });

  it("REP OUTSW hands the whole pass to the device in one exit and absorbs v86's per-item calls", () => {
    const esi = 0x3000;
    const { cpu, hv, dev, b } = setup([0x66, 0xf3, 0x6f], { ecx: 256, esi });
    const dv = new DataView(cpu.mem8.buffer);
    for (let i = 0; i < 256; i++) dv.setUint16(esi + 2 * i, 0xa000 + i, true);
    for (let i = 0; i < 256; i++) expect(b.write(PORT, 2, 0xa000 + i)).toBe(true);
    expect(dev.written).toEqual(Array.from({ length: 256 }, (_, i) => 0xa000 + i));
    expect(hv.acct.counts).toMatchObject({ pioOut: 0, stringIo: 1 });
  });

  it("an OUTS item that is not the one in memory is refused rather than silently dropped", () => {
    const esi = 0x3000;
    const { cpu, b } = setup([0x66, 0xf3, 0x6f], { ecx: 4, esi });
    new DataView(cpu.mem8.buffer).setUint16(esi, 0x1234, true);
    expect(b.write(PORT, 2, 0x9999)).toBe(false); // first item disagrees: not our pass, single exit instead
    expect(b.write(PORT, 2, 0x1234)).toBe(true);
    expect(() => b.write(PORT, 2, 0x7777)).toThrow(StringIoError);
  });
});
