import { describe, expect, it } from "vitest";
import {
  AtaDrive,
  type AtaDriveOptions,
  AtaError,
  type AtaVia,
  ataString,
  parseIdentify,
} from "../../src/guest/ata-driver.ts";
import { findPiixIde, pciRead32, setupBusMaster } from "../../src/guest/pci-scan.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { createPc } from "../../src/machine/pc.ts";
import { ATA_CMD } from "../../src/spec/ata.ts";
import { AsyncEngine, FaultInjectingBackend, MemoryBackend, SyncEngine } from "../../src/storage/index.ts";
import type { BlockBackend, IoEngine } from "../../src/storage/types.ts";

const SECTORS = 4096; // 2 MiB

function pattern(sectors: number, salt = 0): Uint8Array {
  const d = new Uint8Array(sectors * 512);
  for (let s = 0; s < sectors; s++) {
    const o = s * 512;
    new DataView(d.buffer).setUint32(o, s ^ salt, true);
    for (let i = 4; i < 512; i++) d[o + i] = (s * 7 + i * 13 + salt) & 0xff;
  }
  return d;
}

type EngineKind = "sync" | "async";

function machine(kind: EngineKind, backend: BlockBackend, opts: { slave?: BlockBackend } = {}) {
  const mk = (b: BlockBackend): IoEngine => (kind === "sync" ? new SyncEngine(b) : new AsyncEngine(b));
  const hv = new Hypervisor({ ramSize: 16 * 1024 * 1024 });
  const primary: { master: { engine: IoEngine }; slave?: { engine: IoEngine } } = {
    master: { engine: mk(backend) },
  };
  if (opts.slave) primary.slave = { engine: mk(opts.slave) };
  createPc({ hv, primary });
  return hv;
}

async function drive(kind: EngineKind, backend: BlockBackend, opts: AtaDriveOptions = {}) {
  const hv = machine(kind, backend);
  const d = new AtaDrive(hv.vcpu(0), opts);
  const id = await d.probe();
  expect(id).not.toBeNull();
  return { hv, d };
}

describe("guest PCI setup", () => {
  it("finds the PIIX3 IDE function at 00:01.1 and maps an unassigned BAR4 with I/O and bus mastering", () => {
    const hv = machine("sync", new MemoryBackend(64));
    const v = hv.vcpu(0);
    const fn = findPiixIde(v);
    // QEMU 7.2 `-machine pc`: 00:01.1 is 8086:7010 (qemu-ide-observed §4.0).
    expect(fn).toEqual({ bus: 0, dev: 1, fn: 1 });
    expect(pciRead32(v, fn!, 0x20)).toBe(0x00000001); // BAR4 unassigned after reset: just the I/O bit
    const base = setupBusMaster(v, fn!);
    expect(base).toBe(0xc000);
    expect(pciRead32(v, fn!, 0x20)).toBe(0xc001);
    expect(pciRead32(v, fn!, 0x04) & 0x5).toBe(0x5);
    // The mapped block decodes: BM status reads 0 instead of the floating 0xFF.
    expect(v.inb(0xc002)).toBe(0x00);
    // A BAR already assigned is kept.
    expect(setupBusMaster(v, fn!, 0xd000)).toBe(0xc000);
  });
});

