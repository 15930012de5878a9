/**
 * The command set: QEMU 7.2's opcode sweep (qemu-ide-observed §4.j) re-run opcode by opcode, then the commands
 * whose semantics go beyond the sweep (SET FEATURES, SMART, INITIALIZE DEVICE PARAMETERS, power management,
 * READ VERIFY, read-only media, storage errors), each against the clause it implements.
 */
import { describe, expect, it } from "vitest";
import { HD_COMMANDS } from "../../src/ide/hd/commands.ts";
import { createPc } from "../../src/machine/pc.ts";
import { ATA_CMD } from "../../src/spec/ata.ts";
import { type BlockBackend, makeEngine, MemoryBackend } from "../../src/storage/index.ts";
import {
  ALT,
  BM_STATUS,
  bareHv,
  CMDREG,
  CTL,
  DATA,
  DEV,
  ENGINES,
  ERR,
  FEAT,
  IRQ,
  LBAH,
  LBAL,
  LBAM,
  lba28,
  lba48,
  NSECT,
  pattern,
  readWords,
  rig,
  sendDma,
  STATUS,
  taskFile,
  waitBm,
  waitIrq,
  waitNotBusy,
  writePrdt,
  writeWords,
} from "./helpers.ts";

interface SweepResult {
  status: number;
  err: number;
  nsect: number;
  lba: number;
  dev: number;
  irq: boolean;
}

/** QEMU 7.2's results for a hard disk, 16 MiB, LBA 1000, count 1 (qemu-ide-observed §4.j). */
function qemuSweep(op: number): SweepResult {
  const r = (status: number, err = 0, nsect = 1, lba = 0x3e8, dev = 0xe0, irq = true) => ({
    status,
    err,
    nsect,
    lba,
    dev,
    irq,
  });
  if ([0x10, 0x40, 0x41, 0x42, 0x70, 0x91, 0xc6, 0xe7, 0xea].includes(op)) return r(0x50);
  if ([0x20, 0x21, 0x24, 0x29, 0xc4].includes(op)) return r(0x58, 0, 0, 0x3e9);
  if ([0x25, 0x30, 0x31, 0x34, 0x35, 0x39, 0x3c, 0xc5, 0xc8, 0xc9, 0xca, 0xcb].includes(op)) {
    return r(0x58, 0, 1, 0x3e8, 0xe0, false);
  }
  if (op === 0x27 || op === 0xf8) return r(0x50, 0, 1, 0x7fff);
  if (op === 0x90) return r(0x50, 0x01, 1, 0x000001, 0xa0);
  if ([0x94, 0x95, 0x96, 0x97, 0x99, 0xe0, 0xe1, 0xe2, 0xe3, 0xe6].includes(op)) return r(0x40);
  if (op === 0x98 || op === 0xe5) return r(0x50, 0, 0xff);
  if (op === 0xec) return r(0x58);
  if (op === 0xf5) return r(0x50, 0, 0);
  return r(0x41, 0x04);
}

async function sweepOne(engine: "sync" | "async", op: number): Promise<SweepResult> {
  const { cpu, hv } = rig({ engine, ramSize: 64 * 1024 });
  cpu.outb(CTL, 0x04);
  cpu.outb(CTL, 0x00);
  await waitNotBusy(cpu);
  cpu.outb(DEV, 0xe0);
  const vals = [0x00, 0x01, 0xe8, 0x03, 0x00];
  vals.forEach((v, i) => {
    cpu.outb(FEAT + i, 0);
    cpu.outb(FEAT + i, v);
  });
  cpu.inb(STATUS);
  let irq = false;
  hv.irq.onChange((line, level) => {
    if (line === IRQ && level) irq = true;
  });
  cpu.outb(CMDREG, op);
  const status = await waitNotBusy(cpu);
  for (let i = 0; i < 3; i++) await cpu.relax();
  const t = taskFile(cpu);
  return {
    status,
    err: t.err,
    nsect: t.nsect,
    lba: (t.lbah << 16) | (t.lbam << 8) | t.lbal,
    dev: t.dev,
    irq,
  };
}

