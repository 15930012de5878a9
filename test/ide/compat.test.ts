/**
 * The "qemu-7.2" compatibility profile, switch by switch: each deviation of docs/conformance.md shows QEMU
 * 7.2's bytes in that profile and the standard's in the default one. Expected values are QEMU 7.2's as observed
 * over qtest (Debian 12's qemu-system-x86 7.2.22; "obs. §N" = the QEMU 7.2 observations, "probe" = read from
 * the same binary with the sequence the test runs). test/differential compares the whole profile with QEMU live.
 */

import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import type { CompatProfile } from "../../src/ide/compat.ts";
import { buildMachine, type Machine } from "../../src/machine/builder.ts";
import type { IdePosition } from "../../src/machine/description.ts";
import { FaultInjectingBackend, type FaultRule, MemoryBackend } from "../../src/storage/index.ts";

const SECTORS = 32768; // 16 MiB: default CHS 32/16/63, as in the observations
const C = 0x1f0;
const CTL = 0x3f6;
const BM = 0xc000;
const PRDT = 0x10000;
const BUF = 0x20000;

interface Rig {
  m: Machine;
  inb(p: number): number;
  inw(p: number): number;
  inl(p: number): number;
  outb(p: number, v: number): void;
  outw(p: number, v: number): void;
  outl(p: number, v: number): void;
  disk: MemoryBackend;
}

function rig(
  compat: CompatProfile,
  opts: { positions?: IdePosition[]; readOnly?: boolean; firmware?: boolean; faults?: FaultRule[] } = {},
): Rig {
  const data = new Uint8Array(SECTORS * 512);
  for (let s = 0; s < SECTORS; s++) data.fill((s & 0xff) | 1, s * 512, s * 512 + 512);
  const disk = new MemoryBackend(data, { readOnly: opts.readOnly === true });
  const m = buildMachine({
    ram: 16 * 1024 * 1024,
    compat,
    pc: { firmwareInit: opts.firmware ?? true },
    ide: (opts.positions ?? ["primary-master"]).map((position, i) => ({
      position,
      medium: {
        backend:
          i > 0 ? new MemoryBackend(4096) : opts.faults ? new FaultInjectingBackend(disk, opts.faults) : disk,
      },
    })),
  });
  const v = m.hv.vcpu(0);
  return {
    m,
    disk,
    inb: (p) => v.inb(p),
    inw: (p) => v.inw(p),
    inl: (p) => v.inl(p),
    outb: (p, x) => v.outb(p, x),
    outw: (p, x) => v.outw(p, x),
    outl: (p, x) => v.outl(p, x),
  };
}

/** Task file of a 28-bit command (LBA when `dev` has bit 6), each register written once, then the command. */
function issue(
  r: Rig,
  op: number,
  o: { dev?: number; feat?: number; nsect?: number; lba?: number } = {},
): void {
  const lba = o.lba ?? 0;
  r.outb(C + 6, o.dev ?? 0xe0);
  r.outb(C + 1, o.feat ?? 0);
  r.outb(C + 2, o.nsect ?? 0);
  r.outb(C + 3, lba & 0xff);
  r.outb(C + 4, (lba >>> 8) & 0xff);
  r.outb(C + 5, (lba >>> 16) & 0xff);
  r.outb(C + 7, op);
}

function identify(r: Rig): number[] {
  issue(r, 0xec, { dev: 0xa0 });
  const w: number[] = [];
  for (let i = 0; i < 256; i++) w.push(r.inw(C));
  return w;
}

/** ERR, NSECT, LBAL, LBAM, LBAH, DEV and STATUS (which acknowledges the interrupt). */
function regs(r: Rig): number[] {
  return [1, 2, 3, 4, 5, 6, 7].map((i) => r.inb(C + i));
}

