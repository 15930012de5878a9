/**
 * Seeded random PACKET sequences against QEMU 7.2's ide-cd: each sequence starts from a software reset and runs a
 * few MMC commands with random fields, allocation lengths, byte count limits and PIO or DMA (with every PRD
 * case), comparing settled registers, sense data (REQUEST SENSE is among the commands), every transferred byte
 * and the interrupt edges. XENIDE_CD_SEED picks another seed; XENIDE_CD_SEQUENCES another count.
 */

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cdb, CdSession, isoImage, packet, type PacketOptions } from "./cd-harness.ts";
import { prng, qemuStatus } from "./harness.ts";
import { Mismatch } from "./pair.ts";

const status = qemuStatus();
const requireQemu = process.env.CI === "true";
const SEED = Number(process.env.XENIDE_CD_SEED ?? 0x5eed);
const SEQUENCES = Number(process.env.XENIDE_CD_SEQUENCES ?? 520);
const BLOCKS = 200;

interface RandomOp {
  name: string;
  bytes: number[];
  opts: PacketOptions;
  /** The op can leave the drive busy for good (a DMA read whose PRD table is too short): end the sequence. */
  last?: boolean;
}

/** One random PACKET command with its options. */
function genOp(rnd: () => number): RandomOp {
  const pick = <T>(a: readonly T[]): T => a[rnd() % a.length]!;
  const chance = (pct: number): boolean => rnd() % 100 < pct;
  const len = (): number =>
    chance(85) ? pick([0, 4, 8, 12, 18, 20, 24, 30, 36, 40, 64, 252, 512]) : rnd() % 96;
  const lba = (n: number): number =>
    chance(80)
      ? rnd() % Math.max(1, BLOCKS - n)
      : chance(50)
        ? BLOCKS - 1 - (rnd() % 3)
        : BLOCKS + (rnd() % 5);
  let name: string;
  let bytes: number[];
  let expect = 0; // bytes a DMA table is sized for
  let raw = false;
  switch (rnd() % 20) {
    case 0:
      name = "TEST UNIT READY";
      bytes = cdb(0x00);
      break;
    case 1:
    case 2: {
      const a = chance(90) ? 18 : len();
      name = `REQUEST SENSE ${a}`;
      bytes = cdb(0x03, 0, 0, 0, a);
      expect = a;
      break;
    }
    case 3: {
      const a = len();
      name = `INQUIRY ${a}`;
      bytes = cdb(0x12, 0, 0, 0, a);
      expect = a;
      break;
    }
    case 4: {
      const pg = pick([0x01, 0x2a, 0x3f, 0x05]) | (pick([0, 0, 0, 1, 2, 3]) << 6);
      const a = len();
      name = `MODE SENSE ${pg.toString(16)} ${a}`;
      bytes = cdb(0x5a, 0, pg, 0, 0, 0, 0, 0, a);
      expect = a;
      break;
    }
    case 5: {
      const b4 = pick([0, 1, 2, 3, 0x10, 0x12]);
      name = `START STOP ${b4}`;
      bytes = cdb(0x1b, 0, 0, 0, b4);
      break;
    }
    case 6:
      name = "PREVENT/ALLOW";
      bytes = cdb(0x1e, 0, 0, 0, rnd() & 1);
      break;
    case 7:
      name = "READ CAPACITY";
      bytes = cdb(0x25);
      expect = 8;
      break;
    case 8:
    case 9:
    case 10: {
      const n = chance(10) ? 0 : 1 + (rnd() % 12);
      const at = lba(n);
      const twelve = chance(30);
      name = `READ(${twelve ? 12 : 10}) ${at}+${n}`;
      bytes = twelve
        ? cdb(0xa8, 0, 0, 0, at >> 8, at, 0, 0, 0, n)
        : cdb(0x28, 0, 0, 0, at >> 8, at, 0, n >> 8, n);
      expect = n * 2048;
      break;
    }
    case 11: {
      const n = chance(10) ? 0 : 1 + (rnd() % 6);
      const at = lba(n);
      const what = pick([0x10, 0x10, 0xf8, 0x00, 0x20]);
      raw = what === 0xf8;
      name = `READ CD ${at}+${n} ${what.toString(16)}`;
      bytes = cdb(0xbe, 0, 0, 0, at >> 8, at, 0, 0, n, what);
      expect = n * (raw ? 2352 : 2048);
      break;
    }
    case 12:
      name = "SEEK";
      bytes = cdb(0x2b, 0, 0, 0, 0, lba(1));
      break;
    case 13: {
      const fmt = pick([0, 0, 1, 2, 3]);
      const track = pick([0, 1, 1, 2, 0xaa]);
      const a = len();
      name = `READ TOC ${fmt} ${track} ${a}`;
      bytes = cdb(0x43, chance(50) ? 2 : 0, 0, 0, 0, 0, track, 0, a, fmt << 6);
      expect = a;
      break;
    }
    case 14: {
      const a = len();
      name = `GET CONFIGURATION ${a}`;
      bytes = cdb(0x46, 0, 0, chance(90) ? 0 : 1, 0, 0, 0, 0, a);
      expect = a;
      break;
    }
    case 15: {
      const a = len();
      name = `GESN ${a}`;
      bytes = cdb(0x4a, chance(90) ? 1 : 0, 0, 0, pick([0x10, 0x10, 0x02, 0x00]), 0, 0, 0, a);
      expect = a;
      break;
    }
    case 16: {
      const a = len();
      name = `READ DISC INFORMATION ${a}`;
      bytes = cdb(0x51, chance(90) ? 0 : 1, 0, 0, 0, 0, 0, 0, a);
      expect = a;
      break;
    }
    case 17: {
      const a = len();
      const fmt = pick([0, 1, 4, 0xff, 0x30]);
      name = `READ DVD STRUCTURE ${fmt} ${a}`;
      bytes = cdb(0xad, 0, 0, 0, 0, 0, 0, fmt, 0, a);
      expect = a;
      break;
    }
    case 18: {
      const a = len();
      name = `MECHANISM STATUS ${a}`;
      bytes = cdb(0xbd, 0, 0, 0, 0, 0, 0, 0, 0, a);
      expect = a;
      break;
    }
    default: {
      const op = pick([0xbb, 0x01, 0x1a, 0x23, 0x42, 0x55, 0xa3, 0xff]);
      name = `opcode ${op.toString(16)}`;
      bytes = cdb(op, 0, 0xff, 0xff);
      break;
    }
  }
  const opts: PacketOptions = {
    bcl: chance(70) ? pick([0xfffe, 0xffff, 2048, 5120, 512, 2, 0, 4096, 2352]) : 2 + (rnd() % 0xfffc),
    maxBlocks: 80,
  };
  let last = false;
  if (expect > 0 && chance(30)) {
    const prd = pick(["exact", "exact", "long", "split", "short"] as const);
    opts.dma = { bytes: Math.max(expect, 2), prd };
    last = prd === "short";
  }
  return { name, bytes, opts, last };
}

