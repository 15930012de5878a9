/**
 * Machine reset (QEMU 7.2's qemu_system_reset for the pc machine; PIIX3's Reset Control register at 0xCF9):
 * every PCI function back to its reset configuration, the IDE channels, drives and Bus Masters back to their
 * reset registers, interrupt lines low, media kept, and blocks acknowledged to the guest kept on the medium.
 * Expected values: QEMU 7.2 as observed over qtest (docs/conformance.md, "Machine reset"), and the ATA-6 power-on
 * state for the default profile.
 */
import { describe, expect, it } from "vitest";
import { buildMachine, type Machine } from "../../src/machine/builder.ts";
import type { Vcpu } from "../../src/hypervisor/hypervisor.ts";
import { openPvPath } from "../../src/machine/disk-path.ts";
import { MemoryBackend } from "../../src/storage/index.ts";
import type { CompatProfile } from "../../src/ide/compat.ts";

const SECTOR = 512;
const BM = 0xc000;

/** A disk whose every byte of sector i is (i + 1) & 0xff. */
function disk(sectors: number): MemoryBackend {
  const data = new Uint8Array(sectors * SECTOR);
  for (let i = 0; i < sectors; i++) data.fill((i + 1) & 0xff, i * SECTOR, (i + 1) * SECTOR);
  return new MemoryBackend(data);
}

function cfgRead(v: Vcpu, fn: number, off: number): number {
  v.outl(0xcf8, (0x80000000 | (1 << 11) | (fn << 8) | off) >>> 0);
  return v.inl(0xcfc) >>> 0;
}
function cfgWrite(v: Vcpu, fn: number, off: number, value: number): void {
  v.outl(0xcf8, (0x80000000 | (1 << 11) | (fn << 8) | off) >>> 0);
  v.outl(0xcfc, value >>> 0);
}
/** What firmware does: BAR4 at 0xC000, I/O decode and bus mastering on. */
function enableIde(v: Vcpu): void {
  cfgWrite(v, 1, 0x20, BM | 1);
  cfgWrite(v, 1, 0x04, 0x0005);
}
/** Command block 0x1F1-0x1F7 as read back (error, count, LBA low/mid/high, device, status). */
function regs(v: Vcpu): number[] {
  return [1, 2, 3, 4, 5, 6, 7].map((r) => v.inb(0x1f0 + r));
}
function identify(v: Vcpu): Uint16Array {
  v.outb(0x1f6, 0xa0);
  v.outb(0x1f7, 0xec);
  const w = new Uint16Array(256);
  for (let i = 0; i < 256; i++) w[i] = v.inw(0x1f0);
  return w;
}

function machine(compat: CompatProfile, backend = disk(64), engine: "sync" | "async" = "sync"): Machine {
  return buildMachine({
    compat,
    ide: [{ position: "primary-master", medium: { backend }, engine }],
  });
}

/** Leave state behind everywhere a reset must clear it. */
function dirty(m: Machine, v: Vcpu): void {
  enableIde(v);
  cfgWrite(v, 1, 0x0c, 0x10); // cache line size
  cfgWrite(v, 1, 0x3c, 0x0b); // interrupt line
  cfgWrite(v, 1, 0x40, 0x80008000); // IDETIM both channels
  cfgWrite(v, 0, 0x3c, 0x05); // ISA bridge interrupt line
  cfgWrite(v, 0, 0x4c, 0x12); // ISA bridge device area (PIIX3 IORT)
  v.outl(BM + 4, 0x1234);
  v.outb(BM + 2, 0x60); // drive 0/1 DMA capable
  v.outb(0x1f6, 0xa0);
  v.outb(0x1f2, 8);
  v.outb(0x1f7, 0xc6); // SET MULTIPLE 8
  v.outb(0x1f1, 0x82);
  v.outb(0x1f7, 0xef); // SET FEATURES: write cache off
  v.outb(0x1f1, 0x66);
  v.outb(0x1f7, 0xef); // keep settings over a software reset
  v.outb(0xcf9, 0x02);
  v.outb(0x3f6, 0x0a); // nIEN (with bit 3, as guests write it)
  v.outb(0x3f6, 0x08);
  v.outb(0x1f7, 0xe7); // FLUSH CACHE: raises IRQ 14
  expect(m.hv.irq.isRaised(14)).toBe(true);
  v.outb(0x1f6, 0xb0); // device 1 selected
}