describe("IDENTIFY", () => {
  it("decodes the drive's model, serial, sizes and modes", async () => {
    const { d } = await drive("sync", new MemoryBackend(SECTORS));
    const id = d.identity;
    expect(id.sectors).toBe(SECTORS);
    expect(id.lba28Sectors).toBe(SECTORS);
    expect(id.lba48).toBe(true);
    expect(id.lba48Sectors).toBe(SECTORS);
    expect(id.model.length).toBeGreaterThan(0);
    expect(id.multipleMax).toBe(16); // QEMU word 47 = 0x8010
    expect(id.dma).toBe(true);
    expect(id.flushCache && id.flushCacheExt).toBe(true);
  });

  it("parses ATA strings high byte first and words 60-61/100-103", () => {
    const w = new Uint16Array(256);
    w[27] = 0x5145; // "QE"
    w[28] = 0x4d55; // "MU"
    w[29] = 0x2020;
    w[60] = 0x0000;
    w[61] = 0x1000; // 0x10000000 sectors
    w[83] = 1 << 10;
    w[100] = 0x0001;
    w[102] = 0x0002; // 2^33 + 1
    const id = parseIdentify(w);
    expect(ataString(w, 27, 3)).toBe("QEMU");
    expect(id.lba28Sectors).toBe(0x10000000);
    expect(id.lba48Sectors).toBe(2 ** 33 + 1);
    expect(id.sectors).toBe(2 ** 33 + 1);
  });

  it("reports an absent device as null (slave position with no drive: status reads 0)", async () => {
    const hv = machine("sync", new MemoryBackend(64));
    const d = new AtaDrive(hv.vcpu(0), { unit: 1 });
    expect(await d.probe()).toBeNull();
    const sec = new AtaDrive(hv.vcpu(0), { channel: 1 });
    expect(await sec.probe()).toBeNull();
  });
});

const VIAS: AtaVia[] = ["pio", "pio32", "rep", "dma"];

describe.each(["sync", "async"] as const)("read/write round trips (%s engine)", (kind) => {
  for (const via of VIAS) {
    for (const irq of [true, false]) {
      it(`${via}, ${irq ? "IRQ-driven" : "polling"}: reads the image and writes back what it reads`, async () => {
        const img = pattern(SECTORS);
        const backend = new MemoryBackend(img);
        const { d } = await drive(kind, backend, { via, irq });
        const got = await d.read(100, 9);
        expect(Buffer.from(got).equals(Buffer.from(img.subarray(100 * 512, 109 * 512)))).toBe(true);
        const data = pattern(5, 0x5a5a);
        await d.write(2000, data);
        await d.flush();
        expect(Buffer.from(backend.data.subarray(2000 * 512, 2005 * 512)).equals(Buffer.from(data))).toBe(
          true,
        );
        // Sectors around the write are untouched.
        expect(
          Buffer.from(backend.data.subarray(1999 * 512, 2000 * 512)).equals(
            Buffer.from(img.subarray(1999 * 512, 2000 * 512)),
          ),
        ).toBe(true);
        expect(
          Buffer.from(await d.read(1999, 7)).equals(
            Buffer.from(backend.data.subarray(1999 * 512, 2006 * 512)),
          ),
        ).toBe(true);
      });
    }
  }

  it("READ/WRITE MULTIPLE moves blocks of N sectors per interrupt", async () => {
    const img = pattern(SECTORS);
    const backend = new MemoryBackend(img);
    const { hv, d } = await drive(kind, backend, { multiple: 8 });
    expect(d.identity.multipleCurrent).toBe(8);
    const before = hv.acct.snapshot();
    const got = await d.read(10, 20);
    const c = hv.acct.since(before);
    expect(Buffer.from(got).equals(Buffer.from(img.subarray(10 * 512, 30 * 512)))).toBe(true);
    // 20 sectors in blocks of 8: interrupts for blocks 8, 8, 4.
    expect(c.irqInject).toBe(3);
    const data = pattern(11, 77);
    await d.write(300, data);
    expect(Buffer.from(backend.data.subarray(300 * 512, 311 * 512)).equals(Buffer.from(data))).toBe(true);
  });

  it("LBA48 forced, LBA28 forced, and automatic choice all address the same sectors", async () => {
    const img = pattern(SECTORS);
    for (const addressing of ["lba28", "lba48", "auto"] as const) {
      const { d } = await drive(kind, new MemoryBackend(img), { addressing, via: "rep" });
      const got = await d.read(SECTORS - 3, 3);
      expect(Buffer.from(got).equals(Buffer.from(img.subarray((SECTORS - 3) * 512)))).toBe(true);
    }
  });
});

