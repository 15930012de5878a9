/**
 * What one disk command costs a real guest: a ledger fed with the guest's port writes to the IDE function.
 * A command's account opens with the first task-file or PRD-address write after the previous command (the
 * driver setting the next one up) and closes when the next one opens, so it holds the command's setup, the
 * command write, its data transfer (PIO data-port exits or Bus Master start/stop), its completion (status
 * reads, interrupt) and any polling in between. Workload phases ("probe", "ext2", ...) split the totals.
 */

import {
  type Accounting,
  COUNTER_KINDS,
  type Counts,
  exitsOf,
  zeroCounts,
} from "../../hypervisor/accounting.ts";
import type { AccessSize } from "../../hypervisor/bus.ts";
import { LEGACY } from "../../ide/piix.ts";
import { ATA_CMD, BM_REG_PRDT, REG_COMMAND, REG_SECTOR_COUNT } from "../../spec/ata.ts";

const SECTOR = 512;
const MiB = 1024 * 1024;

const OPCODE_NAMES = new Map<number, string>(Object.entries(ATA_CMD).map(([name, op]) => [op, name]));

export function commandName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `0x${opcode.toString(16).padStart(2, "0")}`;
}

/** Commands that move sectors of data (READ VERIFY reads the medium but transfers nothing). */
function transfersData(name: string): boolean {
  return /^(READ|WRITE)_(SECTORS|MULTIPLE|DMA)(_EXT|_NORETRY)?$/.test(name);
}

function add(into: Counts, d: Counts): void {
  for (const k of COUNTER_KINDS) into[k] += d[k];
}

export interface CommandStats {
  count: number;
  sectors: number;
  counts: Counts;
}

export interface CommandReport {
  command: string;
  count: number;
  sectors: number;
  bytes: number;
  exits: number;
  exitsPerCommand: number;
  irqInjections: number;
  cycles: number;
  cyclesPerCommand: number;
}

export interface PhaseReport {
  phase: string;
  commands: CommandReport[];
  /** Everything that happened in the phase, commands or not. */
  counts: Counts;
  exits: number;
  cycles: number;
  bytes: number;
  commandCount: number;
  exitsPerCommand: number | null;
  exitsPerMiB: number | null;
  cyclesPerMiB: number | null;
}

interface Phase {
  name: string;
  start: Counts;
  end: Counts | null;
  commands: Map<string, CommandStats>;
}

interface OpenCommand {
  name: string;
  sectors: number;
  start: Counts;
}

export class CommandLedger {
  private readonly phases: Phase[] = [];
  private phase: Phase;
  private open: OpenCommand | null = null;
  /** True between a command write and the next setup write on that channel. */
  private issued = [true, true];
  private readonly nsect = [
    [0, 0],
    [0, 0],
  ];

  constructor(
    private readonly acct: Accounting,
    private readonly bmBase: () => number,
    firstPhase = "start",
  ) {
    this.phase = this.newPhase(firstPhase);
  }

  private newPhase(name: string): Phase {
    const p: Phase = { name, start: this.acct.snapshot(), end: null, commands: new Map() };
    this.phases.push(p);
    return p;
  }

  /** Start a new workload phase (closes the open command's account first). */
  mark(name: string): void {
    this.close();
    this.phase.end = this.acct.snapshot();
    this.phase = this.newPhase(name);
  }

  /** Feed a guest port write, before the hypervisor performs it. */
  onWrite = (port: number, _size: AccessSize, value: number): void => {
    const bm = this.bmBase();
    let ch = -1;
    let reg = -1;
    for (let i = 0; i < LEGACY.length; i++) {
      const off = port - LEGACY[i]!.cmd;
      if (off >= 1 && off <= 7) {
        ch = i;
        reg = off;
      }
    }
    if (ch < 0 && bm >= 0 && port >= bm && port < bm + 16) {
      const off = port - bm;
      if ((off & 7) >= BM_REG_PRDT && (off & 7) < BM_REG_PRDT + 4) {
        this.setupStarts(off >> 3);
      }
      return;
    }
    if (ch < 0) return;
    if (reg === REG_COMMAND) {
      this.setupStarts(ch);
      const name = commandName(value & 0xff);
      const ns = this.nsect[ch]!;
      let sectors = 0;
      if (transfersData(name)) {
        sectors = name.endsWith("_EXT") ? (ns[0]! << 8) | ns[1]! || 65536 : ns[1]! || 256;
      }
      this.open!.name = name;
      this.open!.sectors = sectors;
      this.issued[ch] = true;
      return;
    }
    this.setupStarts(ch);
    if (reg === REG_SECTOR_COUNT) {
      const ns = this.nsect[ch]!;
      ns[0] = ns[1]!;
      ns[1] = value & 0xff;
    }
  };