/** PRD entries [address, bytes, last] at PRDT; engine stopped, status cleared. */
function prd(r: Rig, entries: [number, number, boolean][]): void {
  entries.forEach(([a, n, eot], i) => {
    r.m.hv.mem.writeU32(PRDT + i * 8, a >>> 0);
    r.m.hv.mem.writeU32(PRDT + i * 8 + 4, (n & 0xffff) | (eot ? 0x80000000 : 0));
  });
  r.outb(BM, 0);
  r.outb(BM + 2, 0x06);
  r.outl(BM + 4, PRDT);
}

const memByte = (r: Rig, a: number): number => r.m.hv.mem.readU8(a) as number;

describe("profile qemu-7.2: register file and IDENTIFY", () => {
  it("A1: Error reads 00h at power-on (QEMU obs. §4.a), 01h in the default profile", () => {
    expect(rig("qemu-7.2").inb(C + 1)).toBe(0x00);
    expect(rig("xenide").inb(C + 1)).toBe(0x01);
  });

  it("A2: no integrity word, words 82/85 = 4021h, word 85 bit 0 kept after SMART DISABLE (obs. §4.b)", () => {
    const r = rig("qemu-7.2");
    const w = identify(r);
    expect([w[82], w[85], w[255]]).toEqual([0x4021, 0x4021, 0x0000]);
    issue(r, 0xb0, { feat: 0xd9, lba: 0xc24f00 }); // SMART DISABLE OPERATIONS
    expect(r.inb(C + 7)).toBe(0x50);
    expect(identify(r)[85]).toBe(0x4021);
    const x = identify(rig("xenide"));
    expect([x[82], x[85], x[255]! & 0xff]).toEqual([0x4029, 0x4029, 0xa5]);
  });

  it("A2: the page is cached at the first IDENTIFY; word 59 keeps 0110h after SET MULTIPLE MODE", () => {
    const r = rig("qemu-7.2");
    expect(identify(r)[59]).toBe(0x0110);
    issue(r, 0xc6, { nsect: 4 });
    expect(r.inb(C + 7)).toBe(0x50);
    expect(identify(r)[59]).toBe(0x0110);
    const x = rig("xenide");
    identify(x);
    issue(x, 0xc6, { nsect: 4 });
    expect(identify(x)[59]).toBe(0x0104);
  });

  it("C7: SET FEATURES 03h before the first IDENTIFY is lost; after it, any mode of a known type is patched in", () => {
    const r = rig("qemu-7.2");
    issue(r, 0xef, { feat: 0x03, nsect: 0x42 }); // UDMA 2
    expect(r.inb(C + 7)).toBe(0x50);
    let w = identify(r);
    expect([w[62], w[63], w[88]]).toEqual([0x0007, 0x0007, 0x203f]); // probe: QEMU's defaults
    issue(r, 0xef, { feat: 0x03, nsect: 0x47 }); // UDMA 7: the default profile aborts it
    expect(r.inb(C + 7)).toBe(0x50);
    w = identify(r);
    expect([w[62], w[63], w[88]]).toEqual([0x0007, 0x0007, 0x803f]); // probe
    issue(r, 0xef, { feat: 0x03, nsect: 0x80 }); // transfer type 10h: aborted on QEMU too
    expect([r.inb(C + 1), r.inb(C + 7)]).toEqual([0x04, 0x41]);
    const x = rig("xenide");
    issue(x, 0xef, { feat: 0x03, nsect: 0x47 });
    expect([x.inb(C + 1), x.inb(C + 7)]).toEqual([0x04, 0x41]);
  });

  it("A4: an absent device 0 with a present device 1 shows the empty position's registers", () => {
    const r = rig("qemu-7.2", { positions: ["primary-slave"] });
    expect([r.inb(CTL), r.inb(C + 1)]).toEqual([0x50, 0x00]);
    const x = rig("xenide", { positions: ["primary-slave"] });
    expect([x.inb(CTL), x.inb(C + 1)]).toEqual([0x00, 0x00]);
  });

  it("A4: commands to the absent device 0 run as to a hard disk without a backend (QEMU 7.2 core.c, probe)", () => {
    const r = rig("qemu-7.2", { positions: ["primary-slave"] });
    const ch = r.m.pc!.ide.channels[0];
    const run = (op: number, o: { feat?: number; nsect?: number; lba?: number } = {}): number[] => {
      issue(r, op, { dev: 0xa0, ...o });
      const irq = ch.irqLevel ? 1 : 0;
      return [...regs(r), irq];
    };
    // ERR NSECT LBAL LBAM LBAH DEV STATUS IRQ
    expect(run(0x20, { nsect: 1 })).toEqual([0x04, 0x01, 0, 0, 0, 0xa0, 0x41, 1]); // no backend: ABRT
    expect(run(0xec)).toEqual([0x04, 0, 0, 0, 0, 0xa0, 0x41, 1]);
    expect(run(0x70, { lba: 0x123456 })).toEqual([0, 0, 0x56, 0x34, 0x12, 0xa0, 0x50, 1]); // SEEK: DSC
    expect(run(0xe0)).toEqual([0, 0, 0, 0, 0, 0xa0, 0x40, 1]); // STANDBY IMMEDIATE: a no-op without DSC
    expect(run(0xe5)).toEqual([0, 0xff, 0, 0, 0, 0xa0, 0x50, 1]);
    expect(run(0xe7)).toEqual([0, 0, 0, 0, 0, 0xa0, 0x50, 1]); // FLUSH CACHE completes at once
    expect(run(0x90, { nsect: 7, lba: 0x3 })).toEqual([0x01, 0x01, 0x01, 0xff, 0xff, 0xa0, 0x50, 1]);
    // SMART starts disabled on the empty position; once enabled, READ DATA has a data phase with QEMU's page.
    expect(run(0xb0, { feat: 0xd0, lba: 0xc24f00 })[6]).toBe(0x41);
    expect(run(0xb0, { feat: 0xd8, lba: 0xc24f00 })[6]).toBe(0x50);
    issue(r, 0xb0, { dev: 0xa0, feat: 0xd0, lba: 0xc24f00 });
    expect(r.inb(CTL)).toBe(0x58);
    const page: number[] = [];
    for (let i = 0; i < 256; i++) page.push(r.inw(C));
    expect(page.slice(0, 3)).toEqual([0x0001, 0x0301, 0x6400]); // revision 1; attribute 01h, flags 0003h, 64h
    expect(page[181]! & 0xff).toBe(0x02); // byte 362: autosave off on the empty position
    expect(r.inb(CTL)).toBe(0x50);
    // Device 1 absent in the default profile: the same commands are ignored.
    const x = rig("xenide", { positions: ["primary-slave"] });
    x.outb(C + 6, 0xa0);
    x.outb(C + 7, 0xe7);
    expect([x.inb(CTL), x.m.pc!.ide.channels[0].irqLevel]).toEqual([0x00, false]);
  });

  it("A4: on a channel with no drive at all QEMU's device 0 still runs commands; its registers read 0 (probe)", () => {
    for (const [profile, raised] of [
      ["qemu-7.2", true],
      ["xenide", false],
    ] as const) {
      const r = rig(profile); // the secondary channel is empty
      const ch = r.m.pc!.ide.channels[1];
      r.outb(0x176, 0xa0);
      r.outb(0x177, 0xe7); // FLUSH CACHE
      expect([r.inb(0x376), r.inb(0x171), ch.irqLevel], profile).toEqual([0x00, 0x00, raised]);
      expect(r.inb(BM + 10) & 0x04, profile).toBe(raised ? 0x04 : 0x00); // the secondary Bus Master's Interrupt bit
    }
  });
});