describe.each(ENGINES)("commands with the %s engine", (engine) => {
  it("opcode sweep 00h-FFh matches QEMU 7.2's hard-disk results (QEMU §4.j)", async () => {
    for (let op = 0; op < 256; op++) {
      const got = await sweepOne(engine, op);
      expect({ op: op.toString(16), ...got }).toEqual({ op: op.toString(16), ...qemuSweep(op) });
    }
  });

  it("unknown opcodes and NOP abort with 41h/04h and leave the other registers alone (ACS §7.17, QEMU §4.f)", async () => {
    const { cpu } = rig({ engine });
    for (const op of [0xff, 0x00, 0xa1, 0xa0, 0x08]) {
      cpu.outb(DEV, 0xa0);
      cpu.outb(NSECT, 0x5a);
      cpu.outb(LBAL, 0x11);
      cpu.outb(CMDREG, op);
      expect(cpu.inb(ALT)).toBe(0x41); // synchronous
      expect(cpu.irqRaised(IRQ)).toBe(true);
      expect(taskFile(cpu)).toEqual({
        err: 0x04,
        nsect: 0x5a,
        lbal: 0x11,
        lbam: 0,
        lbah: 0,
        dev: 0xa0,
        alt: 0x41,
      });
      expect(cpu.inb(STATUS)).toBe(0x41);
      expect(cpu.inw(DATA)).toBe(0);
    }
  });

  it("the table holds every command QEMU 7.2 accepts for a hard disk (QEMU §8)", () => {
    const qemuHd = [
      0x06, 0x10, 0x20, 0x21, 0x24, 0x25, 0x27, 0x29, 0x30, 0x31, 0x34, 0x35, 0x39, 0x3c, 0x40, 0x41, 0x42,
      0x70, 0x90, 0x91, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0xb0, 0xc4, 0xc5, 0xc6, 0xc8, 0xc9, 0xca, 0xcb,
      0xe0, 0xe1, 0xe2, 0xe3, 0xe5, 0xe6, 0xe7, 0xea, 0xec, 0xef, 0xf5, 0xf8,
    ];
    for (const op of qemuHd) expect(HD_COMMANDS[op], op.toString(16)).toBeDefined();
    expect(HD_COMMANDS[ATA_CMD.NOP]).toBeUndefined();
  });

  it("SET FEATURES 02h/82h: write cache in IDENTIFY word 85; with it off every write is flushed first (ACS §7.48)", async () => {
    const { cpu, disk } = rig({ engine });
    const word = async (n: number) => {
      cpu.outb(DEV, 0xa0);
      cpu.outb(CMDREG, 0xec);
      await waitIrq(cpu);
      return new Uint16Array(readWords(cpu, 256).buffer)[n]!;
    };
    expect((await word(85)) & 0x20).toBe(0x20);
    cpu.outb(FEAT, 0x82);
    cpu.outb(CMDREG, 0xef);
    expect(await waitNotBusy(cpu)).toBe(0x50);
    expect((await word(85)) & 0x20).toBe(0);
    const before = disk.flushes;
    expect(before).toBe(1); // disabling the cache flushed it
    lba28(cpu, 50, 2);
    cpu.outb(CMDREG, 0x30);
    writeWords(cpu, new Uint8Array(512).fill(3));
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(disk.flushes).toBe(before + 1);
    writeWords(cpu, new Uint8Array(512).fill(4));
    await waitIrq(cpu);
    expect(disk.flushes).toBe(before + 2);
    expect(cpu.inb(STATUS)).toBe(0x50);
    cpu.outb(FEAT, 0x02);
    cpu.outb(CMDREG, 0xef);
    await waitNotBusy(cpu);
    expect((await word(85)) & 0x20).toBe(0x20);
    lba28(cpu, 60, 1);
    cpu.outb(CMDREG, 0x30);
    writeWords(cpu, new Uint8Array(512).fill(5));
    await waitIrq(cpu);
    expect(disk.flushes).toBe(before + 2); // cache on: no flush per write
  });

  it("SET FEATURES 03h: transfer mode in IDENTIFY words 62/63/88; unsupported modes abort", async () => {
    const { cpu } = rig({ engine });
    const words = async () => {
      cpu.outb(DEV, 0xa0);
      cpu.outb(CMDREG, 0xec);
      await waitIrq(cpu);
      const w = new Uint16Array(readWords(cpu, 256).buffer);
      return [w[62], w[63], w[88]];
    };
    const setMode = async (nsect: number) => {
      cpu.outb(FEAT, 0x03);
      cpu.outb(NSECT, nsect);
      cpu.outb(CMDREG, 0xef);
      await waitIrq(cpu);
      return cpu.inb(STATUS);
    };
    expect(await setMode(0x22)).toBe(0x50); // multiword DMA 2
    expect(await words()).toEqual([0x07, 0x0407, 0x3f]);
    expect(await setMode(0x45)).toBe(0x50); // UDMA 5
    expect(await words()).toEqual([0x07, 0x07, 0x203f]);
    expect(await setMode(0x0c)).toBe(0x50); // PIO 4
    expect(await words()).toEqual([0x07, 0x07, 0x3f]);
    expect(await setMode(0x46)).toBe(0x41); // UDMA 6 is not advertised
    expect(cpu.inb(ERR)).toBe(0x04);
    expect(await setMode(0x60)).toBe(0x41); // no such transfer type
  });

  it("SMART: needs the 4Fh/C2h key; ENABLE/DISABLE/RETURN STATUS; disabled SMART aborts (ATA/ATAPI-6 §8.41)", async () => {
    const { cpu } = rig({ engine });
    const smart = async (feature: number, key = true) => {
      cpu.outb(FEAT, feature);
      cpu.outb(LBAM, key ? 0x4f : 0);
      cpu.outb(LBAH, key ? 0xc2 : 0);
      cpu.outb(CMDREG, 0xb0);
      await waitIrq(cpu);
      return cpu.inb(STATUS);
    };
    expect(await smart(0xda, false)).toBe(0x41);
    expect(await smart(0xda)).toBe(0x50);
    expect([cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0x4f, 0xc2]);
    expect(await smart(0xd9)).toBe(0x50);
    expect(await smart(0xda)).toBe(0x41);
    cpu.outb(DEV, 0xa0);
    cpu.outb(CMDREG, 0xec);
    await waitIrq(cpu);
    expect(new Uint16Array(readWords(cpu, 256).buffer)[85]! & 1).toBe(0);
    expect(await smart(0xd8)).toBe(0x50);
    expect(await smart(0xd0)).toBe(0x58); // READ DATA: one 512-byte block, checksummed
    const page = readWords(cpu, 256);
    expect(page.reduce((a, b) => a + b, 0) & 0xff).toBe(0);
    expect(cpu.inb(ALT)).toBe(0x50);
  });

  it("INITIALIZE DEVICE PARAMETERS: new CHS translation; Count 0 does not crash, CHS access then IDNF (ATA/ATAPI-6 §8.16)", async () => {
    const { cpu } = rig({ engine });
    // 4 heads, 17 sectors per track.
    cpu.outb(DEV, 0xa3);
    cpu.outb(NSECT, 17);
    cpu.outb(CMDREG, 0x91);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x50);
    cpu.outb(CMDREG, 0xec);
    await waitIrq(cpu);
    const w = new Uint16Array(readWords(cpu, 256).buffer);
    expect([w[53]! & 1, w[54], w[55], w[56]]).toEqual([1, Math.floor(32768 / 68), 4, 17]);
    expect([w[1], w[3], w[6]]).toEqual([32, 16, 63]); // defaults unchanged
    // C/H/S 2/1/5 -> (2*4 + 1)*17 + 4 = 157.
    cpu.outb(DEV, 0xa1);
    cpu.outb(NSECT, 1);
    cpu.outb(LBAL, 5);
    cpu.outb(LBAM, 2);
    cpu.outb(LBAH, 0);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(readWords(cpu, 256)).toEqual(pattern(157));
    // Count 0: accepted, no valid translation.
    cpu.outb(DEV, 0xa0);
    cpu.outb(NSECT, 0);
    cpu.outb(CMDREG, 0x91);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x50);
    cpu.outb(CMDREG, 0xf8); // READ NATIVE MAX in CHS mode (where QEMU 7.2 dies of SIGFPE)
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x41);
    cpu.outb(NSECT, 1);
    cpu.outb(LBAL, 1);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x10);
    cpu.outb(CMDREG, 0xec);
    await waitIrq(cpu);
    expect(new Uint16Array(readWords(cpu, 256).buffer)[53]! & 1).toBe(0);
    lba28(cpu, 3, 1); // LBA still works
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
  });

  it("READ NATIVE MAX ADDRESS (EXT): last LBA, capped at 0FFFFFFFh for LBA28", async () => {
    const hv = bareHv();
    // A 2^29-sector disk that is never read (IDENTIFY-level commands only).
    const big: BlockBackend = Object.assign(new MemoryBackend(1), { sectorCount: 2 ** 29 });
    createPc({ hv, firmwareInit: true, primary: { master: { engine: makeEngine(big, engine) } } });
    const cpu = hv.vcpu(0);
    cpu.outb(DEV, 0xe0);
    cpu.outb(CMDREG, 0xf8);
    await waitIrq(cpu);
    expect([cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH), cpu.inb(DEV)]).toEqual([0xff, 0xff, 0xff, 0xef]);
    cpu.outb(CMDREG, 0x27);
    await waitIrq(cpu);
    expect([cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0xff, 0xff, 0xff]);
    cpu.outb(CTL, 0x80);
    expect([cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0x1f, 0, 0]);
    cpu.outb(CTL, 0);
    cpu.outb(CMDREG, 0xec);
    await waitIrq(cpu);
    const w = new Uint16Array(readWords(cpu, 256).buffer);
    expect([w[60], w[61], w[100], w[101], w[102]]).toEqual([0xffff, 0x0fff, 0, 0x2000, 0]);
    expect(w[1]).toBe(16383); // cylinders capped
  });

  it("CHECK POWER MODE: FFh when active, 00h after STANDBY IMMEDIATE, active again after media access (ACS §7.8)", async () => {
    const { cpu } = rig({ engine });
    const check = async () => {
      cpu.outb(CMDREG, 0xe5);
      await waitIrq(cpu);
      expect(cpu.inb(STATUS)).toBe(0x50);
      return cpu.inb(NSECT);
    };
    expect(await check()).toBe(0xff);
    cpu.outb(CMDREG, 0xe0);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x40); // power commands end without DSC (QEMU §4.j)
    expect(await check()).toBe(0x00);
    cpu.outb(CMDREG, 0xe1); // IDLE IMMEDIATE
    await waitIrq(cpu);
    expect(await check()).toBe(0xff);
    cpu.outb(CMDREG, 0xe6); // SLEEP (modelled as standby)
    await waitIrq(cpu);
    expect(await check()).toBe(0x00);
    lba28(cpu, 0, 1);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    readWords(cpu, 256);
    expect(await check()).toBe(0xff);
  });

  it("READ VERIFY: range-checked (IDNF), success leaves the task file; SEEK range-checked", async () => {
    const { cpu } = rig({ engine });
    lba28(cpu, 32760, 8);
    cpu.outb(CMDREG, 0x40);
    expect(await waitNotBusy(cpu)).toBe(0x50);
    expect([cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(LBAM)]).toEqual([8, 0xf8, 0x7f]);
    lba28(cpu, 40000, 1);
    cpu.outb(CMDREG, 0x40);
    await waitNotBusy(cpu);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x10);
    lba28(cpu, 32760, 9);
    cpu.outb(CMDREG, 0x40);
    await waitNotBusy(cpu);
    expect(cpu.inb(ERR)).toBe(0x10);
    expect([cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(LBAM)]).toEqual([9, 0xf8, 0x7f]); // as issued
    lba48(cpu, 0x7ff0, 0x10);
    cpu.outb(CMDREG, 0x42);
    expect(await waitNotBusy(cpu)).toBe(0x50);
    lba28(cpu, 32768, 1);
    cpu.outb(CMDREG, 0x70);
    await waitNotBusy(cpu);
    expect([cpu.inb(STATUS), cpu.inb(ERR)]).toEqual([0x41, 0x10]);
  });

  it("PIO read running past the end: block 1 delivered, then IDNF at the first missing sector (QEMU §4.g, IDNF per ATA/ATAPI-6 §8.26)", async () => {
    const { cpu, disk } = rig({ engine });
    lba28(cpu, 32767, 2);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(readWords(cpu, 256)).toEqual(pattern(32767));
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x10, nsect: 1, lbal: 0, lbam: 0x80, lbah: 0, alt: 0x41 });
    lba28(cpu, 32768, 1);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x10, nsect: 1, lbal: 0, lbam: 0x80, alt: 0x41 });
    // Writes: the block's data is taken, then the range check fails it (QEMU's order), nothing is written.
    lba28(cpu, 32768, 1);
    cpu.outb(CMDREG, 0x30);
    expect(cpu.inb(ALT)).toBe(0x58);
    writeWords(cpu, new Uint8Array(512).fill(9));
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x10, nsect: 1, lbal: 0, lbam: 0x80, alt: 0x41 });
    // WRITE MULTIPLE of 4 at 32766 with blocks of 4: the straddling block fails whole, nothing written, the
    // task file at the block's start.
    cpu.outb(NSECT, 4);
    cpu.outb(CMDREG, 0xc6);
    await waitIrq(cpu);
    cpu.inb(STATUS);
    lba28(cpu, 32766, 4);
    cpu.outb(CMDREG, 0xc5);
    writeWords(cpu, new Uint8Array(2048).fill(9));
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x10, nsect: 4, lbal: 0xfe, lbam: 0x7f, alt: 0x41 });
    expect(disk.sector(32767)).toEqual(pattern(32767));
  });

  it("read-only medium: every write command aborts (Status 41h, Error 04h ABRT) before any data phase", async () => {
    const { cpu, disk } = rig({ engine, readOnly: true });
    for (const op of [0x30, 0x31, 0x34, 0x39, 0x3c, 0xc5, 0xca, 0xcb, 0x35]) {
      lba28(cpu, 5, 1);
      cpu.outb(CMDREG, op);
      expect(cpu.inb(ALT)).toBe(0x41);
      expect(cpu.inb(ERR)).toBe(0x04);
      await waitIrq(cpu);
      cpu.inb(STATUS);
    }
    writePrdt(cpu, 0x10000, [[0x20000, 512]]);
    sendDma(cpu, 0x06, 0, 1, 0x10000, false, 0x01);
    expect(cpu.inb(ALT)).toBe(0x41);
    expect(disk.sector(5)).toEqual(pattern(5));
    lba28(cpu, 5, 1);
    cpu.outb(CMDREG, 0x20); // reads still work
    await waitIrq(cpu);
    expect(readWords(cpu, 256)).toEqual(pattern(5));
  });

  it("backend read error: UNC, task file at the failing sector, transfer stopped there (ATA/ATAPI-6 §8.26)", async () => {
    const { cpu } = rig({ engine, faults: [{ op: "read", from: 103, to: 104 }] });
    lba28(cpu, 100, 6);
    cpu.outb(CMDREG, 0x20);
    for (let s = 100; s < 103; s++) {
      await waitIrq(cpu);
      expect(cpu.inb(STATUS)).toBe(0x58);
      expect(readWords(cpu, 256)).toEqual(pattern(s));
    }
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x40, nsect: 3, lbal: 103, lbam: 0, alt: 0x41 });
    expect(cpu.inw(DATA)).toBe(0);
    // DMA: the same error; Bus Master Interrupt set, no Bus Master error (the bus transfer was fine).
    writePrdt(cpu, 0x10000, [[0x20000, 6 * 512]]);
    sendDma(cpu, 0xc8, 100, 6, 0x10000, true);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(taskFile(cpu)).toMatchObject({ err: 0x40, nsect: 3, lbal: 103, alt: 0x41 });
    // READ VERIFY reads the medium too.
    lba28(cpu, 101, 4);
    cpu.outb(CMDREG, 0x40);
    await waitNotBusy(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x40, nsect: 2, lbal: 103, alt: 0x41 });
  });

  it("backend write error, write cache off: device fault, ABRT, task file at the failing sector, after that block", async () => {
    const { cpu } = rig({ engine, writeCache: false, faults: [{ op: "write", from: 201, to: 202 }] });
    lba28(cpu, 200, 3);
    cpu.outb(CMDREG, 0x30);
    writeWords(cpu, new Uint8Array(512).fill(1));
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
    writeWords(cpu, new Uint8Array(512).fill(2));
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x04, nsect: 2, lbal: 201, alt: 0x61 });
  });

  it("backend write error, write cache on: blocks acknowledged from the cache, error at the end for the failing sector", async () => {
    const { cpu, disk, fault } = rig({ engine, faults: [{ op: "write", from: 201, to: 202 }] });
    lba28(cpu, 200, 3);
    cpu.outb(CMDREG, 0x30);
    for (const fill of [1, 2]) {
      writeWords(cpu, new Uint8Array(512).fill(fill));
      await waitIrq(cpu);
      expect(cpu.inb(STATUS)).toBe(0x58);
    }
    writeWords(cpu, new Uint8Array(512).fill(3));
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ err: 0x04, nsect: 2, lbal: 201, alt: 0x61 });
    expect(disk.sector(200).every((x) => x === 1)).toBe(true); // written up to the failing sector
    expect(disk.sector(201)).toEqual(pattern(201));
    fault!.clearRules();
    fault!.addRule({ op: "flush" });
    cpu.outb(CMDREG, 0xe7);
    await waitNotBusy(cpu);
    expect([cpu.inb(STATUS), cpu.inb(ERR)]).toEqual([0x61, 0x04]);
    // The error does not stick: the next command runs normally.
    fault!.clearRules();
    cpu.outb(CMDREG, 0xea);
    expect(await waitNotBusy(cpu)).toBe(0x50);
  });

  it("write cache on: a multi-block PIO write reaches storage in one request; SRST still writes acknowledged blocks", async () => {
    const { cpu, disk, fault } = rig({ engine, faults: [] });
    let writes = 0;
    const inner = fault!;
    const orig = inner.write.bind(inner);
    inner.write = (sector, bufs) => {
      writes++;
      orig(sector, bufs);
    };
    const origStart = inner.startIo.bind(inner);
    inner.startIo = (req, done) => {
      if (req.op === "write") writes++;
      origStart(req, done);
    };
    lba28(cpu, 400, 8);
    cpu.outb(CMDREG, 0x30);
    for (let i = 0; i < 8; i++) {
      if (i > 0) {
        await waitIrq(cpu);
        expect(cpu.inb(STATUS)).toBe(0x58);
      }
      writeWords(cpu, new Uint8Array(512).fill(0x40 + i));
    }
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x50);
    expect(writes).toBe(1);
    for (let i = 0; i < 8; i++) expect(disk.sector(400 + i)[0]).toBe(0x40 + i);
    // Two blocks acknowledged, then SRST in the middle of the command.
    lba28(cpu, 500, 4);
    cpu.outb(CMDREG, 0x30);
    writeWords(cpu, new Uint8Array(512).fill(7));
    await waitIrq(cpu);
    cpu.inb(STATUS);
    writeWords(cpu, new Uint8Array(512).fill(8));
    await waitIrq(cpu);
    cpu.outb(CTL, 0x04);
    cpu.outb(CTL, 0x00);
    for (let i = 0; i < 5; i++) await cpu.relax();
    expect(disk.sector(500)[0]).toBe(7);
    expect(disk.sector(501)[0]).toBe(8);
    expect(disk.sector(502)).toEqual(pattern(502));
  });

  it("IDENTIFY default geometry from a valid MBR partition table (heads/sectors of the first entry)", async () => {
    const data = new Uint8Array(8192 * 512);
    // Partition 1 ends at head 7, sector 32: 8 heads x 32 sectors.
    data[0x1be + 5] = 7;
    data[0x1be + 6] = 32;
    data[0x1be + 12] = 0x00;
    data[0x1be + 13] = 0x1f; // 7936 sectors
    data[510] = 0x55;
    data[511] = 0xaa;
    const hv = bareHv();
    createPc({ hv, primary: { master: { engine: makeEngine(new MemoryBackend(data), engine) } } });
    const cpu = hv.vcpu(0);
    cpu.outb(CMDREG, 0xec);
    await waitIrq(cpu);
    const w = new Uint16Array(readWords(cpu, 256).buffer);
    expect([w[1], w[3], w[6]]).toEqual([32, 8, 32]);
  });

  it("with the async engine the PIO sector fetch is visible as BSY (D0h), with the sync engine it is not", async () => {
    const { cpu } = rig({ engine });
    lba28(cpu, 10, 1);
    cpu.outb(CMDREG, 0x20);
    expect(cpu.inb(ALT)).toBe(engine === "async" ? 0xd0 : 0x58);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(cpu.inb(BM_STATUS) & 0x04).toBe(0x04);
  });
});

