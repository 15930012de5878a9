/**
 * Scripted differential scenarios: the situations of QEMU's own tests/qtest/ide-test.c and of the recorded
 * QEMU 7.2 observations (identify, PIO LBA28/LBA48, HOB registers, multiple mode, Bus Master DMA with exact,
 * scattered, longer and shorter PRD tables, flush, errors, absent and present slave, nIEN, every opcode), each
 * run on QEMU 7.2 and on `xenide qtest` with every reply and every settled state compared.
 */

import { afterEach, describe, expect, it } from "vitest";
import { DEVIATION_EXCUSES } from "./excuses.ts";
import { patternImage, qemuStatus } from "./harness.ts";
import type { Op } from "./ops.ts";
import { Mismatch } from "./pair.ts";
import { Session, withStderr } from "./session.ts";
import { COMPAT_PROFILES, type CompatProfile } from "../../src/ide/compat.ts";

const status = qemuStatus();
const requireQemu = process.env.CI === "true";
const SECTORS = 32768; // 16 MiB, the disk of the recorded observations

const sessions: Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) await s.stop();
});

/**
 * A session in `compat`: the default profile forgives exactly the documented deviations; "qemu-7.2" forgives
 * nothing (every register, reply and image byte must be QEMU's).
 */
async function openSession(
  compat: CompatProfile,
  drives: (Uint8Array | undefined)[] = [patternImage(SECTORS, 1)],
  inProcess = false,
): Promise<Session> {
  const excuses = compat === "qemu-7.2" ? [] : DEVIATION_EXCUSES;
  const s = await Session.start(drives, excuses, inProcess, compat);
  sessions.push(s);
  return s;
}

/** Run ops, then compare images; a mismatch fails with the full transcript tail. */
async function check(s: Session, ops: Op[], label: string, compareImages = true): Promise<void> {
  try {
    await s.run(ops, label);
    if (compareImages) s.compareImages(label);
  } catch (e) {
    if (e instanceof Mismatch) {
      expect.fail(`${e.message}\nlast qtest lines:\n  ${e.transcript.slice(-40).join("\n  ")}`);
    }
    throw withStderr(e, s);
  }
}

const RESET: Op[] = [{ k: "srst", sameBatch: true }, { k: "nien", on: false }, { k: "bmReset" }];

const suite = status.ok ? describe : requireQemu ? describe : describe.skip;
const title = (compat: CompatProfile): string =>
  status.ok
    ? `differential scenarios against ${status.version}, profile ${compat}${compat === "qemu-7.2" ? " (no excuses)" : ""}`
    : `differential scenarios, profile ${compat} (skipped: ${status.reason})`;

for (const compat of COMPAT_PROFILES) scenarios(compat);

