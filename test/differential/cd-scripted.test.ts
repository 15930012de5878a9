/**
 * Scripted differential scenarios for the ATAPI CD-ROM against QEMU 7.2's ide-cd: signature and identify, every
 * MMC command QEMU answers (and an unknown one), PIO with byte count limits from 2 to 65534, DMA with exact,
 * split, longer and shorter PRD tables, READ CD raw, the empty drive, tray lock and eject, error senses, DEVICE
 * RESET and SRST. Every reply, settled register state, transferred byte and interrupt edge is compared.
 */

import { afterEach, describe, expect, it } from "vitest";
import { cdb, CdSession, type CdSlot, isoImage, packet, requestSense } from "./cd-harness.ts";
import { qemuStatus } from "./harness.ts";
import { Mismatch } from "./pair.ts";

const status = qemuStatus();
const requireQemu = process.env.CI === "true";
const BLOCKS = 300;
const ISO = isoImage(BLOCKS, 7);

const sessions: CdSession[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) await s.stop();
});

async function session(
  slots: CdSlot[] = [{ kind: "cd", data: ISO }],
  channel: 0 | 1 = 0,
  engine: "sync" | "async" = "sync",
): Promise<CdSession> {
  const s = await CdSession.start(slots, channel, engine);
  sessions.push(s);
  return s;
}

/** Run `body`; a mismatch fails with the tail of the qtest transcript. */
async function check(s: CdSession, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    if (e instanceof Mismatch)
      expect.fail(`${e.message}\nlast qtest lines:\n  ${e.transcript.slice(-30).join("\n  ")}`);
    throw e;
  }
}

const suite = status.ok ? describe : requireQemu ? describe : describe.skip;
const title = status.ok
  ? `CD-ROM differential scenarios against ${status.version}`
  : `CD-ROM differential scenarios (skipped: ${status.reason})`;