describe.each(["xenide", "qemu-7.2"] as const)("Machine.reset (%s profile)", (compat) => {
  const qemu = compat === "qemu-7.2";

  it("returns every PCI, ATA and Bus Master register to its reset value; IRQ 14 as the profile's reset leaves it", async () => {
    const m = machine(compat);
    const v = m.hv.vcpu(0);
    const power = {
      ide: [0x00, 0x04, 0x08, 0x0c, 0x20, 0x3c, 0x40].map((o) => cfgRead(v, 1, o)),
      isa: [0x04, 0x3c, 0x4c].map((o) => cfgRead(v, 0, o)),
    };
    dirty(m, v);
    expect(v.inb(0xcf9)).toBe(0x02);
    m.reset();
    // RESET deasserts INTRQ (ATA-6 §5.2.9); QEMU 7.2 leaves the line raised until Status is read (observed).
    expect(m.hv.irq.isRaised(14)).toBe(qemu);
    expect(v.inb(0xcf9)).toBe(0x00);
    // QEMU 7.2 (observed): command 0000h, status 0280h, cache line and interrupt line 00h, BAR4 00000001h;
    // IDETIM keeps its value there (no reset handler touches it), and returns to 0 in the default profile.
    expect(cfgRead(v, 1, 0x04)).toBe(0x02800000);
    expect(cfgRead(v, 1, 0x0c)).toBe(0);
    expect(cfgRead(v, 1, 0x20)).toBe(0x00000001);
    expect(cfgRead(v, 1, 0x3c)).toBe(0);
    expect(cfgRead(v, 1, 0x40)).toBe(qemu ? 0x80008000 : 0);
    expect([0x00, 0x04, 0x08, 0x0c, 0x20, 0x3c].map((o) => cfgRead(v, 1, o))).toEqual(power.ide.slice(0, 6));
    expect([0x04, 0x3c, 0x4c].map((o) => cfgRead(v, 0, o))).toEqual(power.isa);
    // BAR4 is no longer decoded: nothing answers at the old block.
    expect(v.inb(BM + 2)).toBe(0xff);
    // Device 0 selected; signature 01h/01h/00h/00h, device A0h; ERR: no diagnostic on QEMU (00h), ATA-6's
    // power-on diagnostic result (01h) otherwise; Status 50h. The write to Status lowered nothing: the reset did.
    expect(regs(v)).toEqual([qemu ? 0x00 : 0x01, 0x01, 0x01, 0x00, 0x00, 0xa0, 0x50]);
    enableIde(v);
    // bmdma_reset: command, status (capability bits too) and PRD address 0.
    expect([v.inb(BM), v.inb(BM + 2), v.inl(BM + 4)]).toEqual([0, 0, 0]);
    // Device Control is 0 again: a command interrupts (nIEN gone).
    v.outb(0x1f7, 0xe7);
    expect(m.hv.irq.isRaised(14)).toBe(true);
    v.inb(0x1f7);
    const w = identify(v);
    expect(w[59]).toBe(0x0110); // multiple setting back to 16 (ide_reset)
    // The write cache setting: kept by QEMU's reset, back to its power-on value (on) per ATA-6 otherwise.
    expect((w[85]! >> 5) & 1).toBe(qemu ? 0 : 1);
    await m.close();
  });

  it("keeps the medium and the blocks acknowledged before it; the drive works afterwards", async () => {
    const backend = disk(64);
    const m = machine(compat, backend);
    const v = m.hv.vcpu(0);
    enableIde(v);
    // WRITE SECTORS LBA 16, 4 sectors: two blocks acknowledged (interrupt, DRQ for the next), then the reset.
    v.outb(0x1f6, 0xe0);
    v.outb(0x1f2, 4);
    v.outb(0x1f3, 16);
    v.outb(0x1f4, 0);
    v.outb(0x1f5, 0);
    v.outb(0x1f7, 0x30);
    for (let b = 0; b < 2; b++) {
      for (let i = 0; i < 256; i++) v.outw(0x1f0, 0xabab);
      expect(v.inb(0x1f7) & 0x08).toBe(0x08);
    }
    m.reset();
    await m.settle();
    const data = backend.data;
    expect(data.subarray(16 * SECTOR, 18 * SECTOR).every((b) => b === 0xab)).toBe(true);
    expect(data.subarray(18 * SECTOR, 20 * SECTOR).every((b, i) => b === 19 + (i >= SECTOR ? 1 : 0))).toBe(
      true,
    );
    expect(v.inb(0x1f7)).toBe(0x50);
    // The medium is still there: READ SECTORS of sector 30 returns its bytes.
    v.outb(0x1f6, 0xe0);
    v.outb(0x1f2, 1);
    v.outb(0x1f3, 30);
    v.outb(0x1f7, 0x20);
    expect(v.inb(0x1f7)).toBe(0x58);
    expect(v.inw(0x1f0)).toBe(0x1f1f);
    await m.close();
  });

  it("cancels a DMA write in flight without a torn medium, and the channel takes commands again", async () => {
    const backend = disk(64);
    const m = machine(compat, backend, "async");
    const v = m.hv.vcpu(0);
    enableIde(v);
    const mem = m.hv.mem;
    mem.write(0x10000, new Uint8Array([0x00, 0x00, 0x02, 0x00, 0x00, 0x08, 0x00, 0x80])); // 2 KiB at 0x20000, EOT
    mem.write(0x20000, new Uint8Array(2048).fill(0xcd));
    v.outl(BM + 4, 0x10000);
    v.outb(0x1f6, 0xe0);
    v.outb(0x1f2, 4);
    v.outb(0x1f3, 8);
    v.outb(0x1f7, 0xca); // WRITE DMA
    v.outb(BM, 0x01); // start, memory to device
    expect(m.busy()).toBe(true); // the write is with storage
    m.reset();
    expect(v.inb(0x3f6)).toBe(0x50);
    await m.settle();
    // The request had been submitted: it completes whole or not at all (every sector one value).
    const after = backend.data.subarray(8 * SECTOR, 12 * SECTOR);
    expect(after.every((b) => b === 0xcd) || after.every((b, i) => b === 9 + Math.floor(i / SECTOR))).toBe(
      true,
    );
    expect(m.hv.irq.isRaised(14)).toBe(false); // no interrupt was pending, and the reset raises none
    enableIde(v);
    expect(v.inb(BM + 2)).toBe(0x00);
    v.outb(0x1f6, 0xe0);
    v.outb(0x1f2, 1);
    v.outb(0x1f3, 40);
    v.outb(0x1f7, 0x20);
    await m.settle();
    expect(v.inb(0x1f7)).toBe(0x58);
    expect(v.inw(0x1f0)).toBe(0x2929);
    await m.close();
  });

  it("resets a CD drive: tray closed and unlocked, medium kept, Status as the profile's reset leaves it", async () => {
    const iso = new MemoryBackend(new Uint8Array(16 * 2048).fill(0x11));
    const m = buildMachine({
      compat,
      ide: [{ position: "secondary-master", kind: "cd", medium: { backend: iso } }],
    });
    const cd = m.ide.get("secondary-master")!;
    const v = m.hv.vcpu(0);
    // PREVENT ALLOW MEDIUM REMOVAL (1Eh) with Prevent = 1, by PIO.
    v.outb(0x176, 0xa0);
    v.outb(0x171, 0);
    v.outb(0x174, 0);
    v.outb(0x175, 0);
    v.outb(0x177, 0xa0);
    const packet = [0x1e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    for (let i = 0; i < 12; i += 2) v.outw(0x170, packet[i]! | (packet[i + 1]! << 8));
    expect(cd.tray()).toEqual({ open: false, locked: true, medium: true });
    m.reset();
    expect(cd.tray()).toEqual({ open: false, locked: false, medium: true });
    // QEMU's ide_reset shows READY|SEEK on a PACKET device too; ATA-6's power-on state (50h) otherwise.
    expect(v.inb(0x177)).toBe(0x50);
    expect([v.inb(0x172), v.inb(0x173), v.inb(0x174), v.inb(0x175)]).toEqual([0x01, 0x01, 0x14, 0xeb]);
    await m.close();
  });

  it("0xCF9: bit 1 reads back; a write with bit 2 resets the machine, after the chunk on QEMU", async () => {
    const m = machine(compat);
    const v = m.hv.vcpu(0);
    let resets = 0;
    m.pc!.onGuestReset = () => resets++;
    enableIde(v);
    v.outb(0xcf9, 0xff & ~0x04);
    expect(v.inb(0xcf9)).toBe(0x02);
    v.outb(0xcf9, 0x06);
    if (qemu) {
      // QEMU only requests the reset; its main loop runs it on the next iteration (observed over qtest).
      expect(v.inb(0xcf9)).toBe(0x02);
      expect(cfgRead(v, 1, 0x20)).toBe(BM | 1);
      expect(resets).toBe(0);
      expect(m.busy()).toBe(true);
      await m.settle();
    }
    expect(resets).toBe(1);
    expect(v.inb(0xcf9)).toBe(0x00);
    expect(cfgRead(v, 1, 0x20)).toBe(0x00000001);
    // Bit 2 alone (CPU reset) resets too, as QEMU 7.2 treats both the same.
    v.outb(0xcf9, 0x04);
    await m.settle();
    expect(resets).toBe(2);
    await m.close();
  });
});

describe("Machine.reset and PV disks", () => {
  it("leaves a connected PV disk alone: blkfront keeps reading through the same ring", async () => {
    const m = buildMachine({
      ide: [{ position: "primary-master", medium: { backend: disk(16) } }],
      pv: [{ medium: { backend: disk(32) } }],
    });
    const p = await openPvPath(m);
    expect((await p.read(3, 1))[0]).toBe(4);
    const state = m.xen!.xs(0).read(`${m.pv[0]!.paths.backend}/state`);
    m.reset();
    expect(m.xen!.xs(0).read(`${m.pv[0]!.paths.backend}/state`)).toBe(state);
    expect((await p.read(7, 1))[0]).toBe(8);
    await p.close();
    await m.close();
  });
});