describe("command planning", () => {
  function commands(hv: Hypervisor): number[] {
    const seen: number[] = [];
    hv.irq.onChange(() => {});
    const orig = hv.pio.bind(hv);
    hv.pio = (vcpu, dir, port, size, value) => {
      if (dir === 0 && port === 0x1f7) seen.push(value);
      return orig(vcpu, dir, port, size, value);
    };
    return seen;
  }

  it("splits PIO transfers at 256 sectors for LBA28 and uses one EXT command up to 65536", async () => {
    const img = pattern(SECTORS);
    const hv28 = machine("sync", new MemoryBackend(img));
    const d28 = new AtaDrive(hv28.vcpu(0), { addressing: "lba28", via: "rep" });
    await d28.probe();
    const seen28 = commands(hv28);
    await d28.read(0, 600);
    expect(seen28).toEqual([ATA_CMD.READ_SECTORS, ATA_CMD.READ_SECTORS, ATA_CMD.READ_SECTORS]);

    const hvA = machine("sync", new MemoryBackend(img));
    const dA = new AtaDrive(hvA.vcpu(0), { via: "rep" });
    await dA.probe();
    const seenA = commands(hvA);
    await dA.read(0, 600); // too many for one LBA28 command: auto picks the EXT form
    await dA.read(5, 2); // fits LBA28
    expect(seenA).toEqual([ATA_CMD.READ_SECTORS_EXT, ATA_CMD.READ_SECTORS]);
  });

  it("splits DMA at the bounce buffer and builds 64 KiB PRD entries", async () => {
    const img = pattern(SECTORS);
    const hv = machine("sync", new MemoryBackend(img));
    const d = new AtaDrive(hv.vcpu(0), { via: "dma", bufferSectors: 300 });
    await d.probe();
    const seen = commands(hv);
    const got = await d.read(0, 700);
    expect(Buffer.from(got).equals(Buffer.from(img.subarray(0, 700 * 512)))).toBe(true);
    expect(seen).toEqual([ATA_CMD.READ_DMA_EXT, ATA_CMD.READ_DMA_EXT, ATA_CMD.READ_DMA]);
  });

  it("costs the expected exits per sector for each PIO method", async () => {
    const perSector: Record<string, number> = {};
    for (const via of ["pio", "pio32", "rep"] as const) {
      const hv = machine("sync", new MemoryBackend(SECTORS));
      const d = new AtaDrive(hv.vcpu(0), { via });
      await d.probe();
      const before = hv.acct.snapshot();
      await d.read(0, 8);
      const c = hv.acct.since(before);
      perSector[via] = (c.pioIn + c.stringIo) / 8;
    }
    // 256 word reads (or 128 dword reads) per sector, plus one status read per sector and per command;
    // REP INSW moves a sector in one string exit (a page holds 8 sectors but each DRQ block is one sector).
    expect(perSector.pio).toBeGreaterThanOrEqual(257);
    expect(perSector.pio).toBeLessThan(259);
    expect(perSector.pio32).toBeGreaterThanOrEqual(129);
    expect(perSector.pio32).toBeLessThan(131);
    expect(perSector.rep).toBeLessThan(4);
  });
});

