/**
 * QEMU's fw_cfg on the "qemu-7.2" PC (src/machine/fw-cfg.ts). Every expected byte below was read from Debian's
 * QEMU 7.2 (`-machine pc -accel qtest -nodefaults -m 128M`, qtest `in`/`out` and `write`/`read` at 0x510-0x51C);
 * test/differential/qemu-profile.test.ts compares the same accesses with QEMU itself where it is installed.
 */
import { describe, expect, it } from "vitest";

import { buildMachine } from "../../src/machine/builder.ts";
import {
  FW_CFG_DMA_CTL_ERROR,
  FW_CFG_DMA_CTL_READ,
  FW_CFG_DMA_CTL_SELECT,
  FW_CFG_DMA_CTL_SKIP,
  FW_CFG_DMA_CTL_WRITE,
  e820Table,
} from "../../src/machine/fw-cfg.ts";

const MiB = 1024 * 1024;

function pc(ram = 128 * MiB, compat: "qemu-7.2" | "xenide" = "qemu-7.2") {
  const m = buildMachine({ ram, compat });
  return { m, v: m.hv.vcpu(0), mem: m.hv.mem };
}

/** Select `key` and read `n` data bytes. */
function item(v: ReturnType<typeof pc>["v"], key: number, n: number): number[] {
  v.outw(0x510, key);
  return Array.from({ length: n }, () => v.inb(0x511));
}

/** Run an FWCfgDmaAccess at `at` (control, length, address), as a guest does: BE halves to 0x514 and 0x518. */
function dma(t: ReturnType<typeof pc>, at: number, control: number, length: number, address: number): number {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(control >>> 0, 0);
  b.writeUInt32BE(length, 4);
  b.writeBigUInt64BE(BigInt(address), 8);
  t.mem.write(at, b);
  t.v.outl(0x514, 0); // high half 0 (big-endian on the port)
  t.v.outl(0x518, swap32(at));
  const back = Buffer.alloc(4);
  t.mem.read(at, back);
  return back.readUInt32BE(0);
}

function swap32(v: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b.readUInt32LE(0);
}