describe("A8: dword data accesses with fewer than 4 bytes left in the block", () => {
  // IDENTIFY's 512 bytes after one word: 127 dwords leave 2 bytes.
  const started = (r: Rig): void => {
    issue(r, 0xec, { dev: 0xa0 });
    r.inw(C);
    for (let i = 0; i < 127; i++) r.inl(C);
  };

  it("xenide: the controller's two 16-bit cycles take the last word and end the block (PIIX3 splits dwords)", () => {
    const r = rig("xenide");
    const last = identify(rig("xenide"))[255]!;
    started(r);
    expect(r.inb(C + 7) & 0x08).toBe(0x08);
    expect(r.inl(C)).toBe(last); // the last word, then nothing: the block is over
    expect(r.inb(C + 7)).toBe(0x50);
  });

  it("qemu-7.2: the read gives 0 and moves nothing (ide_data_readl); the last word is still there", () => {
    const r = rig("qemu-7.2");
    const last = identify(rig("qemu-7.2"))[255]!;
    started(r);
    expect(r.inl(C)).toBe(0);
    expect(r.inl(C)).toBe(0);
    expect(r.inb(C + 7)).toBe(0x58);
    expect(r.inw(C)).toBe(last);
    expect(r.inb(C + 7)).toBe(0x50);
  });

  it("qemu-7.2: a dword write that does not fit is dropped (ide_data_writel); REP OUTSD moves whole dwords only", () => {
    for (const rep of [false, true]) {
      const r = rig("qemu-7.2");
      issue(r, 0x30, { nsect: 1, lba: 5 });
      r.outw(C, 0x1234);
      const v = r.m.hv.vcpu(0);
      if (rep) {
        // 128 dwords from guest memory: 127 fit, the last is dropped.
        for (let i = 0; i < 128; i++) r.m.hv.mem.writeU32(BUF + i * 4, 0xa5a55a5a);
        v.outsl(C, BUF, 128);
      } else {
        for (let i = 0; i < 127; i++) r.outl(C, 0xa5a55a5a);
        r.outl(C, 0x11223344);
      }
      expect(r.inb(C + 7)).toBe(0x58);
      r.outw(C, 0x5678);
      expect(r.inb(C + 7)).toBe(0x50);
      const sector = new Uint8Array(512);
      r.disk.read(5, [sector]);
      expect([sector[0], sector[1], sector[2], sector[509], sector[510], sector[511]]).toEqual([
        0x34, 0x12, 0x5a, 0xa5, 0x78, 0x56,
      ]);
    }
  });
});

