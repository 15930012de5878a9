/**
 * ATA operations as qtest lines, and a seeded generator of valid random sequences of them. Each operation is
 * complete (command, its whole data phase, its wait), so a sequence stays meaningful whatever came before.
 * Operations that leave state behind across a software reset (SET FEATURES, INITIALIZE DEVICE PARAMETERS,
 * SMART) are not generated: a sequence then depends only on the image contents and its own steps, which is
 * what lets a failing sequence be replayed alone and shrunk.
 */

import { ST_BSY, ST_DRQ } from "../../src/spec/ata.ts";
import { type Pair, PRIMARY } from "./pair.ts";
import type { CompatProfile } from "../../src/ide/compat.ts";

export type Op =
  | { k: "srst"; sameBatch: boolean }
  | { k: "nien"; on: boolean }
  | { k: "select"; unit: 0 | 1 }
  | { k: "regs"; writes: [number, number][] }
  | { k: "identify"; unit: 0 | 1; dword: boolean }
  | { k: "pioIn"; cmd: number; lba: number; count: number; ext: boolean; dword: boolean; unit: 0 | 1 }
  | {
      k: "pioOut";
      cmd: number;
      lba: number;
      count: number;
      ext: boolean;
      dword: boolean;
      seed: number;
      unit: 0 | 1;
    }
  | {
      k: "dma";
      cmd: number;
      write: boolean;
      lba: number;
      count: number;
      ext: boolean;
      /** PRD table: exactly the transfer; split in two; one longer entry; too short; the transfer then a spare entry. */
      prd: "exact" | "split" | "long" | "short" | "extra";
      startFirst: boolean;
      seed: number;
    }
  | { k: "nondata"; cmd: number; feat: number; nsect: number; lba: number; ext: boolean; unit: 0 | 1 }
  | { k: "dataPoke" }
  | { k: "bmRegs"; cmd: number; status: number; prdt: number }
  | { k: "bmReset" };

const PRDT = 0x10000;
const BUF = 0x20000;
const p = (n: number): string => `0x${n.toString(16)}`;

export function describeOp(op: Op): string {
  const h = (n: number): string => `0x${n.toString(16)}`;
  switch (op.k) {
    case "pioIn":
    case "pioOut":
    case "dma":
      return `${op.k} cmd=${h(op.cmd)} lba=${op.lba} count=${op.count}${op.ext ? " ext" : ""}${
        op.k === "dma" ? ` prd=${op.prd}${op.startFirst ? " bm-first" : ""}` : op.dword ? " dword" : ""
      }`;
    case "nondata":
      return `nondata cmd=${h(op.cmd)} feat=${h(op.feat)} nsect=${op.nsect} lba=${op.lba}${op.ext ? " ext" : ""} unit=${op.unit}`;
    default:
      return JSON.stringify(op);
  }
}

/** Task-file lines for a command: device, (HOB bytes first for LBA48), low bytes, then the command. */
function issueLines(
  cmd: number,
  lba: number,
  count: number,
  ext: boolean,
  unit: 0 | 1,
  feat = 0,
  setFeat = false,
): string[] {
  const c = PRIMARY.cmd;
  const dev = 0xe0 | (unit << 4) | (ext ? 0 : Math.floor(lba / 0x1000000) & 0x0f);
  const lines = [`outb ${p(c + 6)} ${p(dev)}`];
  if (setFeat) {
    if (ext) lines.push(`outb ${p(c + 1)} 0x0`);
    lines.push(`outb ${p(c + 1)} ${p(feat)}`);
  }
  if (ext) {
    const hi = Math.floor(lba / 0x1000000);
    lines.push(`outb ${p(c + 2)} ${p((count >> 8) & 0xff)}`);
    lines.push(`outb ${p(c + 3)} ${p(hi & 0xff)}`);
    lines.push(`outb ${p(c + 4)} ${p((hi >> 8) & 0xff)}`);
    lines.push(`outb ${p(c + 5)} ${p((hi >> 16) & 0xff)}`);
  }
  lines.push(`outb ${p(c + 2)} ${p(count & 0xff)}`);
  lines.push(`outb ${p(c + 3)} ${p(lba & 0xff)}`);
  lines.push(`outb ${p(c + 4)} ${p((lba >>> 8) & 0xff)}`);
  lines.push(`outb ${p(c + 5)} ${p((lba >>> 16) & 0xff)}`);
  lines.push(`outb ${p(c + 7)} ${p(cmd)}`);
  return lines;
}

