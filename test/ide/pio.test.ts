/**
 * PIO protocols, walked through the ATA host-protocol states (ATA/ATAPI-6 §9.7 PIO data-in, §9.8 PIO
 * data-out: HP0 Check_Status, HP1 Check_Status_A, HP2 Send_Data / HP4 Transfer_Data, HP3 INTRQ_Wait), with the
 * register bytes QEMU 7.2 was observed to show (qemu-ide-observed §4.b-§4.e) unless the conformance list says
 * otherwise.
 */
import { describe, expect, it } from "vitest";
import { getString } from "../../src/ide/identify.ts";
import {
  ALT,
  CMDREG,
  CTL,
  DATA,
  DEV,
  ENGINES,
  ERR,
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
  STATUS,
  taskFile,
  waitIrq,
  waitNotBusy,
  writeWords,
} from "./helpers.ts";

describe.each(ENGINES)("PIO with the %s engine", (engine) => {
  it("IDENTIFY DEVICE: DRQ block of 256 words, strings, geometry, status per word (QEMU §4.b, ide-test /ide/identify)", async () => {
    const { cpu } = rig({ engine, serial: "testdisk", firmware: "version" });
    cpu.outb(DEV, 0xa0);
    cpu.outb(CMDREG, 0xec);
    // HP3 INTRQ_Wait: IDENTIFY completes with DRQ at once; INTRQ asserted.
    await waitIrq(cpu);
    expect(cpu.inb(ALT)).toBe(0x58);
    expect(cpu.inb(STATUS)).toBe(0x58); // reading Status lowers INTRQ
    expect(cpu.irqRaised(IRQ)).toBe(false);
    const words = new Uint16Array(256);
    for (let i = 0; i < 256; i++) {
      // ide-test: before each word, DRDY|DRQ set and BSY|DF|ERR clear.
      expect(cpu.inb(ALT) & 0xe9).toBe(0x48);
      words[i] = cpu.inw(DATA);
    }
    expect(cpu.inb(ALT)).toBe(0x50); // DRQ drops after the last word, no interrupt
    expect(cpu.irqRaised(IRQ)).toBe(false);
    expect(cpu.inw(DATA)).toBe(0); // past the block: nothing
    expect(getString(words, 10, 10)).toBe("testdisk            ");
    expect(getString(words, 23, 4)).toBe("version ");
    expect(getString(words, 27, 20).trimEnd()).toBe("XENIDE HARDDISK");
    // 16 MiB disk: 32 cylinders x 16 heads x 63 sectors (QEMU: cylinders = sectors / 1008).
    expect([words[1], words[3], words[6]]).toEqual([32, 16, 63]);
    expect([words[54], words[55], words[56], words[57], words[58]]).toEqual([32, 16, 63, 32256, 0]);
    expect([words[60], words[61]]).toEqual([0x8000, 0]);
    expect([words[100], words[101], words[102], words[103]]).toEqual([0x8000, 0, 0, 0]);
    expect(words[47]).toBe(0x8010);
    expect(words[49]).toBe(0x0b00);
    expect(words[59]).toBe(0x0110);
    expect(words[83]).toBe(0x7400);
    expect(words[85]! & 0x20).toBe(0x20); // write cache enabled (ide-test)
    expect(words[88]).toBe(0x203f);
    expect(words[169]).toBe(1);
    // Word 255: A5h signature and checksum (ATA/ATAPI-6 §8.15.66): byte sum of the page is 0 mod 256.
    expect(words[255]! & 0xff).toBe(0xa5);
    let sum = 0;
    for (const w of words) sum += (w & 0xff) + (w >> 8);
    expect(sum & 0xff).toBe(0);
    // Task file after IDENTIFY (QEMU §4.b): ERR 00, NSECT 01, LBAL 01, LBAM 00, LBAH 00, DEV a0.
    expect(taskFile(cpu)).toMatchObject({ err: 0, nsect: 1, lbal: 1, lbam: 0, lbah: 0, dev: 0xa0 });
  });

  it("default serial is deterministic and model/firmware defaults are ours", () => {
    const a = rig({ engine });
    const b = rig({ engine });
    const id = (cpu: typeof a.cpu) => {
      cpu.outb(DEV, 0xa0);
      cpu.outb(CMDREG, 0xec);
      return readWords(cpu, 256);
    };
    return Promise.all([waitNotBusy(a.cpu), waitNotBusy(b.cpu)]).then(async () => {
      await waitNotBusy(a.cpu);
      const wa = new Uint16Array(id(a.cpu).buffer);
      await waitNotBusy(b.cpu);
      const wb = new Uint16Array(id(b.cpu).buffer);
      expect(getString(wa, 10, 10)).toBe(getString(wb, 10, 10));
      expect(getString(wa, 10, 10)).toMatch(/^XI[0-9A-F]{12} {6}$/);
      expect(getString(wa, 23, 4)).toBe("0.1     ");
    });
  });

  it("READ SECTORS LBA28, 2 sectors at 0x1234: registers advance as each block is buffered (QEMU §4.c)", async () => {
    const { cpu } = rig({ engine });
    lba28(cpu, 0x1234, 2);
    cpu.inb(STATUS);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    // Block 1 ready: NSECT 01, LBA 0x001235, DEV e0, status 58.
    expect(taskFile(cpu)).toMatchObject({
      err: 0,
      nsect: 1,
      lbal: 0x35,
      lbam: 0x12,
      lbah: 0,
      dev: 0xe0,
      alt: 0x58,
    });
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(readWords(cpu, 256)).toEqual(pattern(0x1234));
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ nsect: 0, lbal: 0x36, lbam: 0x12, alt: 0x58 });
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(readWords(cpu, 256)).toEqual(pattern(0x1235));
    expect(cpu.inb(ALT)).toBe(0x50);
    expect(cpu.irqRaised(IRQ)).toBe(false); // no interrupt after the last block of a read
  });

  it("data port: 32-bit reads, inb consumes a word, outb is ignored (QEMU §4.c)", async () => {
    const { cpu } = rig({ engine });
    lba28(cpu, 7, 1);
    cpu.outb(CMDREG, 0x20);
    await waitNotBusy(cpu);
    const p = pattern(7);
    const dv = new DataView(p.buffer);
    expect(cpu.inl(DATA)).toBe(dv.getUint32(0, true));
    expect(cpu.inb(DATA)).toBe(p[4]); // low byte of word 2...
    expect(cpu.inw(DATA)).toBe(dv.getUint16(6, true)); // ...and the whole word was consumed
    for (let i = 8; i < 512; i += 4) expect(cpu.inl(DATA)).toBe(dv.getUint32(i, true));
    expect(cpu.inb(ALT)).toBe(0x50);
    expect(cpu.inl(DATA)).toBe(0);
  });

  it("REP INSW string I/O moves whole sectors per exit", async () => {
    const { cpu, hv } = rig({ engine });
    lba28(cpu, 100, 8);
    cpu.outb(CMDREG, 0x20);
    const gpa = 0x20000;
    for (let s = 0; s < 8; s++) {
      await waitIrq(cpu);
      cpu.inb(STATUS);
      const before = hv.acct.counts.stringIo;
      cpu.insw(DATA, gpa + s * 512, 256);
      expect(hv.acct.counts.stringIo - before).toBe(1);
    }
    const got = new Uint8Array(8 * 512);
    hv.mem.read(gpa, got);
    for (let s = 0; s < 8; s++) expect(got.subarray(s * 512, s * 512 + 512)).toEqual(pattern(100 + s));
    expect(cpu.inb(ALT)).toBe(0x50);
  });

  it("WRITE SECTORS, 2 sectors at 100: DRQ without interrupt, then one interrupt per block (QEMU §4.d)", async () => {
    const { cpu, disk } = rig({ engine });
    lba28(cpu, 100, 2);
    cpu.outb(CMDREG, 0x30);
    // HP1 Check_Status_A: DRQ at once, no interrupt before the first block.
    expect(cpu.inb(ALT)).toBe(0x58);
    expect(cpu.irqRaised(IRQ)).toBe(false);
    const a = new Uint8Array(512).fill(0x55);
    const b = new Uint8Array(512).fill(0xaa);
    writeWords(cpu, a);
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ nsect: 1, lbal: 0x65, alt: 0x58 });
    expect(cpu.inb(STATUS)).toBe(0x58);
    writeWords(cpu, b);
    await waitIrq(cpu);
    expect(taskFile(cpu)).toMatchObject({ nsect: 0, lbal: 0x66, alt: 0x50 });
    expect(cpu.inb(STATUS)).toBe(0x50);
    expect(disk.sector(100)).toEqual(a);
    expect(disk.sector(101)).toEqual(b);
  });

  it("REP OUTSW string I/O writes sectors", async () => {
    const { cpu, disk, hv } = rig({ engine });
    const src = new Uint8Array(4 * 512);
    for (let i = 0; i < src.length; i++) src[i] = (i * 13) & 0xff;
    hv.mem.write(0x30000, src);
    lba28(cpu, 9, 4);
    cpu.outb(CMDREG, 0x30);
    for (let s = 0; s < 4; s++) {
      if (s > 0) await waitIrq(cpu);
      expect(cpu.inb(STATUS) & 0x08).toBe(0x08);
      cpu.outsw(DATA, 0x30000 + s * 512, 256);
    }
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x50);
    expect(disk.sector(9, 4)).toEqual(src);
  });

  it("READ/WRITE MULTIPLE move multiple-sector DRQ blocks; SET MULTIPLE MODE 0 makes them abort", async () => {
    const { cpu, disk, hv } = rig({ engine });
    // Power-on multiple setting 16 (IDENTIFY word 59 = 0x0110, QEMU §4.b). Set 4.
    cpu.outb(NSECT, 4);
    cpu.outb(CMDREG, 0xc6);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x50);
    lba28(cpu, 200, 10);
    cpu.outb(CMDREG, 0xc4);
    const sizes: number[] = [];
    for (let left = 10; left > 0;) {
      await waitIrq(cpu);
      expect(cpu.inb(STATUS)).toBe(0x58);
      const n = Math.min(4, left);
      sizes.push(n);
      expect(cpu.inb(NSECT)).toBe(left - n);
      cpu.insw(DATA, 0x40000, n * 256);
      left -= n;
    }
    expect(sizes).toEqual([4, 4, 2]);
    const last = new Uint8Array(1024);
    hv.mem.read(0x40000, last);
    expect(last.subarray(0, 512)).toEqual(pattern(208));
    // WRITE MULTIPLE of 6 sectors: blocks of 4 and 2.
    lba28(cpu, 300, 6);
    cpu.outb(CMDREG, 0xc5);
    expect(cpu.inb(ALT)).toBe(0x58);
    hv.mem.write(0x50000, new Uint8Array(3072).fill(0x77));
    cpu.outsw(DATA, 0x50000, 4 * 256);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(cpu.inb(NSECT)).toBe(2);
    cpu.outsw(DATA, 0x50000, 2 * 256);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x50);
    expect(disk.sector(300, 6).every((x) => x === 0x77)).toBe(true);
    // Multiple mode off: READ MULTIPLE aborts (ATA/ATAPI-6 §8.24).
    cpu.outb(NSECT, 0);
    cpu.outb(CMDREG, 0xc6);
    await waitIrq(cpu);
    cpu.inb(STATUS);
    lba28(cpu, 0, 1);
    cpu.outb(CMDREG, 0xc4);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x04);
  });

  it("LBA48: HOB FIFO readback and READ SECTORS EXT (QEMU §4.e)", async () => {
    const { cpu } = rig({ engine });
    const regs = [0x1f1, 0x1f2, 0x1f3, 0x1f4, 0x1f5];
    regs.forEach((p, i) => {
      cpu.outb(p, 0x10 + i);
      cpu.outb(p, 0x20 + i);
    });
    cpu.outb(CTL, 0x00);
    // 0x1F1 reads the Error register: 01h, the power-on diagnostic result (ATA/ATAPI-6 §9.1; QEMU shows 00h,
    // listed in docs/conformance.md).
    expect(regs.map((p) => cpu.inb(p))).toEqual([0x01, 0x21, 0x22, 0x23, 0x24]);
    cpu.outb(CTL, 0x80);
    expect(regs.map((p) => cpu.inb(p))).toEqual([0x10, 0x11, 0x12, 0x13, 0x14]);
    cpu.outb(LBAL, 0x32); // a register write clears HOB
    expect(regs.map((p) => cpu.inb(p))).toEqual([0x01, 0x21, 0x32, 0x23, 0x24]);
    cpu.outb(CTL, 0x00);

    lba48(cpu, 0x7f00, 2);
    cpu.outb(CMDREG, 0x24);
    for (let s = 0; s < 2; s++) {
      await waitIrq(cpu);
      expect(cpu.inb(STATUS)).toBe(0x58);
      expect(readWords(cpu, 256)).toEqual(pattern(0x7f00 + s));
    }
    expect(cpu.inb(ALT)).toBe(0x50);
    expect([cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0, 0x02, 0x7f, 0]);
    cpu.outb(CTL, 0x80);
    expect([cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0, 0, 0, 0]);
    cpu.outb(CTL, 0);
  });

  it("LBA48 address above 2^32 and count 0 = 65536 (ATA/ATAPI-6 §6.2.2)", async () => {
    const { cpu } = rig({ engine });
    // Beyond the end of the disk: IDNF with the task file at the address (48-bit write-back of HOB bytes).
    lba48(cpu, 0x0001_0000_0000, 1);
    cpu.outb(CMDREG, 0x24);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x10);
    cpu.outb(CTL, 0x80);
    expect([cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)]).toEqual([0x00, 0x01, 0x00]);
    cpu.outb(CTL, 0);
    // Count 0 on READ SECTORS EXT = 65536 sectors: on a 32768-sector disk the first block is fine.
    lba48(cpu, 0, 0);
    cpu.outb(CMDREG, 0x24);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x58);
    expect(cpu.inb(NSECT)).toBe(0xff); // 65535 left, low byte
    cpu.outb(CTL, 0x80);
    expect(cpu.inb(NSECT)).toBe(0x00); // the HOB count byte keeps its written value
    cpu.outb(CTL, 0);
    // Count 0 on READ SECTORS = 256 sectors.
    cpu.outb(CTL, 0x04);
    cpu.outb(CTL, 0x00);
    lba28(cpu, 0, 0);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(cpu.inb(NSECT)).toBe(0xff);
  });

  it("CHS addressing: 16 heads x 63 sectors, task file advances in CHS (ATA/ATAPI-6 §6.2.1)", async () => {
    const { cpu } = rig({ engine });
    // C/H/S = 1/2/3 -> LBA (1*16 + 2)*63 + 2 = 1136.
    cpu.outb(DEV, 0xa2);
    cpu.outb(NSECT, 2);
    cpu.outb(LBAL, 3);
    cpu.outb(LBAM, 1);
    cpu.outb(LBAH, 0);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    cpu.inb(STATUS);
    expect([cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(DEV)]).toEqual([4, 1, 0xa2]);
    expect(readWords(cpu, 256)).toEqual(pattern(1136));
    await waitIrq(cpu);
    expect(readWords(cpu, 256)).toEqual(pattern(1137));
    // Sector 0 names no sector: IDNF.
    cpu.outb(DEV, 0xa0);
    cpu.outb(NSECT, 1);
    cpu.outb(LBAL, 0);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x10);
  });

  it("register writes and commands are ignored while DRQ is set; the transfer continues (QEMU §4.f)", async () => {
    const { cpu } = rig({ engine });
    lba28(cpu, 5, 1);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    cpu.outb(NSECT, 0x77);
    expect(cpu.inb(NSECT)).toBe(0x00);
    cpu.outb(CMDREG, 0xec);
    expect(cpu.inb(ALT)).toBe(0x58);
    expect(readWords(cpu, 256)).toEqual(pattern(5));
    expect(cpu.inb(ALT)).toBe(0x50);
  });
});