describe("profile qemu-7.2: resets", () => {
  it("B1/B2: SRST 0->1 shows D0h at once; the reset runs on the next main-loop turn although SRST stays 1", async () => {
    const r = rig("qemu-7.2");
    issue(r, 0x91, { dev: 0xe0, nsect: 0x22 }); // leave something to reset (obs. §4.a writes 11..e7)
    r.inb(C + 7);
    r.outb(CTL, 0x04);
    expect(r.inb(CTL)).toBe(0xd0);
    expect(r.m.busy()).toBe(true); // the bottom half counts as pending work
    await r.m.settle();
    expect(r.m.pc!.ide.channels[0].irqLevel).toBe(true);
    expect(regs(r)).toEqual([0x01, 0x01, 0x01, 0x00, 0x00, 0xa0, 0x50]); // obs. §4.a "SRST still 1"
    // QEMU cleared its SRST bit: writing it set again is a new edge, and another reset.
    r.outb(CTL, 0x04);
    expect(r.inb(CTL)).toBe(0xd0);
    r.outb(CTL, 0x00);
    await r.m.settle();
    expect(r.inb(CTL)).toBe(0x50);
    const x = rig("xenide");
    x.outb(CTL, 0x04);
    await x.m.settle();
    expect(x.inb(CTL)).toBe(0xd0); // held for as long as SRST is 1 (B1)
  });

  it("B3: SRST with the absent slave selected keeps it selected: DEV A0h, STATUS 00h, LBAM/LBAH FFh (obs. §4.h)", async () => {
    const r = rig("qemu-7.2");
    r.outb(C + 6, 0xb0);
    r.outb(CTL, 0x04);
    r.outb(CTL, 0x00);
    await r.m.settle();
    expect(regs(r)).toEqual([0x00, 0x01, 0x01, 0xff, 0xff, 0xa0, 0x00]);
    r.outb(C + 6, 0xa0);
    expect(regs(r)).toEqual([0x01, 0x01, 0x01, 0x00, 0x00, 0xa0, 0x50]);
  });

  it("B4: EXECUTE DEVICE DIAGNOSTIC changes only the executing device and keeps it selected", () => {
    const r = rig("qemu-7.2", { positions: ["primary-master", "primary-slave"] });
    r.outb(C + 3, 0x77);
    r.outb(C + 6, 0xb0);
    r.outb(C + 7, 0x90);
    expect(regs(r)).toEqual([0x01, 0x01, 0x01, 0x00, 0x00, 0xa0, 0x50]);
    r.outb(CTL, 0x80); // HOB view of device 1: the HOB LBA Low is what was there before 77h
    r.outb(CTL, 0x00);
    r.outb(C + 6, 0xa0); // device 0 did not run it: its LBA Low is still 77h
    expect(r.inb(C + 3)).toBe(0x77);
    const x = rig("xenide", { positions: ["primary-master", "primary-slave"] });
    x.outb(C + 3, 0x77);
    x.outb(C + 6, 0xb0);
    x.outb(C + 7, 0x90);
    x.outb(C + 6, 0xa0);
    expect(x.inb(C + 3)).toBe(0x01);
  });
});