describe("errors", () => {
  it("a read past the end aborts with AtaError carrying status, error and LBA", async () => {
    for (const via of VIAS) {
      const { d } = await drive("sync", new MemoryBackend(SECTORS), { via });
      const e = await d.read(SECTORS, 1).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(AtaError);
      const ae = e as AtaError;
      expect(ae.kind).toBe("device");
      // Status DRDY|ERR and the task file at the requested LBA (QEMU 7.2 §4.g: 0x41). The error bit is the
      // device model's choice (QEMU: ABRT; ACS: IDNF); the differential suite holds it to QEMU or its excuse.
      expect(ae.status).toBe(0x41);
      expect(ae.error & 0x14).not.toBe(0);
      expect(ae.lba).toBe(SECTORS);
      expect(ae.message).toMatch(/at LBA 4096/);
    }
  });

  it("a read that crosses the end delivers the sectors before it, then fails at the first missing one", async () => {
    const { d } = await drive("sync", new MemoryBackend(SECTORS), { via: "pio" });
    const e = (await d.read(SECTORS - 1, 2).catch((x: unknown) => x)) as AtaError;
    expect(e).toBeInstanceOf(AtaError);
    expect(e.lba).toBe(SECTORS);
  });

  it("an I/O error from the medium surfaces with the failing sector (both engines)", async () => {
    for (const kind of ["sync", "async"] as const) {
      const backend = new FaultInjectingBackend(new MemoryBackend(SECTORS), [
        { op: "read", from: 50, to: 51 },
      ]);
      const { d } = await drive(kind, backend, { via: "pio" });
      const e = (await d.read(48, 4).catch((x: unknown) => x)) as AtaError;
      expect(e).toBeInstanceOf(AtaError);
      expect(e.status & 0x01).toBe(0x01);
      expect(e.lba).toBe(50);
      const ok = await d.read(40, 4); // the drive goes on after the error
      expect(ok.length).toBe(2048);
    }
  });

  it("a write to a read-only medium fails instead of changing it", async () => {
    const backend = new MemoryBackend(pattern(SECTORS), { readOnly: true });
    const { d } = await drive("sync", backend, { via: "dma" });
    const before = Buffer.from(backend.data.subarray(0, 512));
    const e = await d.write(0, new Uint8Array(512)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AtaError);
    expect(Buffer.from(backend.data.subarray(0, 512)).equals(before)).toBe(true);
  });

  it("LBA28 forced beyond 2^28 is refused before any exit", async () => {
    const { hv, d } = await drive("sync", new MemoryBackend(64), { addressing: "lba28" });
    const before = hv.acct.exits;
    await expect(d.read(0x0fffffff, 2)).rejects.toThrow(RangeError);
    expect(hv.acct.exits).toBe(before);
  });

  it("SET MULTIPLE MODE with a count the drive refuses is an ABRT", async () => {
    const hv = machine("sync", new MemoryBackend(64));
    const d = new AtaDrive(hv.vcpu(0), { multiple: 3 }); // not a power of two: QEMU aborts
    const e = (await d.probe().catch((x: unknown) => x)) as AtaError;
    expect(e).toBeInstanceOf(AtaError);
    expect(e.command).toBe(ATA_CMD.SET_MULTIPLE_MODE);
    expect(e.error).toBe(0x04);
  });
});

