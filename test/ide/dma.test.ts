/**
 * Bus Master IDE DMA (BMIDE rev 1.0; QEMU 7.2 observations §4.0 and §4.i) and QEMU's own ide-test scenarios
 * re-expressed against our machine: /ide/bmdma/simple_rw, /ide/bmdma/trim, /ide/bmdma/various_prdts,
 * /ide/bmdma/no_busmaster, /ide/flush.
 */
import { describe, expect, it } from "vitest";
import {
  ALT,
  BM_CMD,
  BM_PRDT,
  BM_STATUS,
  CMDREG,
  ENGINES,
  ERR,
  IRQ,
  LBAL,
  lba28,
  NSECT,
  pattern,
  PatternDisk,
  rig,
  sendDma,
  STATUS,
  waitBm,
  waitIrq,
  waitNotBusy,
  writePrdt,
} from "./helpers.ts";

const PRDT = 0x10000;
const BUF = 0x20000;

describe.each(ENGINES)("Bus Master DMA with the %s engine", (engine) => {
  it("BM registers: reset values and write semantics (QEMU §4.0)", () => {
    const { cpu } = rig({ engine });
    const bytes = Array.from({ length: 16 }, (_, i) => cpu.inb(BM_CMD + i));
    expect(bytes).toEqual([0x00, 0xff, 0x00, 0xff, 0, 0, 0, 0, 0x00, 0xff, 0x00, 0xff, 0, 0, 0, 0]);
    expect(cpu.inw(BM_CMD)).toBe(0xffff);
    expect(cpu.inw(BM_STATUS)).toBe(0xffff);
    expect(cpu.inl(BM_CMD)).toBe(0xffffffff);
    cpu.outb(BM_STATUS, 0xff);
    expect(cpu.inb(BM_STATUS)).toBe(0x60); // bits 5-6 R/W, 1-2 W1C, 0 RO
    cpu.outb(BM_STATUS, 0x00);
    expect(cpu.inb(BM_STATUS)).toBe(0x00);
    cpu.outb(BM_CMD, 0xf6);
    expect(cpu.inb(BM_CMD)).toBe(0x00); // only bits 0 and 3 kept
    cpu.outl(BM_PRDT, 0x12345677);
    expect(cpu.inl(BM_PRDT)).toBe(0x12345674); // low 2 bits dropped
    cpu.outw(BM_PRDT, 0xabcd);
    expect(cpu.inl(BM_PRDT)).toBe(0x1234abcc);
    cpu.outw(BM_CMD, 0x0101); // wider writes to command/status ignored
    expect(cpu.inb(BM_CMD)).toBe(0);
  });

  it("ide-test /ide/bmdma/simple_rw: WRITE DMA 0x55/0xaa to sectors 0/1, READ DMA back", async () => {
    const { cpu, disk, hv } = rig({ engine });
    for (const [lba, fill] of [
      [0, 0x55],
      [1, 0xaa],
    ] as const) {
      hv.mem.write(BUF, new Uint8Array(512).fill(fill));
      writePrdt(cpu, PRDT, [[BUF, 512]]);
      sendDma(cpu, 0xca, lba, 1, PRDT, false);
      const bm = await waitBm(cpu);
      expect(bm).toBe(0x04); // INTR only
      expect(cpu.irqRaised(IRQ)).toBe(true); // IRQ level == BM INTR bit
      expect(cpu.inb(STATUS) & 0xa9).toBe(0); // no BSY, DF, DRQ, ERR
      expect(cpu.irqRaised(IRQ)).toBe(false); // reading Status lowered it
      expect(disk.sector(lba).every((x) => x === fill)).toBe(true);
    }
    for (const [lba, fill] of [
      [0, 0x55],
      [1, 0xaa],
    ] as const) {
      hv.mem.write(BUF, new Uint8Array(512));
      writePrdt(cpu, PRDT, [[BUF, 512]]);
      sendDma(cpu, 0xc8, lba, 1, PRDT, true);
      expect(await waitBm(cpu)).toBe(0x04);
      expect(cpu.inb(STATUS)).toBe(0x50);
      const got = new Uint8Array(512);
      hv.mem.read(BUF, got);
      expect(got.every((x) => x === fill)).toBe(true);
    }
  });

  it("READ DMA scatter over PRDs 512 + 1024 (QEMU §4.i), task file advanced", async () => {
    const { cpu, hv } = rig({ engine });
    writePrdt(cpu, PRDT, [
      [BUF, 512],
      [BUF + 0x4000, 1024],
    ]);
    sendDma(cpu, 0xc8, 0x300, 3, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(cpu.inb(STATUS)).toBe(0x50);
    expect([cpu.inb(ERR), cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(0x1f4)]).toEqual([0, 0, 0x03, 0x03]);
    const a = new Uint8Array(512);
    const b = new Uint8Array(1024);
    hv.mem.read(BUF, a);
    hv.mem.read(BUF + 0x4000, b);
    expect(a).toEqual(pattern(0x300));
    expect(b.subarray(0, 512)).toEqual(pattern(0x301));
    expect(b.subarray(512)).toEqual(pattern(0x302));
  });

  it("PRDs that are not whole sectors (bounce path) and 0 = 64 KiB, bit 0 ignored", async () => {
    const { cpu, hv, disk } = rig({ engine });
    // 300 + 212 + 1025 (bit 0 ignored -> 1024) for 3 sectors.
    writePrdt(cpu, PRDT, [
      [BUF, 300],
      [BUF + 0x1000, 212],
      [BUF + 0x2000, 1025],
    ]);
    sendDma(cpu, 0xc8, 40, 3, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x04);
    const got = new Uint8Array(1536);
    hv.mem.read(BUF, got.subarray(0, 300));
    hv.mem.read(BUF + 0x1000, got.subarray(300, 512));
    hv.mem.read(BUF + 0x2000, got.subarray(512));
    expect(got).toEqual(disk.sector(40, 3));
    // A single 64 KiB entry (count 0) for 128 sectors, written.
    const src = new Uint8Array(65536);
    for (let i = 0; i < src.length; i++) src[i] = (i * 31) & 0xff;
    hv.mem.write(0x100000, src);
    writePrdt(cpu, PRDT, [[0x100000, 0]]);
    sendDma(cpu, 0xca, 1000, 128, PRDT, false);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(disk.sector(1000, 128)).toEqual(src);
  });

  it("PRD entries that continue each other in guest memory reach storage as one buffer of guest RAM", async () => {
    /** Records the buffers storage is asked to fill: length, and whether they are guest RAM itself. */
    class RecordingDisk extends PatternDisk {
      seen: [number, boolean][] = [];
      ram: ArrayBufferLike | null = null;
      override read(sector: number, bufs: readonly Uint8Array[]): void {
        for (const buf of bufs) this.seen.push([buf.length, buf.buffer === this.ram]);
        super.read(sector, bufs);
      }
    }
    const disk = new RecordingDisk(32768);
    const { cpu, hv } = rig({ engine, disk });
    disk.ram = (hv.mem.view(0, 0) as Uint8Array).buffer;
    disk.seen = []; // (the machine read the MBR for its geometry)
    // Two entries that continue each other, then one elsewhere: two buffers, both guest RAM (no bounce).
    writePrdt(cpu, PRDT, [
      [BUF, 0x800],
      [BUF + 0x800, 0x800],
      [BUF + 0x4000, 0x1000],
    ]);
    sendDma(cpu, 0xc8, 64, 16, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(disk.seen).toEqual([
      [0x1000, true],
      [0x1000, true],
    ]);
    const got = new Uint8Array(0x2000);
    hv.mem.read(BUF, got.subarray(0, 0x1000));
    hv.mem.read(BUF + 0x4000, got.subarray(0x1000));
    expect(got).toEqual(disk.sector(64, 16));
    // 300 + 212 bytes that continue each other make one whole sector: no bounce buffer either.
    cpu.inb(STATUS);
    disk.seen = [];
    writePrdt(cpu, PRDT, [
      [BUF + 0x8000, 300],
      [BUF + 0x8000 + 300, 212],
    ]);
    sendDma(cpu, 0xc8, 7, 1, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(disk.seen).toEqual([[512, true]]);
    const one = new Uint8Array(512);
    hv.mem.read(BUF + 0x8000, one);
    expect(one).toEqual(pattern(7));
  });

  it("ide-test /ide/bmdma/various_prdts: PRD shorter / equal / longer than the transfer, also stopped early", async () => {
    const { cpu } = rig({ engine });
    for (const sectors of [1, 2, 4, 8, 16, 32, 64, 128, 256]) {
      for (const size of [0, 256, 512, 4096, 65024, 65280]) {
        const prdBytes = size === 0 ? 65536 : size;
        const req = sectors * 512;
        for (const abort of [false, true]) {
          writePrdt(cpu, PRDT, [[BUF, size]]);
          sendDma(cpu, 0xc8, 0, sectors, PRDT, true);
          if (abort) {
            // Stopping the engine does not cancel storage work already started (QEMU drains it): wait for
            // the drive to finish (DRQ and BSY clear) before looking at the Bus Master status.
            cpu.outb(BM_CMD, 0);
            while (cpu.inb(ALT) & 0x88) await cpu.relax();
          }
          const st = await waitBm(cpu);
          await waitNotBusy(cpu);
          const expected = prdBytes < req ? 0x00 : prdBytes === req || abort ? 0x04 : 0x05;
          expect({ sectors, size, abort, st }).toEqual({ sectors, size, abort, st: expected });
          expect(cpu.inb(ALT) & 0x21).toBe(0); // never DF or ERR
          cpu.inb(STATUS);
        }
      }
    }
  });

  it("a transfer ending exactly at the end of an entry that is not the last keeps Active set: BM 05 (QEMU 7.2, BMIDE §3.1)", async () => {
    const { cpu } = rig({ engine });
    // [512][512, EOT]: one sector moves through the first entry; the table is not exhausted.
    for (const [entries, expected] of [
      [
        [
          [BUF, 512, false],
          [BUF + 4096, 512, true],
        ],
        0x05,
      ],
      [
        [
          [BUF, 512, false],
          [BUF + 512, 512, true],
        ],
        0x05,
      ],
      [[[BUF, 512, true]], 0x04],
      [
        [
          [BUF, 256, false],
          [BUF + 4096, 256, true],
        ],
        0x04,
      ],
    ] as [[number, number, boolean][], number][]) {
      writePrdt(cpu, PRDT, entries);
      sendDma(cpu, 0xc8, 3, 1, PRDT, true);
      expect({ entries, st: await waitBm(cpu) }).toEqual({ entries, st: expected });
      await waitNotBusy(cpu);
      cpu.inb(STATUS);
    }
  });

  it("PRD table shorter than the transfer: nothing moves, BM 00, no interrupt, NSECT kept (QEMU §4.i)", async () => {
    const { cpu, hv } = rig({ engine });
    hv.mem.write(BUF, new Uint8Array(1024).fill(0xee));
    writePrdt(cpu, PRDT, [[BUF, 512]]);
    sendDma(cpu, 0xc8, 0x10, 2, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x00);
    expect(cpu.irqRaised(IRQ)).toBe(false);
    expect(cpu.inb(ALT)).toBe(0x50);
    expect(cpu.inb(NSECT)).toBe(2);
    const got = new Uint8Array(1024);
    hv.mem.read(BUF, got);
    expect(got.every((x) => x === 0xee)).toBe(true);
  });

  it("BM started before the command; interrupt bit set by PIO interrupts too (QEMU §4.i)", async () => {
    const { cpu, hv } = rig({ engine });
    writePrdt(cpu, PRDT, [[BUF, 1024]]);
    cpu.outl(BM_PRDT, PRDT);
    cpu.outb(BM_CMD, 0x09);
    expect(cpu.inb(BM_STATUS)).toBe(0x01);
    lba28(cpu, 0x200, 2);
    cpu.outb(CMDREG, 0xc8);
    expect(await waitBm(cpu)).toBe(0x04);
    const got = new Uint8Array(512);
    hv.mem.read(BUF + 512, got);
    expect(got).toEqual(pattern(0x201));
    cpu.outb(BM_CMD, 0);
    expect(cpu.inb(BM_STATUS)).toBe(0x04); // stopping keeps INTR
    cpu.outb(BM_STATUS, 0x04);
    expect(cpu.inb(BM_STATUS)).toBe(0x00);
    // A PIO command's interrupt sets it too.
    lba28(cpu, 0, 1);
    cpu.outb(CMDREG, 0x20);
    await waitIrq(cpu);
    expect(cpu.inb(BM_STATUS)).toBe(0x04);
  });

  it("READ DMA beyond the end: IDNF, no transfer, BM INTR without the error bit", async () => {
    const { cpu } = rig({ engine });
    writePrdt(cpu, PRDT, [[BUF, 512]]);
    sendDma(cpu, 0xc8, 32768, 1, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x10); // IDNF (QEMU: ABRT 0x04, see docs/conformance.md)
    expect([cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(0x1f4), cpu.inb(0x1f5)]).toEqual([1, 0x00, 0x80, 0x00]);
  });

  it("DMA range crossing the end: nothing moves, IDNF, task file as issued (as QEMU, but IDNF)", async () => {
    const { cpu, hv } = rig({ engine });
    hv.mem.write(BUF, new Uint8Array(2048).fill(0xee));
    writePrdt(cpu, PRDT, [[BUF, 2048]]);
    sendDma(cpu, 0xc8, 32766, 4, PRDT, true);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x10);
    expect([cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(0x1f4)]).toEqual([4, 0xfe, 0x7f]);
    const got = new Uint8Array(2048);
    hv.mem.read(BUF, got);
    expect(got.every((x) => x === 0xee)).toBe(true);
  });

  it("PRD table or data buffer outside guest memory: BM error bit and interrupt, no crash", async () => {
    const cases: [number, number][] = [
      [0x3f_fffc, BUF], // PRD entry straddling the end of 4 MiB of RAM
      [PRDT, 0x3f_ff00], // buffer crossing the end of RAM
    ];
    for (const [prdt, gpa] of cases) {
      const { cpu } = rig({ engine });
      if (prdt === PRDT) writePrdt(cpu, PRDT, [[gpa, 1024]]);
      sendDma(cpu, 0xc8, 0, 2, prdt, true);
      const bm = await waitBm(cpu);
      expect(bm).toBe(0x06); // ERROR | INTR, Active clear
      expect(cpu.irqRaised(IRQ)).toBe(true);
      expect(cpu.inb(STATUS)).toBe(0x41);
      expect(cpu.inb(ERR)).toBe(0x04);
    }
  });

  it("ide-test /ide/bmdma/no_busmaster: PCI bus mastering off, DMA never touches memory", async () => {
    const { cpu, hv, m } = rig({ engine });
    m.ide.configWrite(0x04, 2, 0x0001); // I/O only
    for (let i = 0; i < 4096; i++) writePrdt(cpu, PRDT + 8 * i, [[0, 0, false]]);
    const before = new Uint8Array(0x40000);
    hv.mem.read(0, before);
    // As ide-test: "512 sectors", which READ DMA's 8-bit count makes 0 = 256 sectors (128 KiB).
    sendDma(cpu, 0xc8, 0, 512, PRDT, true);
    for (let i = 0; i < 10; i++) await cpu.relax();
    // The engine is started but cannot master the bus: Active, no interrupt, the drive still waits (DRQ).
    expect(cpu.inb(BM_STATUS)).toBe(0x01);
    expect(cpu.inb(ALT)).toBe(0x58);
    expect(cpu.irqRaised(IRQ)).toBe(false);
    const after = new Uint8Array(0x40000);
    hv.mem.read(0, after);
    expect(Buffer.from(after).equals(before)).toBe(true);
    // Turning bus mastering on lets the pending transfer run (here: PRD of 2 x 64 KiB).
    writePrdt(cpu, PRDT, [
      [0x200000, 0, false],
      [0x210000, 0, true],
    ]);
    m.ide.configWrite(0x04, 2, 0x0005);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(cpu.inb(STATUS)).toBe(0x50);
    const got = new Uint8Array(512);
    hv.mem.read(0x210000 + 65024, got);
    expect(got).toEqual(pattern(255));
  });

  it("ide-test /ide/bmdma/trim: DSM TRIM ranges (0,2),(6,8) discard; an out-of-range entry aborts", async () => {
    const { cpu, hv, disk } = rig({ engine });
    const payload = new Uint8Array(512);
    const dv = new DataView(payload.buffer);
    const entry = (i: number, lba: number, n: number) => {
      dv.setUint32(8 * i, lba, true);
      dv.setUint32(8 * i + 4, n << 16, true);
    };
    entry(0, 0, 2);
    entry(1, 6, 8);
    hv.mem.write(BUF, payload);
    writePrdt(cpu, PRDT, [[BUF, 512]]);
    sendDma(cpu, 0x06, 0, 1, PRDT, false, 0x01);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(cpu.inb(STATUS) & 0x01).toBe(0);
    expect(disk.sector(0, 2).every((x) => x === 0)).toBe(true);
    expect(disk.sector(6, 8).every((x) => x === 0)).toBe(true);
    expect(disk.sector(2)).toEqual(pattern(2));
    expect(disk.sector(14)).toEqual(pattern(14));
    // Last sector, count 2: beyond the end -> ABRT, nothing discarded.
    payload.fill(0);
    entry(0, 100, 1);
    entry(1, 32767, 2);
    hv.mem.write(BUF, payload);
    sendDma(cpu, 0x06, 0, 1, PRDT, false, 0x01);
    expect(await waitBm(cpu)).toBe(0x04);
    expect(cpu.inb(STATUS)).toBe(0x41);
    expect(cpu.inb(ERR)).toBe(0x04);
    expect(disk.sector(100)).toEqual(pattern(100));
  });

  it("ide-test /ide/flush: FLUSH CACHE after a DMA write ends DRDY only; BSY|DRDY while in flight", async () => {
    const { cpu, hv } = rig({ engine });
    hv.mem.write(BUF, new Uint8Array(512).fill(1));
    writePrdt(cpu, PRDT, [[BUF, 512]]);
    sendDma(cpu, 0xca, 0, 1, PRDT, false);
    await waitBm(cpu);
    cpu.inb(STATUS);
    cpu.outb(0x1f6, 0xa0);
    cpu.outb(CMDREG, 0xe7);
    const transient = cpu.inb(ALT);
    // Sync: already done; async: BSY|DRDY (0xC0, DSC clear) as QEMU shows while the flush runs.
    expect(engine === "sync" ? 0x50 : 0xc0).toBe(transient);
    expect(cpu.inb(0x1f6) & 0x10).toBe(0);
    expect(await waitNotBusy(cpu)).toBe(0x50);
    await waitIrq(cpu);
  });
});