describe("profile qemu-7.2: command results", () => {
  it("C1: beyond the capacity ABRT (obs. §4.g); READ VERIFY and SEEK are not range-checked", () => {
    const r = rig("qemu-7.2");
    issue(r, 0x20, { nsect: 1, lba: SECTORS });
    expect(regs(r)).toEqual([0x04, 0x01, 0x00, 0x80, 0x00, 0xe0, 0x41]);
    issue(r, 0x40, { nsect: 1, lba: 40000 });
    expect(regs(r)).toEqual([0x00, 0x01, 0x40, 0x9c, 0x00, 0xe0, 0x50]);
    issue(r, 0x70, { lba: 40000 });
    expect(regs(r)[6]).toBe(0x50);
    const x = rig("xenide");
    issue(x, 0x20, { nsect: 1, lba: SECTORS });
    expect(regs(x)[0]).toBe(0x10);
  });

  it("C2: a failed read or write block ends in 41h/04h at the start of that block (probe, blkdebug EIO)", () => {
    const faults: FaultRule[] = [
      { op: "read", from: 102, to: 103 },
      { op: "write", from: 201, to: 202 },
    ];
    const r = rig("qemu-7.2", { faults });
    issue(r, 0x20, { nsect: 4, lba: 100 });
    for (let i = 0; i < 512; i++) r.inw(C); // sectors 100 and 101 arrive
    expect(regs(r)).toEqual([0x04, 0x02, 0x66, 0x00, 0x00, 0xe0, 0x41]);
    issue(r, 0x30, { nsect: 2, lba: 200 });
    for (let i = 0; i < 256; i++) r.outw(C, 0xabcd);
    expect(r.inb(C + 7)).toBe(0x58); // block 200 is on the medium: the next one is asked for
    expect(r.disk.data[200 * 512]).toBe(0xcd);
    for (let i = 0; i < 256; i++) r.outw(C, 0xabcd);
    expect(regs(r)).toEqual([0x04, 0x01, 0xc9, 0x00, 0x00, 0xe0, 0x41]);
    const x = rig("xenide", { faults });
    issue(x, 0x20, { nsect: 4, lba: 100 });
    for (let i = 0; i < 512; i++) x.inw(C);
    expect(regs(x)).toEqual([0x40, 0x02, 0x66, 0x00, 0x00, 0xe0, 0x41]); // UNC (C2)
    issue(x, 0x30, { nsect: 2, lba: 200 });
    for (let i = 0; i < 512; i++) x.outw(C, 0xabcd);
    expect(regs(x)).toEqual([0x04, 0x01, 0xc9, 0x00, 0x00, 0xe0, 0x61]); // DF|ERR after the cached blocks
  });

  it("C11: CHS addresses are not checked against the translation; sector 0 of cylinder 0 head 0 is refused (probe)", () => {
    const r = rig("qemu-7.2");
    issue(r, 0x20, { dev: 0xa0, nsect: 1, lba: 64 }); // cylinder 0, head 0, sector 64 of 63: sector 63
    expect(r.inb(C + 7)).toBe(0x58);
    expect(r.inw(C)).toBe(0x3f3f);
    for (let i = 1; i < 256; i++) r.inw(C);
    issue(r, 0x20, { dev: 0xa0, nsect: 1, lba: 0 });
    expect([r.inb(C + 1), r.inb(C + 7)]).toEqual([0x04, 0x41]);
    const x = rig("xenide");
    issue(x, 0x20, { dev: 0xa0, nsect: 1, lba: 64 });
    expect([x.inb(C + 1), x.inb(C + 7)]).toEqual([0x10, 0x41]);
  });

  it("C12: SET FEATURES CCh makes the next reset restore the CHS translation, once (probe)", async () => {
    const native = async (r: Rig): Promise<number[]> => {
      r.outb(CTL, 0x04);
      r.outb(CTL, 0x00);
      await r.m.settle();
      issue(r, 0xf8, { dev: 0xa0 });
      return regs(r).slice(2, 6);
    };
    for (const compat of ["qemu-7.2", "xenide"] as const) {
      const r = rig(compat);
      issue(r, 0xef, { feat: 0xcc });
      issue(r, 0x91, { dev: 0xa3, nsect: 8 });
      const first = await native(r);
      issue(r, 0x91, { dev: 0xa3, nsect: 8 });
      const second = await native(r);
      if (compat === "qemu-7.2") {
        expect(first).toEqual([0x08, 0x20, 0x00, 0xa8]); // the default translation is back
        expect(second).toEqual([0x08, 0xff, 0x03, 0xa3]); // 4 heads x 8 sectors stay: cylinder 1023
      } else {
        expect(first).toEqual([0x3f, 0x1f, 0x00, 0xaf]);
        expect(second).toEqual([0x3f, 0x1f, 0x00, 0xaf]);
      }
    }
  });

  // QEMU 7.2 will not attach a read-only ide-hd at all ("Block node is read-only"); a medium that refuses writes
  // fails them as any failed write (C2), after the data phase.
  it("C3: a read-only medium takes the block, then fails the write with ABRT", () => {
    const r = rig("qemu-7.2", { readOnly: true });
    issue(r, 0x30, { nsect: 2, lba: 100 });
    expect(r.inb(CTL)).toBe(0x58); // DRQ: the data is requested
    for (let i = 0; i < 256; i++) r.outw(C, 0x1234);
    expect(regs(r)).toEqual([0x04, 0x02, 0x64, 0x00, 0x00, 0xe0, 0x41]);
    const x = rig("xenide", { readOnly: true });
    issue(x, 0x30, { nsect: 2, lba: 100 });
    expect(x.inb(CTL)).toBe(0x41);
  });

  it("C5: INITIALIZE DEVICE PARAMETERS keeps the cylinders; Count 0 then CHS READ NATIVE MAX is refused, not a crash", () => {
    const r = rig("qemu-7.2");
    issue(r, 0x91, { dev: 0xa3, nsect: 8 }); // 4 heads, 8 sectors
    expect(r.inb(C + 7)).toBe(0x50);
    const w = identify(r);
    expect([w[1], w[3], w[6], w[54], w[55], w[56]]).toEqual([32, 4, 8, 32, 4, 8]);
    issue(r, 0x91, { dev: 0xa0, nsect: 0 });
    issue(r, 0xf8, { dev: 0xa0 });
    expect([r.inb(C + 1), r.inb(C + 7)]).toEqual([0x04, 0x41]);
  });

  it("C5: READ NATIVE MAX ADDRESS in CHS mode answers cylinder 32 head 8 sector 8 on the 32-cylinder drive (probe)", () => {
    const r = rig("qemu-7.2");
    issue(r, 0xf8, { dev: 0xa0 });
    expect(regs(r).slice(2)).toEqual([0x08, 0x20, 0x00, 0xa8, 0x50]);
    const x = rig("xenide");
    issue(x, 0xf8, { dev: 0xa0 });
    expect(regs(x).slice(2)).toEqual([0x3f, 0x1f, 0x00, 0xaf, 0x50]); // the last sector of the geometry
  });

  it("C6: CHECK POWER MODE answers FFh after STANDBY IMMEDIATE (obs. §4.j)", () => {
    const r = rig("qemu-7.2");
    issue(r, 0xe0);
    issue(r, 0xe5);
    expect(r.inb(C + 2)).toBe(0xff);
    const x = rig("xenide");
    issue(x, 0xe0);
    issue(x, 0xe5);
    expect(x.inb(C + 2)).toBe(0x00);
  });
});