function scenarios(compat: CompatProfile): void {
  suite(title(compat), { timeout: 120_000 }, () => {
    const session = (drives?: (Uint8Array | undefined)[], inProcess = false): Promise<Session> =>
      openSession(compat, drives, inProcess);

    if (!status.ok && requireQemu) {
      it("needs QEMU under CI", () => {
        throw new Error(status.reason);
      });
      return;
    }

    it("power-on registers, then IDENTIFY by words and by dwords", async () => {
      const s = await session();
      await s.pair.settle("power-on");
      await check(
        s,
        [
          { k: "identify", unit: 0, dword: false },
          { k: "identify", unit: 0, dword: true },
        ],
        "identify",
      );
    });

    it("PIO READ/WRITE SECTORS LBA28 (2 sectors at 0x1234; 2 at 100) and read-back", async () => {
      const s = await session();
      await check(
        s,
        [
          ...RESET,
          { k: "pioIn", cmd: 0x20, lba: 0x1234, count: 2, ext: false, dword: false, unit: 0 },
          { k: "pioOut", cmd: 0x30, lba: 100, count: 2, ext: false, dword: false, seed: 5, unit: 0 },
          { k: "pioIn", cmd: 0x20, lba: 99, count: 4, ext: false, dword: true, unit: 0 },
          { k: "pioIn", cmd: 0x20, lba: 0x0123456, count: 1, ext: false, dword: false, unit: 0 },
        ],
        "pio28",
      );
    });

    it("HOB registers and LBA48 READ/WRITE SECTORS EXT", async () => {
      const s = await session();
      await check(
        s,
        [
          ...RESET,
          // Each register written twice: the first value becomes the HOB byte (observation §4.e).
          {
            k: "regs",
            writes: [
              [1, 0x10],
              [1, 0x20],
              [2, 0x11],
              [2, 0x21],
              [3, 0x12],
              [3, 0x22],
              [4, 0x13],
              [4, 0x23],
              [5, 0x14],
              [5, 0x24],
            ],
          },
          { k: "regs", writes: [[3, 0x32]] },
          { k: "pioIn", cmd: 0x24, lba: 0x7f00, count: 2, ext: true, dword: false, unit: 0 },
          { k: "pioOut", cmd: 0x34, lba: 0x7ffe, count: 2, ext: true, dword: true, seed: 9, unit: 0 },
          { k: "pioIn", cmd: 0x24, lba: 0x1_0000_0000, count: 1, ext: true, dword: false, unit: 0 },
        ],
        "lba48",
      );
    });

    it("SET MULTIPLE MODE and READ/WRITE MULTIPLE (EXT), including an invalid block size", async () => {
      const s = await session();
      await check(
        s,
        [
          ...RESET,
          { k: "nondata", cmd: 0xc6, feat: 0, nsect: 4, lba: 0, ext: false, unit: 0 },
          { k: "pioIn", cmd: 0xc4, lba: 10, count: 10, ext: false, dword: false, unit: 0 },
          { k: "pioOut", cmd: 0xc5, lba: 200, count: 6, ext: false, dword: true, seed: 3, unit: 0 },
          { k: "pioIn", cmd: 0x29, lba: 198, count: 9, ext: true, dword: true, unit: 0 },
          { k: "nondata", cmd: 0xc6, feat: 0, nsect: 3, lba: 0, ext: false, unit: 0 },
          { k: "nondata", cmd: 0xc6, feat: 0, nsect: 0, lba: 0, ext: false, unit: 0 },
          { k: "pioIn", cmd: 0xc4, lba: 10, count: 2, ext: false, dword: false, unit: 0 },
        ],
        "multiple",
      );
    });

    it("Bus Master DMA: exact, scattered, longer and shorter PRD tables, beyond the end, BM started first", async () => {
      const s = await session();
      const dma = (o: Partial<Extract<Op, { k: "dma" }>>): Op => ({
        k: "dma",
        cmd: 0xc8,
        write: false,
        lba: 0x200,
        count: 2,
        ext: false,
        prd: "exact",
        startFirst: false,
        seed: 1,
        ...o,
      });
      await check(
        s,
        [
          ...RESET,
          dma({}),
          dma({ lba: 0x300, count: 3, prd: "split" }),
          dma({ count: 1, prd: "long" }),
          dma({ count: 1, prd: "extra" }),
          dma({ lba: 0x310, count: 4, prd: "extra" }),
          dma({ prd: "short" }),
          { k: "bmReset" },
          dma({ lba: SECTORS, count: 1 }),
          dma({ cmd: 0xca, write: true, lba: 0x400, count: 2, seed: 77 }),
          dma({ cmd: 0x35, write: true, lba: 0x500, count: 8, ext: true, prd: "split", seed: 78 }),
          dma({ cmd: 0x25, lba: 0x4fe, count: 12, ext: true }),
          dma({ startFirst: true }),
        ],
        "dma",
      );
    });

    it("FLUSH CACHE and FLUSH CACHE EXT after writes", async () => {
      const s = await session();
      await check(
        s,
        [
          ...RESET,
          { k: "pioOut", cmd: 0x30, lba: 7, count: 1, ext: false, dword: false, seed: 11, unit: 0 },
          { k: "nondata", cmd: 0xe7, feat: 0, nsect: 0, lba: 0, ext: false, unit: 0 },
          { k: "pioOut", cmd: 0x34, lba: 8, count: 1, ext: true, dword: false, seed: 12, unit: 0 },
          { k: "nondata", cmd: 0xea, feat: 0, nsect: 0, lba: 0, ext: true, unit: 0 },
        ],
        "flush",
      );
    });

    it("errors: unknown opcodes abort, reads and writes past the end, a read crossing the end", async () => {
      const s = await session();
      const ops: Op[] = [...RESET];
      for (const cmd of [0xff, 0x00, 0xa1, 0xa0, 0x08, 0x03]) {
        ops.push({ k: "nondata", cmd, feat: 0, nsect: 0x5a, lba: 0x11, ext: false, unit: 0 });
      }
      ops.push(
        { k: "pioIn", cmd: 0x20, lba: SECTORS, count: 1, ext: false, dword: false, unit: 0 },
        { k: "pioIn", cmd: 0x20, lba: SECTORS - 1, count: 1, ext: false, dword: false, unit: 0 },
        { k: "pioIn", cmd: 0x20, lba: SECTORS - 1, count: 2, ext: false, dword: false, unit: 0 },
        { k: "pioOut", cmd: 0x30, lba: SECTORS, count: 1, ext: false, dword: false, seed: 1, unit: 0 },
        { k: "nondata", cmd: 0x40, feat: 0, nsect: 1, lba: 40000, ext: false, unit: 0 },
      );
      await check(s, ops, "errors");
    });

    it("absent slave: shared task file, zero status, ignored commands", async () => {
      const s = await session();
      await check(
        s,
        [
          ...RESET,
          {
            k: "regs",
            writes: [
              [2, 0x12],
              [3, 0x34],
              [4, 0x56],
              [5, 0x78],
            ],
          },
          { k: "select", unit: 1 },
          { k: "regs", writes: [[2, 0x99]] },
          { k: "identify", unit: 1, dword: false },
          { k: "dataPoke" },
          { k: "select", unit: 0 },
        ],
        "absent slave",
      );
    });

    it("two drives: IDENTIFY each, EXECUTE DEVICE DIAGNOSTIC from the slave selects the master", async () => {
      const s = await session([patternImage(SECTORS, 1), patternImage(4096, 2)]);
      await check(
        s,
        [
          ...RESET,
          { k: "identify", unit: 0, dword: false },
          { k: "identify", unit: 1, dword: true },
          { k: "pioIn", cmd: 0x20, lba: 4095, count: 1, ext: false, dword: false, unit: 1 },
          { k: "pioOut", cmd: 0x30, lba: 17, count: 1, ext: false, dword: false, seed: 4, unit: 1 },
          { k: "select", unit: 1 },
          { k: "nondata", cmd: 0x90, feat: 0, nsect: 0, lba: 0, ext: false, unit: 1 },
        ],
        "two drives",
      );
    });

    it("nIEN: commands complete without an interrupt; clearing nIEN does not raise a suppressed one", async () => {
      const s = await session();
      await check(
        s,
        [
          ...RESET,
          { k: "nien", on: true },
          { k: "nondata", cmd: 0x90, feat: 0, nsect: 0, lba: 0, ext: false, unit: 0 },
          { k: "pioIn", cmd: 0x20, lba: 5, count: 2, ext: false, dword: false, unit: 0 },
          { k: "nien", on: false },
          { k: "nondata", cmd: 0xe5, feat: 0, nsect: 0, lba: 0, ext: false, unit: 0 },
        ],
        "nIEN",
      );
    });

    it(
      "every opcode from the same pre-state (SET FEATURES, INITIALIZE DEVICE PARAMETERS and SMART aside)",
      {
        timeout: 300_000,
      },
      async () => {
        // The same machine served in this process: 250 commands through a child process take minutes on a busy host.
        const s = await session([patternImage(SECTORS, 1)], true);
        await check(s, RESET, "reset");
        const skip = new Set([0x91, 0xef, 0xb0, 0x06]);
        for (let cmd = 0; cmd < 256; cmd++) {
          if (skip.has(cmd)) continue;
          const ext = [0x24, 0x25, 0x27, 0x29, 0x34, 0x35, 0x39, 0x42, 0xea].includes(cmd);
          const dma = [0x25, 0x35, 0xc8, 0xc9, 0xca, 0xcb].includes(cmd);
          const op: Op = dma
            ? {
                k: "dma",
                cmd,
                write: cmd === 0x35 || cmd === 0xca || cmd === 0xcb,
                lba: 1000,
                count: 1,
                ext,
                prd: "exact",
                startFirst: false,
                seed: cmd,
              }
            : [0x30, 0x31, 0x34, 0x39, 0x3c, 0xc5].includes(cmd)
              ? { k: "pioOut", cmd, lba: 1000, count: 1, ext, dword: false, seed: cmd, unit: 0 }
              : { k: "pioIn", cmd, lba: 1000, count: 1, ext, dword: true, unit: 0 };
          // A software reset between opcodes puts the task file back to the signature (the observations' sweep
          // used a fresh QEMU per opcode); the DMA ones also clear the Bus Master status first.
          const pre: Op[] = dma
            ? [{ k: "srst", sameBatch: true }, { k: "bmReset" }]
            : [{ k: "srst", sameBatch: true }];
          await check(s, [...pre, op], `opcode 0x${cmd.toString(16)}`, false);
        }
        await check(s, [], "after the sweep");
      },
    );
  });
}