describe("fw_cfg (QEMU 7.2's pc, observed)", () => {
  it("selects the signature at power-on; items as QEMU's pc has them", () => {
    const t = pc();
    const { v } = t;
    expect([v.inb(0x511), v.inb(0x511)]).toEqual([0x51, 0x45]); // "QE": reset selects FW_CFG_SIGNATURE
    expect(item(v, 0x00, 6)).toEqual([0x51, 0x45, 0x4d, 0x55, 0, 0]); // "QEMU", then 0 past the end
    expect(item(v, 0x01, 4)).toEqual([3, 0, 0, 0]); // FW_CFG_ID: traditional interface and DMA
    expect(item(v, 0x03, 8)).toEqual([0, 0, 0, 8, 0, 0, 0, 0]); // FW_CFG_RAM_SIZE 128 MiB, little-endian
    expect(item(v, 0x05, 2)).toEqual([1, 0]); // FW_CFG_NB_CPUS
    expect(item(v, 0x0f, 2)).toEqual([1, 0]); // FW_CFG_MAX_CPUS
    expect(item(v, 0x8002, 4)).toEqual([1, 0, 0, 0]); // FW_CFG_IRQ0_OVERRIDE
    expect(item(v, 0x8004, 13)).toEqual([1, 0x01, 0xa2, 0x86, 0x80, 0, 0, 0xd0, 0xfe, 0, 0, 0, 0]); // HPET
    expect(item(v, 0x4003, 4)).toEqual([0, 0, 0, 8]); // the write-channel bit selects the same item
    expect(item(v, 0x02, 16)).toEqual(new Array(16).fill(0)); // UUID: zeros, as an item that does not exist
    expect(item(v, 0x7777, 2)).toEqual([0, 0]);
    expect(item(pc(512 * MiB).v, 0x03, 8)).toEqual([0, 0, 0, 0x20, 0, 0, 0, 0]);
  });

  it("the file directory: QEMU's selectors, sizes and bytes for the files it lists", () => {
    const { v } = pc();
    v.outw(0x510, 0x19);
    const count = [0, 1, 2, 3].reduce((n) => n * 256 + v.inb(0x511), 0);
    const files = new Map<string, { size: number; select: number }>();
    for (let i = 0; i < count; i++) {
      const e = Buffer.from(Array.from({ length: 64 }, () => v.inb(0x511)));
      files.set(e.toString("latin1", 8).replace(/\0+$/, ""), {
        size: e.readUInt32BE(0),
        select: e.readUInt16BE(4),
      });
    }
    // QEMU 7.2 lists these with the same selector and size (and 6 more this machine does not build: ACPI, SMBIOS,
    // table loader, option ROM).
    expect(Object.fromEntries(files)).toEqual({
      "bios-geometry": { size: 0, select: 0x20 },
      bootorder: { size: 0, select: 0x21 },
      "etc/boot-fail-wait": { size: 4, select: 0x24 },
      "etc/e820": { size: 40, select: 0x25 },
      "etc/system-states": { size: 6, select: 0x28 },
      "etc/tpm/log": { size: 0, select: 0x2a },
    });
    expect(item(v, 0x24, 4)).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect(item(v, 0x28, 6)).toEqual([0x80, 0, 0, 0x81, 0x82, 0x80]);
    // etc/e820: the AMD HyperTransport hole reserved, then RAM from 0.
    expect(Buffer.from(item(v, 0x25, 40)).toString("hex")).toBe(
      "00000000fd000000" +
        "0000000003000000" +
        "02000000" +
        "0000000000000000" +
        "0000000800000000" +
        "01000000",
    );
  });

  it("e820 with 3.5 GiB or more: RAM below 4 GiB stops at 3 GiB, the rest above 4 GiB (QEMU's -m 4G)", () => {
    const t = Buffer.from(e820Table(4 * 1024 * MiB));
    expect(t.length).toBe(60);
    expect(t.subarray(20, 40).toString("hex")).toBe("0000000000000000" + "000000c000000000" + "01000000");
    expect(t.subarray(40, 60).toString("hex")).toBe("0000000001000000" + "0000004000000000" + "01000000");
  });

  it("access widths at every port as QEMU 7.2 answers them", () => {
    const { v } = pc();
    v.outw(0x510, 0);
    expect(v.inb(0x510)).toBe(0x51); // an 8-bit read of the selector port reads data
    expect(v.inw(0x510)).toBe(0); // wider reads there are refused
    expect(v.inl(0x510)).toBe(0);
    expect(v.inw(0x511)).toBe(0xff45); // data byte, then unassigned 0x512
    expect(v.inl(0x511)).toBe(0x51ffff4d); // ... 0x513, then the DMA register's first byte
    v.outb(0x510, 1); // byte writes select nothing
    v.outl(0x510, 1);
    v.outw(0x511, 1);
    expect(v.inb(0x511)).toBe(0x55); // "QEMU"'s last byte: still the signature
    expect(v.inb(0x514)).toBe(0x51);
    expect(v.inw(0x514)).toBe(0x4551);
    expect(v.inl(0x514)).toBe(0x554d4551); // "QEMU CFG", big-endian by address
    expect(v.inl(0x518)).toBe(0x47464320);
    expect(v.inb(0x51b)).toBe(0x47);
    expect([v.inb(0x51c), v.inb(0x512), v.inw(0x512)]).toEqual([0xff, 0xff, 0xffff]);
  });

  it("DMA: select and read, zeros past the end, skip, a refused write, a transfer outside RAM", () => {
    const t = pc();
    t.mem.write(0x10ff, Buffer.alloc(8, 0xaa));
    expect(dma(t, 0x2000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 6, 0x10ff)).toBe(0);
    const got = Buffer.alloc(8);
    t.mem.read(0x10ff, got);
    expect(got.toString("hex")).toBe("51454d550000aaaa"); // "QEMU", two zeros past its end, the rest untouched
    // Select RAM_SIZE, skip 4 bytes, read the rest: the port then continues after it.
    expect(dma(t, 0x2000, (0x03 << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP, 4, 0)).toBe(0);
    expect(t.v.inb(0x511)).toBe(0);
    expect(dma(t, 0x2000, (0x03 << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_WRITE, 8, 0x3000)).toBe(
      FW_CFG_DMA_CTL_ERROR,
    );
    // A read into memory beyond RAM is an error and writes nothing (QEMU: dma_memory_write fails).
    expect(dma(t, 0x2000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 0x7fffff0 + 0x20)).toBe(
      FW_CFG_DMA_CTL_ERROR,
    );
    // Control without read, write or skip moves nothing and reports success.
    expect(dma(t, 0x2000, FW_CFG_DMA_CTL_ERROR, 4, 0x3000)).toBe(0);
  });

  it("a reset selects the signature again; the xenide profile has no fw_cfg", () => {
    const t = pc();
    item(t.v, 0x03, 3);
    t.m.pc!.reset();
    expect(t.v.inb(0x511)).toBe(0x51);
    expect(pc(128 * MiB, "xenide").v.inb(0x511)).toBe(0xff);
  });
});