const suite = status.ok ? describe : requireQemu ? describe : describe.skip;
const title = status.ok
  ? `CD-ROM random PACKET sequences against ${status.version}`
  : `CD-ROM random PACKET sequences (skipped: ${status.reason})`;

suite(title, { timeout: 240_000 }, () => {
  if (!status.ok && requireQemu) {
    it("needs QEMU under CI", () => {
      throw new Error(status.reason);
    });
    return;
  }

  let s: CdSession;
  beforeAll(async () => {
    s = await CdSession.start([{ kind: "cd", data: isoImage(BLOCKS, 11) }]);
  });
  afterAll(async () => {
    await s?.stop();
  });

  it(`${SEQUENCES} sequences from seed 0x${SEED.toString(16)}`, async () => {
    const rnd = prng(SEED);
    let ops = 0;
    for (let seq = 0; seq < SEQUENCES; seq++) {
      const label = `seq ${seq}`;
      const start = s.pair.transcript.length;
      try {
        // From a software reset, with the interrupt enabled and the Bus Master idle.
        s.pair.ctl = 0;
        await s.pair.send(
          ["outb 0xc000 0x0", "outb 0xc002 0x6", "outb 0x3f6 0x4", "outb 0x3f6 0x0"],
          `${label} reset`,
        );
        await s.pair.settle(`${label} reset`, 50);
        const n = 1 + (rnd() % 4);
        for (let i = 0; i < n; i++) {
          const op = genOp(rnd);
          const r = await packet(
            s.pair,
            op.bytes,
            op.opts,
            `${label} op ${i} ${op.name}${op.opts.dma ? ` dma ${op.opts.dma.prd}` : ` bcl ${op.opts.bcl}`}`,
          );
          ops++;
          if (op.last || (r.status & 0x80) !== 0) break;
        }
      } catch (e) {
        if (e instanceof Mismatch)
          expect.fail(
            `${e.message.length > 600 ? `${e.message.slice(0, 600)}...` : e.message}\nsequence ${seq} (seed 0x${SEED.toString(16)}):\n  ${e.transcript.slice(start).slice(-60).join("\n  ")}`,
          );
        throw e;
      }
    }
    expect(ops).toBeGreaterThanOrEqual(SEQUENCES);
  });
});