suite(title, { timeout: 120_000 }, () => {
  if (!status.ok && requireQemu) {
    it("needs QEMU under CI", () => {
      throw new Error(status.reason);
    });
    return;
  }

  it("power-on registers, signature, IDENTIFY DEVICE abort, IDENTIFY PACKET DEVICE", async () => {
    const s = await session();
    await check(s, async () => {
      const q = await s.pair.settle("power-on");
      expect(q.regs.slice(1, 5)).toEqual([0x01, 0x01, 0x14, 0xeb]); // ATA-6 §9.12 PACKET signature
      await s.pair.send(["outb 0x1f7 0xec"], "IDENTIFY DEVICE");
      const a = await s.pair.settle("IDENTIFY DEVICE");
      expect([a.alt, a.regs[0]]).toEqual([0x41, 0x04]);
      await s.pair.send(["inb 0x1f7", "outb 0x1f7 0xa1"], "IDENTIFY PACKET DEVICE");
      const b = await s.pair.settle("IDENTIFY PACKET DEVICE");
      expect(b.alt).toBe(0x58);
      const words = await s.pair.send(Array(256).fill("inw 0x1f0"), "identify packet");
      expect(Number(words[0]!.slice(3))).toBe(0x85c0); // ATAPI, CD-ROM, removable, 12-byte packets
      await s.pair.settle("identify done");
    });
  });

  it("TEST UNIT READY, INQUIRY, REQUEST SENSE, READ CAPACITY", async () => {
    const s = await session();
    await check(s, async () => {
      const tur = await packet(s.pair, cdb(0x00), { bcl: 0 }, "TUR");
      expect(tur.status & 0x01).toBe(0);
      const inq = await packet(s.pair, cdb(0x12, 0, 0, 0, 36), { bcl: 0xfffe }, "INQUIRY");
      expect(inq.data[0]).toBe(0x05);
      const cap = await packet(s.pair, cdb(0x25), { bcl: 8 }, "READ CAPACITY");
      expect(new DataView(cap.data.buffer).getUint32(0, false)).toBe(BLOCKS - 1);
      const sense = await requestSense(s.pair, "sense");
      expect(sense[0]).toBe(0xf0);
    });
  });

  it("every MMC command QEMU answers, with its allocation lengths, and an unknown opcode", async () => {
    const s = await session();
    await check(s, async () => {
      const cmds: [string, number[]][] = [
        ["MODE SENSE error recovery", cdb(0x5a, 0, 0x01, 0, 0, 0, 0, 0, 16)],
        ["MODE SENSE capabilities", cdb(0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 30)],
        ["MODE SENSE capabilities short", cdb(0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 12)],
        ["MODE SENSE changeable", cdb(0x5a, 0, 0x6a, 0, 0, 0, 0, 0, 30)],
        ["MODE SENSE saved", cdb(0x5a, 0, 0xea, 0, 0, 0, 0, 0, 30)],
        ["MODE SENSE unknown page", cdb(0x5a, 0, 0x05, 0, 0, 0, 0, 0, 30)],
        ["READ TOC format 0", cdb(0x43, 0, 0, 0, 0, 0, 0, 0, 100)],
        ["READ TOC format 0 MSF", cdb(0x43, 2, 0, 0, 0, 0, 0, 0, 100)],
        ["READ TOC lead-out only", cdb(0x43, 0, 0, 0, 0, 0, 0xaa, 0, 100)],
        ["READ TOC bad track", cdb(0x43, 0, 0, 0, 0, 0, 2, 0, 100)],
        ["READ TOC format 1", cdb(0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x40)],
        ["READ TOC format 2", cdb(0x43, 0, 0, 0, 0, 0, 1, 0, 100, 0x80)],
        ["READ TOC format 2 MSF", cdb(0x43, 2, 0, 0, 0, 0, 1, 0, 100, 0x80)],
        ["READ TOC format 3", cdb(0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0xc0)],
        ["GET CONFIGURATION", cdb(0x46, 0, 0, 0, 0, 0, 0, 0, 40)],
        ["GET CONFIGURATION feature 1", cdb(0x46, 0, 0, 1, 0, 0, 0, 0, 40)],
        ["GESN media", cdb(0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8)],
        ["GESN no class", cdb(0x4a, 1, 0, 0, 0x02, 0, 0, 0, 8)],
        ["GESN async", cdb(0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8)],
        ["READ DISC INFORMATION", cdb(0x51, 0, 0, 0, 0, 0, 0, 0, 34)],
        ["READ DISC INFORMATION type 1", cdb(0x51, 1, 0, 0, 0, 0, 0, 0, 34)],
        ["READ DVD STRUCTURE on a CD", cdb(0xad, 0, 0, 0, 0, 0, 0, 0, 8, 0)],
        ["READ DVD STRUCTURE list", cdb(0xad, 0, 0, 0, 0, 0, 0, 0xff, 0, 64)],
        ["MECHANISM STATUS", cdb(0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8)],
        ["SET CD SPEED", cdb(0xbb, 0, 0xff, 0xff)],
        ["SEEK", cdb(0x2b, 0, 0, 0, 0, 10)],
        ["SEEK beyond", cdb(0x2b, 0, 0, 0, 0x10, 0)],
        ["PREVENT", cdb(0x1e, 0, 0, 0, 1)],
        ["ALLOW", cdb(0x1e, 0, 0, 0, 0)],
        ["START STOP power condition", cdb(0x1b, 0, 0, 0, 0x20)],
        ["unknown opcode", cdb(0xff)],
        ["READ(12)", cdb(0xa8, 0, 0, 0, 0, 5, 0, 0, 0, 2)],
        ["READ(10) zero blocks", cdb(0x28, 0, 0, 0, 0, 5, 0, 0, 0)],
        ["READ(10) beyond", cdb(0x28, 0, 0, 0, 0x01, 0x2b, 0, 0, 2)],
        ["READ CD user data", cdb(0xbe, 0, 0, 0, 0, 3, 0, 0, 2, 0x10)],
        ["READ CD raw", cdb(0xbe, 0, 0, 0, 0, 3, 0, 0, 2, 0xf8)],
        ["READ CD nothing", cdb(0xbe, 0, 0, 0, 0, 3, 0, 0, 2, 0x00)],
        ["READ CD other", cdb(0xbe, 0, 0, 0, 0, 3, 0, 0, 2, 0x20)],
        ["READ CD past the end", cdb(0xbe, 0, 0, 0, 0x01, 0x2a, 0, 0, 3, 0x10)],
      ];
      for (const [name, bytes] of cmds) {
        await packet(s.pair, bytes, { bcl: 0xfffe }, name);
        await requestSense(s.pair, `${name}: sense`);
      }
    });
  });

  it("PIO byte count limits from 2 to 65534 (odd ones rounded down), one block and many", async () => {
    const s = await session();
    await check(s, async () => {
      for (const bcl of [2, 3, 512, 1000, 2047, 2048, 2049, 5120, 6000, 32768, 65533, 65534, 65535]) {
        const blocks = bcl < 600 ? 1 : bcl < 4000 ? 3 : 10;
        const r = await packet(
          s.pair,
          cdb(0x28, 0, 0, 0, 0, 7, 0, 0, blocks),
          { bcl, maxBlocks: 2100 },
          `READ(10) bcl ${bcl}`,
        );
        expect(r.data.length).toBe(blocks * 2048);
        expect(new DataView(r.data.buffer).getUint32(0, false)).toBe(7);
      }
      // A reply shorter than the limit goes in one block of its own size; an odd limit cuts it evenly.
      await packet(s.pair, cdb(0x12, 0, 0, 0, 36), { bcl: 7 }, "INQUIRY bcl 7");
      // A byte count limit of 0 on a data command aborts at the ATA level.
      await packet(s.pair, cdb(0x12, 0, 0, 0, 36), { bcl: 0 }, "INQUIRY bcl 0");
      await packet(s.pair, cdb(0x00), { bcl: 0 }, "TUR bcl 0");
    });
  });

  it("PACKET by DMA: exact, split, longer and shorter PRD tables; replies by DMA; OVL refused", async () => {
    const s = await session();
    await check(s, async () => {
      for (const prd of ["exact", "split", "long"] as const) {
        const r = await packet(
          s.pair,
          cdb(0x28, 0, 0, 0, 0, 9, 0, 0, 4),
          { bcl: 0, dma: { bytes: 4 * 2048, prd } },
          `READ DMA ${prd}`,
        );
        expect(new DataView(r.data.buffer).getUint32(0, false)).toBe(9);
      }
      await packet(
        s.pair,
        cdb(0x12, 0, 0, 0, 36),
        { bcl: 0, dma: { bytes: 36, prd: "exact" } },
        "INQUIRY DMA",
      );
      await packet(
        s.pair,
        cdb(0xbe, 0, 0, 0, 0, 3, 0, 0, 2, 0xf8),
        { bcl: 0, dma: { bytes: 2 * 2352, prd: "exact" } },
        "READ CD raw DMA",
      );
      await packet(
        s.pair,
        cdb(0x28, 0, 0, 0, 0, 9, 0, 0, 2),
        { bcl: 0, dma: { bytes: 2 * 2048, prd: "long" } },
        "READ DMA again",
      );
      await packet(
        s.pair,
        cdb(0x28, 0, 0, 0, 0x01, 0x2b, 0, 0, 2),
        { bcl: 0, dma: { bytes: 4096, prd: "exact" } },
        "READ DMA beyond",
      );
      await requestSense(s.pair, "after DMA beyond");
      await packet(s.pair, cdb(0x00), { bcl: 0, features: 2 }, "PACKET with OVL");
      // A table shorter than the data: the bytes it covers move, the engine stops, the read stays BSY.
      await packet(
        s.pair,
        cdb(0x28, 0, 0, 0, 0, 9, 0, 0, 4),
        { bcl: 0, dma: { bytes: 4 * 2048, prd: "short" } },
        "READ DMA short table",
      );
      await s.pair.send(["outb 0x3f6 0x4", "outb 0x3f6 0x0"], "SRST");
      await s.pair.settle("SRST", 50);
    });
  });

  it("the async storage engine: PIO with small and large limits, DMA, raw READ CD", async () => {
    const s = await session(undefined, 0, "async");
    await check(s, async () => {
      for (const bcl of [2048, 3000, 65534]) {
        const r = await packet(
          s.pair,
          cdb(0x28, 0, 0, 0, 0, 3, 0, 0, 40),
          { bcl, maxBlocks: 100 },
          `READ(10) 40 blocks bcl ${bcl}`,
        );
        expect(r.data.length).toBe(40 * 2048);
      }
      await packet(
        s.pair,
        cdb(0xbe, 0, 0, 0, 0, 5, 0, 0, 5, 0xf8),
        { bcl: 5000, maxBlocks: 20 },
        "READ CD raw",
      );
      await packet(
        s.pair,
        cdb(0x28, 0, 0, 0, 0, 9, 0, 0, 8),
        { bcl: 0, dma: { bytes: 8 * 2048, prd: "exact" } },
        "READ DMA",
      );
    });
  });

  it("the sequences of QEMU's ide-test cdrom/pio, cdrom/pio_large, cdrom/dma and flush/empty_drive", async () => {
    const s = await session([{ kind: "cd", data: ISO }, undefined, { kind: "cd" }]);
    await check(s, async () => {
      // cdrom/pio: byte count limit 5120, READ(10) of one block; cdrom/pio_large: ten blocks in several bursts.
      for (const n of [1, 10]) {
        const r = await packet(s.pair, cdb(0x28, 0, 0, 0, 0, 0, 0, 0, n), { bcl: 5120 }, `cdrom/pio ${n}`);
        expect(r.data.length).toBe(n * 2048);
        expect(r.status).toBe(0x50);
      }
      // cdrom/dma: one block through a 2048-byte PRD entry; BM status 04h afterwards.
      const d = await packet(
        s.pair,
        cdb(0x28, 0, 0, 0, 0, 0, 0, 0, 1),
        { bcl: 0, dma: { bytes: 2048, prd: "exact" } },
        "cdrom/dma",
      );
      expect(new DataView(d.data.buffer).getUint32(0, false)).toBe(0);
    });
  });

  it("flush/empty_drive: FLUSH CACHE to an empty CD drive answers and the channel goes on", async () => {
    const s = await session([{ kind: "cd" }]);
    await check(s, async () => {
      await s.pair.send(["outb 0x1f6 0xa0", "outb 0x1f7 0xe7"], "FLUSH CACHE");
      await s.pair.settle("FLUSH CACHE");
      await packet(s.pair, cdb(0x12, 0, 0, 0, 36), { bcl: 36 }, "INQUIRY after FLUSH");
    });
  });

  it("empty drive: not ready, the commands that still answer, FLUSH CACHE", async () => {
    const s = await session([{ kind: "cd" }]);
    await check(s, async () => {
      for (const [name, bytes] of [
        ["TUR", cdb(0x00)],
        ["READ CAPACITY", cdb(0x25)],
        ["READ(10)", cdb(0x28, 0, 0, 0, 0, 0, 0, 0, 1)],
        ["INQUIRY", cdb(0x12, 0, 0, 0, 36)],
        ["GESN", cdb(0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8)],
        ["GET CONFIGURATION", cdb(0x46, 0, 0, 0, 0, 0, 0, 0, 40)],
        ["MODE SENSE", cdb(0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 30)],
        ["READ DVD STRUCTURE", cdb(0xad, 0, 0, 0, 0, 0, 0, 0, 8, 0)],
        ["START STOP eject", cdb(0x1b, 0, 0, 0, 0x02)],
        ["START STOP load", cdb(0x1b, 0, 0, 0, 0x03)],
      ] as [string, number[]][]) {
        await packet(s.pair, bytes, { bcl: 0xfffe }, `empty: ${name}`);
        const sense = await requestSense(s.pair, `empty: ${name}`);
        if (name === "TUR") expect([sense[2], sense[12]]).toEqual([0x02, 0x3a]); // NOT READY, MEDIUM NOT PRESENT
      }
      await s.pair.send(["outb 0x1f7 0xe7"], "FLUSH CACHE");
      await s.pair.settle("FLUSH CACHE");
    });
  });

  it("tray: lock, refused eject, unlock, eject and load by START STOP UNIT, events", async () => {
    const s = await session();
    await check(s, async () => {
      const gesn = cdb(0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8);
      await packet(s.pair, cdb(0x1e, 0, 0, 0, 1), { bcl: 0 }, "PREVENT");
      await packet(s.pair, cdb(0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 30), { bcl: 0xfffe }, "capabilities locked");
      const refused = await packet(s.pair, cdb(0x1b, 0, 0, 0, 0x02), { bcl: 0 }, "eject while locked");
      expect(refused.error >> 4).toBe(0x2);
      await requestSense(s.pair, "eject refused");
      await packet(s.pair, cdb(0x1e, 0, 0, 0, 0), { bcl: 0 }, "ALLOW");
      await packet(s.pair, cdb(0x1b, 0, 0, 0, 0x02), { bcl: 0 }, "eject");
      await packet(s.pair, gesn, { bcl: 0xfffe }, "GESN tray open");
      await packet(s.pair, cdb(0x00), { bcl: 0 }, "TUR tray open");
      await requestSense(s.pair, "tray open");
      await packet(s.pair, cdb(0x1b, 0, 0, 0, 0x03), { bcl: 0 }, "load");
      await packet(s.pair, gesn, { bcl: 0xfffe }, "GESN closed");
      await packet(s.pair, cdb(0x00), { bcl: 0 }, "TUR closed");
      // A reset forgets the lock and the open tray (QEMU 7.2 ide_reset).
      await packet(s.pair, cdb(0x1e, 0, 0, 0, 1), { bcl: 0 }, "PREVENT again");
      await packet(s.pair, cdb(0x1b, 0, 0, 0, 0x02), { bcl: 0 }, "eject refused again");
      await s.pair.send(["outb 0x3f6 0x4", "outb 0x3f6 0x0"], "SRST while locked");
      await s.pair.settle("SRST while locked", 50);
      await packet(s.pair, cdb(0x1b, 0, 0, 0, 0x02), { bcl: 0 }, "eject after reset");
      await s.pair.send(["outb 0x1f7 0x08"], "DEVICE RESET with the tray open");
      await s.pair.settle("DEVICE RESET");
      await packet(s.pair, gesn, { bcl: 0xfffe }, "GESN after reset");
      await packet(s.pair, cdb(0x00), { bcl: 0 }, "TUR after reset");
      await requestSense(s.pair, "after reset");
    });
  });

  it("DEVICE RESET mid-transfer, SRST, EXECUTE DEVICE DIAGNOSTIC, ATA commands a CD refuses", async () => {
    const s = await session();
    await check(s, async () => {
      await s.pair.send(["outb 0x1f4 0x0", "outb 0x1f5 0x8", "outb 0x1f7 0xa0"], "PACKET");
      await s.pair.settle("PACKET");
      await s.pair.send(["outb 0x1f7 0x08"], "DEVICE RESET while DRQ");
      await s.pair.settle("DEVICE RESET");
      await packet(s.pair, cdb(0x28, 0, 0, 0, 0, 1, 0, 0, 2), { bcl: 4096, maxBlocks: 1 }, "READ then reset");
      await s.pair.send(["outb 0x1f7 0x08"], "DEVICE RESET in data phase");
      await s.pair.settle("DEVICE RESET 2");
      await s.pair.send(["outb 0x1f7 0x90"], "EXECUTE DEVICE DIAGNOSTIC");
      await s.pair.settle("DIAGNOSTIC");
      await s.pair.send(["outb 0x3f6 0x4", "outb 0x3f6 0x0"], "SRST");
      await s.pair.settle("SRST");
      for (const op of [0x20, 0x24, 0xc8, 0xe5, 0xe7, 0x40, 0x70, 0x91, 0xb0]) {
        await s.pair.send([`outb 0x1f7 0x${op.toString(16)}`], `ATA 0x${op.toString(16)}`);
        await s.pair.settle(`ATA 0x${op.toString(16)}`);
      }
      for (const sub of [0x02, 0x82, 0xaa, 0x55, 0xcc, 0x66, 0x03, 0x42, 0x99]) {
        await s.pair.send(
          [`outb 0x1f1 0x${sub.toString(16)}`, "outb 0x1f2 0x45", "outb 0x1f7 0xef"],
          `SET FEATURES ${sub}`,
        );
        await s.pair.settle(`SET FEATURES ${sub}`);
      }
    });
  });

  it("a CD beside a hard disk, and on the secondary channel", async () => {
    const disk = new Uint8Array(4096 * 512);
    const s = await session([undefined, undefined, { kind: "hd", data: disk }, { kind: "cd", data: ISO }], 1);
    await check(s, async () => {
      await s.pair.settle("power-on");
      const r = await packet(
        s.pair,
        cdb(0x28, 0, 0, 0, 0, 2, 0, 0, 1),
        { bcl: 2048, unit: 1 },
        "READ slave CD",
      );
      expect(new DataView(r.data.buffer).getUint32(0, false)).toBe(2);
      // From device 0 (from device 1 the selected device afterwards differs: docs/conformance.md B4).
      await s.pair.send(["outb 0x176 0xa0", "outb 0x177 0x90"], "DIAGNOSTIC");
      await s.pair.settle("DIAGNOSTIC");
    });
  });
});