  private setupStarts(ch: number): void {
    if (!this.issued[ch]) return;
    this.issued[ch] = false;
    this.close();
    this.open = { name: "(setup)", sectors: 0, start: this.acct.snapshot() };
  }

  private close(): void {
    const o = this.open;
    if (!o) return;
    this.open = null;
    const d = this.acct.since(o.start);
    let s = this.phase.commands.get(o.name);
    if (!s) {
      s = { count: 0, sectors: 0, counts: zeroCounts() };
      this.phase.commands.set(o.name, s);
    }
    s.count++;
    s.sectors += o.sectors;
    add(s.counts, d);
  }

  /** Close the books (the last command and phase) and report. */
  finish(): PhaseReport[] {
    this.close();
    if (!this.phase.end) this.phase.end = this.acct.snapshot();
    return this.report();
  }

  report(): PhaseReport[] {
    const model = this.acct.model;
    return this.phases.map((p) => {
      const end = p.end ?? this.acct.snapshot();
      const counts = zeroCounts();
      for (const k of COUNTER_KINDS) counts[k] = end[k] - p.start[k];
      const commands: CommandReport[] = [...p.commands.entries()]
        .filter(([name]) => name !== "(setup)")
        .map(([command, s]) => {
          const exits = exitsOf(s.counts);
          const cycles = model.cycles(s.counts);
          return {
            command,
            count: s.count,
            sectors: s.sectors,
            bytes: s.sectors * SECTOR,
            exits,
            exitsPerCommand: exits / s.count,
            irqInjections: s.counts.irqInject,
            cycles,
            cyclesPerCommand: cycles / s.count,
          };
        })
        .sort((a, b) => b.count - a.count);
      const exits = exitsOf(counts);
      const cycles = model.cycles(counts);
      const bytes = commands.reduce((n, c) => n + c.bytes, 0);
      const commandCount = commands.reduce((n, c) => n + c.count, 0);
      return {
        phase: p.name,
        commands,
        counts,
        exits,
        cycles,
        bytes,
        commandCount,
        exitsPerCommand: commandCount ? exits / commandCount : null,
        exitsPerMiB: bytes ? exits / (bytes / MiB) : null,
        cyclesPerMiB: bytes ? cycles / (bytes / MiB) : null,
      };
    });
  }
}

/** A plain-text table of a ledger's phases for the console. */
export function formatLedger(title: string, phases: readonly PhaseReport[]): string {
  const out: string[] = [title];
  const f = (n: number | null, d = 1) => (n === null ? "-" : n.toFixed(d));
  for (const p of phases) {
    if (!p.commandCount && !p.exits) continue;
    out.push(
      `  ${p.phase}: ${p.commandCount} commands, ${(p.bytes / MiB).toFixed(2)} MiB, ${p.exits} exits ` +
        `(${p.counts.pioIn} in, ${p.counts.pioOut} out, ${p.counts.stringIo} string), ${p.counts.irqInject} IRQs, ` +
        `${f(p.exitsPerCommand)} exits/command, ${f(p.exitsPerMiB, 0)} exits/MiB, ${(p.cycles / 1e6).toFixed(2)} Mcycles`,
    );
    for (const c of p.commands) {
      out.push(
        `    ${c.command.padEnd(28)} x${String(c.count).padStart(5)}  ${String(c.sectors).padStart(7)} sectors  ` +
          `${f(c.exitsPerCommand).padStart(8)} exits/cmd  ${c.irqInjections} IRQs  ${Math.round(c.cyclesPerCommand)} cycles/cmd`,
      );
    }
  }
  return out.join("\n");
}