describe("profile qemu-7.2: Bus Master", () => {
  it("C4: with bus mastering off READ DMA completes: ATA 50h, NSECT 0, BM 05h, memory untouched (obs. §4.i)", () => {
    const r = rig("qemu-7.2");
    r.outl(0xcf8, 0x80000904);
    r.outw(0xcfc, 0x0001);
    r.m.hv.mem.write(BUF, new Uint8Array(512).fill(0xa5));
    prd(r, [[BUF, 512, true]]);
    issue(r, 0xc8, { nsect: 1, lba: 0x10 });
    r.outb(BM, 0x09);
    expect(r.inb(BM + 2)).toBe(0x05);
    expect(regs(r)).toEqual([0x00, 0x00, 0x11, 0x00, 0x00, 0xe0, 0x50]);
    expect(memByte(r, BUF)).toBe(0xa5);
    // WRITE DMA reads zeros from the disabled address space, and writes them (probe: sectors 16-17 zeroed).
    prd(r, [[BUF, 1024, true]]);
    issue(r, 0xca, { nsect: 2, lba: 0x10 });
    r.outb(BM, 0x01);
    expect(r.inb(BM + 2)).toBe(0x05);
    expect([r.disk.data[16 * 512], r.disk.data[18 * 512 - 1]]).toEqual([0, 0]);
    const x = rig("xenide");
    x.outl(0xcf8, 0x80000904);
    x.outw(0xcfc, 0x0001);
    prd(x, [[BUF, 512, true]]);
    issue(x, 0xc8, { nsect: 1, lba: 0x10 });
    x.outb(BM, 0x09);
    expect([x.inb(BM + 2), x.inb(CTL)]).toEqual([0x01, 0x58]);
  });

  it("C8: DATA SET MANAGEMENT takes the 8-bit Count, Count 0 completes at once, the LBA moves on", () => {
    const r = rig("qemu-7.2");
    // After a reset the Count register holds 01h, so a single write of 01h makes the 48-bit count 0101h.
    r.outb(CTL, 0x04);
    r.outb(CTL, 0x00);
    r.m.pc!.ide.runBottomHalves();
    const payload = new Uint8Array(512);
    new DataView(payload.buffer).setUint32(4, 2 << 16, true); // LBA 0, 2 sectors
    r.m.hv.mem.write(BUF, payload);
    prd(r, [[BUF, 512, true]]);
    issue(r, 0x06, { dev: 0x40, feat: 0x01, nsect: 1, lba: 0x10 });
    r.outb(BM, 0x01);
    expect(r.inb(BM + 2)).toBe(0x04);
    expect(regs(r)).toEqual([0x00, 0x00, 0x11, 0x00, 0x00, 0xe0, 0x50]);
    expect(r.disk.data[0]).toBe(0x01); // -drive's default discard=ignore: the data stays
    prd(r, [[BUF, 512, true]]);
    issue(r, 0x06, { dev: 0x40, feat: 0x01, nsect: 0, lba: 0x10 });
    r.outb(BM, 0x01);
    expect([r.inb(BM + 2), r.inb(C + 7)]).toEqual([0x04, 0x50]);
    const x = rig("xenide");
    x.outb(C + 2, 0x00); // the 48-bit Count: both bytes 0 (reserved, ACS §7.10)
    issue(x, 0x06, { dev: 0x40, feat: 0x01, nsect: 0 });
    expect([x.inb(C + 1), x.inb(C + 7)]).toEqual([0x04, 0x41]);
  });

  it("D2/D3: a PRD buffer outside RAM is no error (writes go nowhere); an odd base address is used as written", () => {
    const r = rig("qemu-7.2");
    const ram = r.m.hv.mem.size;
    prd(r, [[ram + 0x1000, 512, true]]);
    issue(r, 0xc8, { nsect: 1, lba: 3 });
    r.outb(BM, 0x09);
    expect([r.inb(BM + 2), r.inb(C + 1), r.inb(C + 7)]).toEqual([0x04, 0x00, 0x50]);
    r.m.hv.mem.write(BUF, new Uint8Array(1024));
    prd(r, [[BUF + 1, 512, true]]);
    issue(r, 0xc8, { nsect: 1, lba: 3 });
    r.outb(BM, 0x09);
    expect([memByte(r, BUF), memByte(r, BUF + 1), memByte(r, BUF + 512)]).toEqual([0x00, 0x03, 0x03]);
    const x = rig("xenide");
    prd(x, [[x.m.hv.mem.size + 0x1000, 512, true]]);
    issue(x, 0xc8, { nsect: 1, lba: 3 });
    x.outb(BM, 0x09);
    expect([x.inb(BM + 2), x.inb(C + 7)]).toEqual([0x06, 0x41]);
  });
});