describe.each(ENGINES)("the LBA48 trap (QEMU §4.j) with the %s engine", (engine) => {
  it("after SRST, writing each register once leaves the signature in the HOB bytes: EXT commands see LBA 0x0001000003E8", async () => {
    const { cpu } = rig({ engine });
    const program = () => {
      cpu.outb(CTL, 0x04);
      cpu.outb(CTL, 0x00);
      cpu.outb(DEV, 0xe0);
      [0x00, 0x01, 0xe8, 0x03, 0x00].forEach((v, i) => cpu.outb(FEAT + i, v));
      cpu.outb(CTL, 0x80);
      const hob = [cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)];
      cpu.outb(CTL, 0x00);
      return hob;
    };
    expect(program()).toEqual([0x01, 0x01, 0x00, 0x00]);
    cpu.outb(CMDREG, 0x24); // READ SECTORS EXT: count 0x0101 at 0x0001000003E8 -> beyond the end
    await waitIrq(cpu);
    expect([cpu.inb(STATUS), cpu.inb(ERR)]).toEqual([0x41, 0x10]); // QEMU: ABRT (docs/conformance.md C1)
    program();
    cpu.outb(CMDREG, 0x27); // READ NATIVE MAX ADDRESS EXT ignores the address
    await waitIrq(cpu);
    expect([cpu.inb(STATUS), cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0x50, 0xff, 0x7f, 0x00]);
    program();
    cpu.outb(CMDREG, 0x42); // READ VERIFY EXT: range-checked here (QEMU succeeds)
    await waitNotBusy(cpu);
    expect([cpu.inb(STATUS), cpu.inb(ERR)]).toEqual([0x41, 0x10]);
  });
});