function sectorReadLines(dword: boolean): string[] {
  const port = p(PRIMARY.cmd);
  return dword ? Array(128).fill(`inl ${port}`) : Array(256).fill(`inw ${port}`);
}

function sectorWriteLines(data: Uint8Array, off: number, dword: boolean): string[] {
  const port = p(PRIMARY.cmd);
  const out: string[] = [];
  if (dword) {
    for (let i = 0; i < 512; i += 4) {
      const v =
        (data[off + i]! |
          (data[off + i + 1]! << 8) |
          (data[off + i + 2]! << 16) |
          (data[off + i + 3]! << 24)) >>>
        0;
      out.push(`outl ${port} ${p(v)}`);
    }
  } else {
    for (let i = 0; i < 512; i += 2)
      out.push(`outw ${port} ${p(data[off + i]! | (data[off + i + 1]! << 8))}`);
  }
  return out;
}

export function bytesFromSeed(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Sectors a count field means: 0 is 256 (LBA28) or 65536 (LBA48). */
function sectorsOf(count: number, ext: boolean): number {
  return count === 0 ? (ext ? 65536 : 256) : count;
}

/** While the device (QEMU) asks for data, move one sector per step and compare the settled state after each. */
async function dataPhase(
  pair: Pair,
  label: string,
  snapDrq: boolean,
  max: number,
  sector: (i: number) => string[],
): Promise<boolean> {
  let drq = snapDrq;
  let i = 0;
  for (; drq && i < max; i++) {
    await pair.send(sector(i), `${label} sector ${i}`);
    const s = await pair.settle(`${label} after sector ${i}`);
    drq = (s.alt & (ST_DRQ | ST_BSY)) === ST_DRQ;
  }
  return drq;
}

/** Run one operation on both peers, comparing everything along the way. */
export async function runOp(pair: Pair, op: Op, label: string): Promise<void> {
  const c = PRIMARY.cmd;
  const bm = PRIMARY.bm;
  switch (op.k) {
    case "srst": {
      if (op.sameBatch) {
        await pair.send(
          [`outb ${p(PRIMARY.ctl)} ${p(pair.ctl | 4)}`, `outb ${p(PRIMARY.ctl)} ${p(pair.ctl)}`],
          label,
        );
        await pair.settle(label);
      } else {
        // While SRST is held the snapshots keep it set (their HOB toggling must not end the reset).
        pair.ctl |= 4;
        await pair.send([`outb ${p(PRIMARY.ctl)} ${p(pair.ctl)}`], label);
        // Devices that hold BSY while SRST is 1 stay busy here; poll briefly (QEMU resets on its next loop).
        await pair.settle(`${label} (SRST=1)`, 50);
        pair.ctl &= ~4;
        await pair.send([`outb ${p(PRIMARY.ctl)} ${p(pair.ctl)}`], label);
        await pair.settle(`${label} (SRST=0)`);
      }
      return;
    }
    case "nien":
      pair.ctl = op.on ? 0x02 : 0x00;
      await pair.send([`outb ${p(PRIMARY.ctl)} ${p(pair.ctl)}`], label);
      await pair.settle(label);
      return;
    case "select":
      await pair.send([`outb ${p(c + 6)} ${p(0xa0 | (op.unit << 4))}`], label);
      await pair.settle(label);
      return;
    case "regs":
      await pair.send(
        op.writes.map(([r, v]) => `outb ${p(c + r)} ${p(v)}`),
        label,
      );
      await pair.settle(label);
      return;
    case "identify": {
      await pair.send([`outb ${p(c + 6)} ${p(0xa0 | (op.unit << 4))}`, `outb ${p(c + 7)} 0xec`], label);
      const s = await pair.settle(`${label} command`);
      await dataPhase(pair, label, (s.alt & ST_DRQ) !== 0, 2, () => sectorReadLines(op.dword));
      return;
    }
    case "pioIn": {
      await pair.send(issueLines(op.cmd, op.lba, op.count, op.ext, op.unit), label);
      const s = await pair.settle(`${label} command`);
      const n = sectorsOf(op.count, op.ext);
      await dataPhase(pair, label, (s.alt & ST_DRQ) !== 0, n + 1, () => sectorReadLines(op.dword));
      return;
    }
    case "pioOut": {
      await pair.send(issueLines(op.cmd, op.lba, op.count, op.ext, op.unit), label);
      const s = await pair.settle(`${label} command`);
      const n = sectorsOf(op.count, op.ext);
      const data = bytesFromSeed(op.seed, (n + 1) * 512);
      await dataPhase(pair, label, (s.alt & ST_DRQ) !== 0, n + 1, (i) =>
        sectorWriteLines(data, i * 512, op.dword),
      );
      return;
    }
    case "dma": {
      const n = sectorsOf(op.count, op.ext);
      const bytes = n * 512;
      const entries: [number, number, boolean][] = [];
      if (op.prd === "exact") entries.push([BUF, bytes, true]);
      else if (op.prd === "split") entries.push([BUF, 512, false], [BUF + 512, bytes - 512, true]);
      else if (op.prd === "long") entries.push([BUF, bytes + 4096, true]);
      // The transfer ends exactly at the end of an entry that is not the last (SFF-8038i: Active stays set).
      else if (op.prd === "extra") entries.push([BUF, bytes, false], [BUF + bytes, 512, true]);
      else entries.push([BUF, Math.max(bytes - 512, 0), true]);
      const prd = new Uint8Array(entries.length * 8);
      const dv = new DataView(prd.buffer);
      entries.forEach(([addr, len, eot], i) => {
        dv.setUint32(i * 8, addr, true);
        dv.setUint16(i * 8 + 4, len & 0xffff, true);
        dv.setUint16(i * 8 + 6, eot ? 0x8000 : 0, true);
      });
      const setup = [
        `outb ${p(bm)} 0x0`,
        `outb ${p(bm + 2)} 0x6`,
        `outl ${p(bm + 4)} ${p(PRDT)}`,
        `write ${p(PRDT)} ${prd.length} 0x${Buffer.from(prd).toString("hex")}`,
      ];
      const span = bytes + 4096;
      if (op.write)
        setup.push(
          `b64write ${p(BUF)} ${bytes} ${Buffer.from(bytesFromSeed(op.seed, bytes)).toString("base64")}`,
        );
      else setup.push(`memset ${p(BUF)} ${span} 0xa5`);
      await pair.send(setup, `${label} setup`);
      const start = `outb ${p(bm)} ${p(op.write ? 0x01 : 0x09)}`;
      if (op.startFirst) {
        // The engine is already running: the transfer starts with the command, so wait for it there.
        await pair.send([start], `${label} BM start`);
        pair.dmaPending = true;
      }
      await pair.send(issueLines(op.cmd, op.lba, op.count, op.ext, 0), label);
      await pair.settle(`${label} command`);
      if (!op.startFirst) await pair.send([start], `${label} BM start`);
      pair.dmaPending = true;
      await pair.settle(`${label} done`);
      pair.dmaPending = false;
      await pair.send([`outb ${p(bm)} 0x0`], `${label} BM stop`);
      await pair.settle(`${label} stopped`);
      if (!op.write) await pair.compareMemory(BUF, span, label);
      return;
    }
    case "nondata": {
      await pair.send(issueLines(op.cmd, op.lba, op.nsect, op.ext, op.unit, op.feat, true), label);
      const s = await pair.settle(`${label} command`);
      // A command that turned out to move data (none generated should): drain it so the next op is meaningful.
      await dataPhase(pair, `${label} drain`, (s.alt & ST_DRQ) !== 0, 4, () => sectorReadLines(false));
      return;
    }
    case "dataPoke":
      await pair.send(
        [`inw ${p(c)}`, `inb ${p(c)}`, `inl ${p(c)}`, `inw ${p(c + 2)}`, `inl ${p(c + 4)}`],
        label,
      );
      await pair.settle(label);
      return;
    case "bmRegs": {
      const lines = [
        `outb ${p(bm + 2)} ${p(op.status)}`,
        `outb ${p(bm)} ${p(op.cmd)}`,
        `outl ${p(bm + 4)} ${p(op.prdt)}`,
      ];
      for (let i = 0; i < 16; i++) lines.push(`inb ${p(bm + i)}`);
      lines.push(`inw ${p(bm)}`, `inw ${p(bm + 2)}`, `inl ${p(bm)}`, `inl ${p(bm + 4)}`, `outb ${p(bm)} 0x0`);
      await pair.send(lines, label);
      await pair.settle(label);
      return;
    }
    case "bmReset":
      await pair.send([`outb ${p(bm)} 0x0`, `outb ${p(bm + 2)} 0x6`], label);
      await pair.settle(label);
      return;
  }
}

/** Map the PIIX IDE Bus Master block to 0xC000 and enable I/O + bus mastering (what firmware would do). */
export const PCI_SETUP = [
  "outl 0xcf8 0x80000920",
  "outl 0xcfc 0xc001",
  "outl 0xcf8 0x80000904",
  "outw 0xcfc 0x5",
  "irq_intercept_in ioapic",
];

// ---- random generation -----------------------------------------------------------------------------------------

// CHECK POWER MODE (E5h/98h) is left out: after a STANDBY its answer is deviation C6 (00h, where QEMU says FFh),
// and that value then travels on through the HOB FIFO into later commands, where no excuse can pin it to its
// cause. The scripted opcode sweep and test/ide cover it.
const NONDATA_OK = [0x10, 0x40, 0x41, 0x42, 0x70, 0x90, 0xe7, 0xea, 0xf8, 0x27, 0xf5];
const NONDATA_OK_QEMU = [...NONDATA_OK, 0xe5, 0x98];
const NONDATA_POWER = [0x94, 0x95, 0x96, 0x97, 0x99, 0xe0, 0xe1, 0xe2, 0xe3, 0xe6];
const INVALID = [
  0x00, 0x03, 0x06, 0x08, 0x37, 0x38, 0x87, 0xa0, 0xa1, 0xb0, 0xb1, 0xc0, 0xe4, 0xe8, 0xef, 0xf0, 0xf9, 0xff,
];

export interface GenEnv {
  sectors: number;
  /**
   * The profile xenide runs in. "qemu-7.2" has no deviations to keep away from, so its sequences also use
   * what the default profile's cannot: CHECK POWER MODE (C6).
   */
  compat?: CompatProfile;
}

export function genSequence(rnd: () => number, env: GenEnv, length: number): Op[] {
  const pick = <T>(a: readonly T[]): T => a[rnd() % a.length]!;
  const chance = (pct: number): boolean => rnd() % 100 < pct;
  const lbaFor = (count: number): number => {
    const r = rnd() % 100;
    if (r < 80) return rnd() % Math.max(1, env.sectors - count + 1);
    if (r < 90) return env.sectors - 1 - (rnd() % 2);
    return env.sectors + (rnd() % 64);
  };
  const ops: Op[] = [{ k: "srst", sameBatch: chance(30) }, { k: "nien", on: chance(25) }, { k: "bmReset" }];
  let mult = 16; // the setting the device reports after reset (IDENTIFY word 59 = 0x0110)
  for (let i = 0; i < length; i++) {
    const r = rnd() % 100;
    if (r < 14) {
      const ext = chance(40);
      const multiple = chance(30);
      const cmd = multiple ? (ext ? 0x29 : 0xc4) : ext ? 0x24 : pick([0x20, 0x21]);
      const count = 1 + (rnd() % (multiple ? Math.max(mult, 1) + 2 : 4));
      ops.push({ k: "pioIn", cmd, lba: lbaFor(count), count, ext, dword: chance(50), unit: 0 });
    } else if (r < 26) {
      const ext = chance(40);
      const multiple = chance(30);
      const cmd = multiple ? (ext ? 0x39 : 0xc5) : ext ? 0x34 : pick([0x30, 0x31, 0x3c]);
      const count = 1 + (rnd() % (multiple ? Math.max(mult, 1) + 2 : 3));
      ops.push({ k: "pioOut", cmd, lba: lbaFor(count), count, ext, dword: chance(50), seed: rnd(), unit: 0 });
    } else if (r < 44) {
      const ext = chance(40);
      const write = chance(50);
      const cmd = write ? (ext ? 0x35 : pick([0xca, 0xcb])) : ext ? 0x25 : pick([0xc8, 0xc9]);
      const count = 1 + (rnd() % 8);
      const prd = pick(["exact", "exact", "exact", "split", "long", "short", "extra"] as const);
      ops.push({
        k: "dma",
        cmd,
        write,
        lba: lbaFor(count),
        count,
        ext,
        prd: prd === "split" && count < 2 ? "exact" : prd === "short" && count < 2 ? "exact" : prd,
        startFirst: chance(15),
        seed: rnd(),
      });
    } else if (r < 52) {
      ops.push({ k: "identify", unit: 0, dword: chance(50) });
    } else if (r < 60) {
      const n = pick([0, 1, 2, 4, 8, 16, 3, 32]);
      if ([0, 1, 2, 4, 8, 16].includes(n)) mult = n;
      ops.push({ k: "nondata", cmd: 0xc6, feat: 0, nsect: n, lba: 0, ext: false, unit: 0 });
    } else if (r < 72) {
      const cmd = pick(env.compat === "qemu-7.2" ? NONDATA_OK_QEMU : NONDATA_OK);
      const ext = cmd === 0x27 || cmd === 0x42 || cmd === 0xea;
      ops.push({ k: "nondata", cmd, feat: 0, nsect: rnd() & 0xff, lba: lbaFor(1), ext, unit: 0 });
    } else if (r < 76) {
      ops.push({ k: "nondata", cmd: pick(NONDATA_POWER), feat: 0, nsect: 1, lba: 0, ext: false, unit: 0 });
    } else if (r < 82) {
      ops.push({
        k: "nondata",
        cmd: pick(INVALID),
        feat: 0,
        nsect: rnd() & 0xff,
        lba: rnd() & 0xffff,
        ext: false,
        unit: 0,
      });
    } else if (r < 86) {
      ops.push({ k: "srst", sameBatch: chance(30) });
      mult = 16;
    } else if (r < 89) {
      ops.push({ k: "nien", on: chance(30) });
    } else if (r < 94) {
      const writes: [number, number][] = [];
      const n = 1 + (rnd() % 8);
      for (let j = 0; j < n; j++) writes.push([1 + (rnd() % 5), rnd() & 0xff]);
      if (chance(30)) writes.push([6, pick([0xa0, 0xe0, 0x40, 0x4f, 0x00])]);
      ops.push({ k: "regs", writes });
    } else if (r < 97) {
      ops.push({ k: "dataPoke" });
    } else {
      ops.push({
        k: "bmRegs",
        cmd: rnd() & 0xff & ~0x01,
        status: rnd() & 0xff,
        prdt: (rnd() & 0x0ffffff) >>> 0,
      });
    }
  }
  return ops;
}