describe("profile qemu-7.2: the machine", () => {
  it("PCI CONFIG_ADDRESS keeps bits 1:0 and offsets CONFIG_DATA by them (libqos reads 7010h at 0x80000902)", () => {
    const r = rig("qemu-7.2", { firmware: false });
    r.outl(0xcf8, 0x80000902);
    expect([r.inw(0xcfc), r.inl(0xcf8)]).toEqual([0x7010, 0x80000902]);
    r.outl(0xcf8, 0x80000903);
    expect([r.inw(0xcf8), r.inb(0xcfa), r.inw(0xcfd)]).toEqual([0x0903, 0x03, 0x7070]); // probe
    const x = rig("xenide", { firmware: false });
    x.outl(0xcf8, 0x80000902);
    expect([x.inw(0xcfc), x.inl(0xcf8)]).toEqual([0x8086, 0x80000900]);
  });

  it("A5: PIIX4 ACPI at 00:01.3, subsystem IDs of the bridges, the floppy DIR at 0x3F7 (probe)", () => {
    const r = rig("qemu-7.2", { firmware: false });
    const cfg = (bdf: number, reg: number): number => {
      r.outl(0xcf8, (0x80000000 | (bdf << 8) | reg) >>> 0);
      return r.inl(0xcfc);
    };
    expect([cfg(0x0b, 0x00), cfg(0x0b, 0x04), cfg(0x0b, 0x08), cfg(0x0b, 0x3c), cfg(0x0b, 0x40)]).toEqual([
      0x71138086, 0x02800000, 0x06800003, 0x00000100, 0x00000001,
    ]);
    expect([cfg(0x00, 0x2c), cfg(0x08, 0x2c), cfg(0x08, 0x04)]).toEqual([0x11001af4, 0x11001af4, 0x02000000]);
    expect(r.inb(0x3f7)).toBe(0x80);
    const x = rig("xenide", { firmware: false });
    x.outl(0xcf8, 0x80000b00);
    expect(x.inl(0xcfc)).toBe(0xffffffff);
    expect(x.inb(0x3f7)).toBe(0xff);
  });

  it("`xenide qtest --compat` refuses an unknown profile with one line and exit status 2", () => {
    const p = spawnSync(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "qtest", "--compat", "qemu-9"],
      {
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(p.status).toBe(2);
    expect(p.stderr.trim().split("\n")).toHaveLength(1);
    expect(p.stderr).toMatch(/--compat must be xenide or qemu-7\.2/);
  });
});