describe("caller's buffers: readInto, allocBuffer and zero-copy DMA", () => {
  const BM = 0xc000; // where setupBusMaster maps an unassigned BAR4 (checked in "guest PCI setup")

  /** Every PRD entry of the table the Bus Master PRDT register points at, up to EOT. */
  function prdEntries(hv: Hypervisor): { base: number; bytes: number; eot: boolean }[] {
    const v = hv.vcpu(0);
    let at = v.inl(BM + 4);
    const out: { base: number; bytes: number; eot: boolean }[] = [];
    for (;;) {
      const base = hv.mem.readU32(at) as number;
      const count = hv.mem.readU16(at + 4) as number;
      const flags = hv.mem.readU16(at + 6) as number;
      out.push({ base, bytes: count || 0x10000, eot: (flags & 0x8000) !== 0 });
      if (flags & 0x8000 || out.length > 600) return out;
      at += 8;
    }
  }

  function same(a: Uint8Array, b: Uint8Array): boolean {
    return Buffer.from(a).equals(Buffer.from(b));
  }

  for (const kind of ["sync", "async"] as const) {
    it(`readInto fills the caller's array for every method (${kind} engine)`, async () => {
      const img = pattern(SECTORS);
      for (const via of VIAS) {
        const { d } = await drive(kind, new MemoryBackend(img), { via });
        const out = new Uint8Array(12 * 512).fill(0xee);
        await d.readInto(333, out);
        expect(same(out, img.subarray(333 * 512, 345 * 512))).toBe(true);
        const ram = d.allocBuffer(12 * 512);
        await d.readInto(1000, ram);
        expect(same(ram, img.subarray(1000 * 512, 1012 * 512))).toBe(true);
      }
    });
  }

  it("readInto refuses a buffer that is not whole sectors, before any exit", async () => {
    const { hv, d } = await drive("sync", new MemoryBackend(SECTORS), { via: "dma" });
    const before = hv.acct.exits;
    await expect(d.readInto(0, new Uint8Array(1000))).rejects.toThrow(RangeError);
    expect(hv.acct.exits).toBe(before);
  });

  it("allocBuffer hands out distinct, naturally aligned views of guest RAM", async () => {
    const { hv, d } = await drive("sync", new MemoryBackend(SECTORS), { via: "dma" });
    const a = d.allocBuffer(5000);
    const b = d.allocBuffer(512);
    const c = d.allocBuffer(65536);
    expect(a.length).toBe(5000);
    const ga = d.guestAddress(a);
    const gb = d.guestAddress(b);
    // Aligned to the power-of-two number of pages that holds them (as dma_alloc_coherent), capped at 64 KiB:
    // a buffer of up to 64 KiB never crosses a 64 KiB boundary, so it is one PRD entry.
    expect(ga % 8192).toBe(0);
    expect(gb % 4096).toBe(0);
    expect(d.guestAddress(c) % 65536).toBe(0);
    expect(gb).toBeGreaterThanOrEqual(ga + 8192); // 5000 bytes take two pages
    a[7] = 0x42; // the same bytes as the guest sees them
    expect(hv.mem.readU8(ga + 7)).toBe(0x42);
    expect(d.guestAddress(new Uint8Array(512))).toBe(-1);
    expect(() => d.allocBuffer(0)).toThrow(RangeError);
    expect(() => d.allocBuffer(64 * 1024 * 1024)).toThrow(RangeError); // more than the 16 MiB of RAM
  });

  it("DMA into a guest-RAM buffer: the PRD table points at the buffer itself, one entry per 64 KiB window", async () => {
    const img = pattern(SECTORS);
    const { hv, d } = await drive("sync", new MemoryBackend(img), { via: "dma" });
    const ram = d.allocBuffer(0x40000);
    const gpa = d.guestAddress(ram);
    // Start 2 KiB before a 64 KiB boundary: 82371SB §2.7.2 forbids an entry that crosses one.
    const skip = 0x10000 - (gpa % 0x10000) - 0x800;
    const out = ram.subarray(skip, skip + 0x20000);
    await d.readInto(64, out);
    expect(same(out, img.subarray(64 * 512, 64 * 512 + 0x20000))).toBe(true);
    expect(prdEntries(hv)).toEqual([
      { base: gpa + skip, bytes: 0x800, eot: false },
      { base: gpa + skip + 0x800, bytes: 0x10000, eot: false },
      { base: gpa + skip + 0x10800, bytes: 0xf800, eot: true },
    ]);
  });

  it("a buffer outside guest RAM, or at an odd guest address, goes through the bounce buffer", async () => {
    const img = pattern(SECTORS);
    const { hv, d } = await drive("sync", new MemoryBackend(img), { via: "dma" });
    const plain = new Uint8Array(4 * 512);
    await d.readInto(8, plain);
    expect(same(plain, img.subarray(8 * 512, 12 * 512))).toBe(true);
    const bounce = prdEntries(hv)[0]!.base;
    expect(bounce % 0x10000).toBe(0); // the driver's own 64 KiB-aligned buffer
    expect(prdEntries(hv)).toEqual([{ base: bounce, bytes: 2048, eot: true }]);
    // A PRD base drops bit 0 (82371SB §2.7.2), so a buffer at an odd address cannot be the target.
    const odd = d.allocBuffer(8192).subarray(1, 1 + 2048);
    await d.readInto(20, odd);
    expect(same(odd, img.subarray(20 * 512, 24 * 512))).toBe(true);
    expect(prdEntries(hv)).toEqual([{ base: bounce, bytes: 2048, eot: true }]);
  });

  it("DMA write from a guest-RAM buffer takes the data from it in place", async () => {
    const backend = new MemoryBackend(SECTORS);
    const { hv, d } = await drive("async", backend, { via: "dma" });
    const ram = d.allocBuffer(6 * 512);
    ram.set(pattern(6, 0x1234));
    await d.write(500, ram);
    expect(same(backend.data.subarray(500 * 512, 506 * 512), pattern(6, 0x1234))).toBe(true);
    expect(prdEntries(hv)).toEqual([{ base: d.guestAddress(ram), bytes: 6 * 512, eot: true }]);
  });

  it("REP INSW/OUTSW address a guest-RAM buffer directly", async () => {
    const img = pattern(SECTORS);
    const backend = new MemoryBackend(img);
    const { hv, d } = await drive("sync", backend, { via: "rep" });
    const targets: number[] = [];
    const orig = hv.pioString.bind(hv);
    hv.pioString = (vcpu, dir, port, size, gpa, count, df) => {
      targets.push(gpa);
      return orig(vcpu, dir, port, size, gpa, count, df);
    };
    const ram = d.allocBuffer(3 * 512);
    const gpa = d.guestAddress(ram);
    await d.readInto(40, ram);
    expect(same(ram, img.subarray(40 * 512, 43 * 512))).toBe(true);
    expect(targets).toEqual([gpa, gpa + 512, gpa + 1024]); // one DRQ block (sector) per REP INSW
    targets.length = 0;
    ram.set(pattern(3, 99));
    await d.write(7, ram);
    expect(targets).toEqual([gpa, gpa + 512, gpa + 1024]);
    expect(same(backend.data.subarray(7 * 512, 10 * 512), pattern(3, 99))).toBe(true);
  });

  it("a zero-copy transfer is split where the one-page PRD table (512 entries) is full", async () => {
    const sectors = 65536 + 64;
    const img = pattern(sectors);
    const hv = new Hypervisor({ ramSize: 96 * 1024 * 1024 });
    createPc({ hv, primary: { master: { engine: new SyncEngine(new MemoryBackend(img)) } } });
    const d = new AtaDrive(hv.vcpu(0), { via: "dma", bufferSectors: 65536 });
    await d.probe();
    const seen: number[] = [];
    const orig = hv.pio.bind(hv);
    hv.pio = (vcpu, dir, port, size, value) => {
      if (dir === 0 && port === 0x1f7) seen.push(value);
      return orig(vcpu, dir, port, size, value);
    };
    // 32 MiB starting 4 KiB into a 64 KiB window touches 513 windows: 512 entries hold all but 8 sectors.
    const ram = d.allocBuffer(32 * 1024 * 1024 + 0x10000);
    const skip = (0x11000 - (d.guestAddress(ram) % 0x10000)) % 0x10000;
    const out = ram.subarray(skip, skip + 32 * 1024 * 1024);
    await d.readInto(16, out);
    expect(same(out, img.subarray(16 * 512, (16 + 65536) * 512))).toBe(true);
    expect(seen).toEqual([ATA_CMD.READ_DMA_EXT, ATA_CMD.READ_DMA]);
    expect(prdEntries(hv)).toEqual([
      { base: d.guestAddress(out) + (65536 - 8) * 512, bytes: 4096, eot: true },
    ]);
  });
});
