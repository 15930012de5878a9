/**
 * Figures from the real-guest runs, when they are there: per-phase exit ledgers of firmware and Linux guests
 * booted on the emulated IDE controller (report/guests/*.json) and the v86 controller comparison
 * (report/bench/v86-ide.json). Read loosely: a file that does not have the expected shape is skipped.
 */
import fs from "node:fs";
import path from "node:path";

export interface GuestPhase {
  /** Which run ("linux-dma", "seabios-bmbar") and which phase of it ("boot", "seq-read"). */
  run: string;
  phase: string;
  commands: number;
  exits: number;
  bytes: number;
  exitsPerCommand: number;
  exitsPerMiB: number | null;
  cyclesPerMiB: number | null;
}

export interface V86Row {
  controller: string;
  mode: string;
  readMBps: number;
  writeMBps: number;
}

export interface GuestFigures {
  phases: GuestPhase[];
  v86: { mib: number; rows: V86Row[] } | null;
  sources: string[];
}

const num = (x: unknown): number | null => (typeof x === "number" && Number.isFinite(x) ? x : null);

function phasesOf(run: string, doc: unknown): GuestPhase[] {
  const list = Array.isArray(doc) ? doc : (doc as { phases?: unknown })?.phases;
  if (!Array.isArray(list)) return [];
  const out: GuestPhase[] = [];
  for (const p of list as Record<string, unknown>[]) {
    const exits = num(p?.exits);
    const commands = num(p?.commandCount);
    if (typeof p?.phase !== "string" || exits === null || commands === null) continue;
    out.push({
      run,
      phase: p.phase,
      commands,
      exits,
      bytes: num(p.bytes) ?? 0,
      exitsPerCommand: num(p.exitsPerCommand) ?? (commands ? exits / commands : 0),
      exitsPerMiB: num(p.exitsPerMiB),
      cyclesPerMiB: num(p.cyclesPerMiB),
    });
  }
  return out;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

/** Collect whatever real-guest figures exist under `guestsDir` and at `v86File`. */
export function loadGuestFigures(guestsDir: string, v86File: string): GuestFigures {
  const phases: GuestPhase[] = [];
  const sources: string[] = [];
  let names: string[] = [];
  try {
    names = fs
      .readdirSync(guestsDir)
      .filter((n) => n.endsWith(".json"))
      .sort();
  } catch {
    /* no guest runs */
  }
  for (const n of names) {
    const got = phasesOf(n.replace(/\.json$/, ""), readJson(path.join(guestsDir, n)));
    if (got.length) {
      phases.push(...got);
      sources.push(path.join(guestsDir, n));
    }
  }
  let v86: GuestFigures["v86"] = null;
  const doc = readJson(v86File) as { mib?: unknown; rows?: unknown } | undefined;
  if (doc && Array.isArray(doc.rows)) {
    const rows: V86Row[] = [];
    for (const r of doc.rows as Record<string, unknown>[]) {
      const read = num(r?.readMBps);
      const write = num(r?.writeMBps);
      if (typeof r?.controller !== "string" || typeof r?.mode !== "string" || read === null || write === null)
        continue;
      rows.push({ controller: r.controller, mode: r.mode, readMBps: read, writeMBps: write });
    }
    if (rows.length) {
      v86 = { mib: num(doc.mib) ?? 0, rows };
      sources.push(v86File);
    }
  }
  return { phases, v86, sources };
}
