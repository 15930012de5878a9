/** The bench's terminal output and the files it leaves for `xenide report` and the README. */
import { firstPassText, fmtAbove, fmtNum, fmtRatio } from "./format.ts";
import { interleavedFor, rangeText } from "./targets.ts";
import { costsText, machineLine, rowsMarkdown, rowsText, targetsText } from "./table.ts";
import { mdTable, textTable } from "./format.ts";
import {
  cdLine,
  cdTable,
  formatsLine,
  formatsTable,
  ideTestLine,
  ideTestTable,
  interleavedLine,
  interleavedTable,
  type Table,
} from "./compare.ts";
import type { BenchResult } from "./types.ts";

export function benchText(res: BenchResult): string {
  const out: string[] = [];
  out.push(`xenide bench${res.quick ? " --quick" : ""}: ${res.startedAt} .. ${res.finishedAt}`);
  out.push(`machine: ${machineLine(res)}`);
  out.push(
    `image: ${res.image.bytes / 2 ** 20} MiB raw, O_DIRECT ${res.image.directSupported ? "available" : "not supported"}; ` +
      `${res.settings.repeats} repeats of ${res.settings.budgetMs} ms per cell, median with spread (±half range)`,
  );
  out.push("");
  out.push(`modelled costs (cycles per event; ${res.modelGHz} GHz to turn cycles into time):`);
  out.push(costsText(res));
  out.push("");
  const bad = res.checks.filter((c) => !c.ok);
  out.push(
    `data checks: ${res.checks.length - bad.length}/${res.checks.length} paths wrote and read back the right bytes` +
      (bad.length ? `; FAILED: ${bad.map((c) => `${c.path} (${c.note})`).join("; ")}` : ""),
  );
  for (const u of res.unavailable) out.push(`unavailable: ${u.path}: ${u.reason}`);
  out.push("");
  out.push(rowsText(res.rows));
  out.push("");
  if (res.dispatch) {
    const d = res.dispatch;
    out.push(
      `port exits: ${fmtNum(d.ioreqExitsPerSec.median)}/s through the ioreq path ` +
        `(${fmtNum(d.ioreqExitsPerSec.min)}-${fmtNum(d.ioreqExitsPerSec.max)}; ` +
        `${fmtNum(d.ioreqExitsPerCpuSec?.median)}/s of CPU time); bare bus dispatch ` +
        `${fmtNum(d.bareDispatchPerSec.median)}/s; inside a 16-bit PIO read workload ${fmtNum(d.pioWorkloadExitsPerSec)}/s`,
    );
  }
  if (res.dispatch?.pioWorkloadExitsPerCpuSec) {
    const p = res.dispatch.pioWorkloadExitsPerCpuSec;
    out.push(
      `port exits per CPU-second in a 16-bit PIO read workload (64 KiB commands, null disk): ` +
        `${fmtNum(p.median)} (${fmtNum(p.min)}-${fmtNum(p.max)})`,
    );
  }
  if (res.startup) out.push(startupText(res.startup));
  for (const r of [res.rss, res.rssQcow2]) {
    if (!r) continue;
    const label = r.format === "qcow2" ? "PV streaming (qcow2)" : "PV streaming";
    out.push(
      r.status === "ok"
        ? `${label}: ${fmtNum(r.bytesStreamed / 2 ** 30)} GiB in ${r.seconds.toFixed(1)} s ` +
            `(${fmtNum(r.bytesStreamed / r.seconds / 1e6)} MB/s), peak RSS ${r.maxRssMiB.toFixed(0)} MiB ` +
            `(${r.startRssMiB.toFixed(0)} MiB at start)`
        : `${label}: ${r.status}: ${r.note ?? ""}`,
    );
  }
  if (res.qtest) {
    const q = res.qtest;
    out.push(
      q.status === "ok"
        ? `qtest (${q.workload}, ${q.commands} commands): xenide ${q.xenideSeconds!.median.toFixed(3)} s, ` +
            `${q.qemuVersion} ${q.qemuSeconds!.median.toFixed(3)} s: ${q.speedup!.toFixed(1)}x` +
            firstPassText(q)
        : `qtest: ${q.status}: ${q.note ?? ""}` +
            (q.xenideSeconds ? ` (xenide alone ${q.xenideSeconds.median.toFixed(3)} s)` : ""),
    );
  }
  out.push(...comparisons(res, (t) => textTable(t.header, t.rows, t.leftCols)));
  if (res.probes?.length) {
    out.push("");
    out.push("why, as measured in this run:");
    for (const p of res.probes) out.push(`- ${p.id}: ${p.verdict}`);
  }
  out.push("");
  out.push("targets:");
  out.push(targetsText(res));
  return out.join("\n") + "\n";
}

/**
 * The targets in interleaved rounds, the comparisons with qemu-img bench and QEMU's ide-test and the CD-ROM
 * rows, each a line and a table (a blank line first); nothing for those the run left out.
 */
function comparisons(res: BenchResult, table: (t: Table) => string): string[] {
  const out: string[] = [];
  if (res.interleaved?.length) {
    out.push("", interleavedLine(res.interleaved));
    out.push(table(interleavedTable(res.interleaved)));
  }
  if (res.formats) {
    out.push("", formatsLine(res.formats));
    if (res.formats.rows.length) out.push(table(formatsTable(res.formats)));
  }
  if (res.ideTest) {
    out.push("", ideTestLine(res.ideTest));
    if (res.ideTest.launcher.cases.length) out.push(table(ideTestTable(res.ideTest)));
  }
  if (res.cd) {
    out.push("", cdLine(res.cd));
    if (res.cd.rows.length) out.push(table(cdTable(res.cd)));
  }
  return out;
}

/** Start-up of a fresh process: time to the first request, the first second's rate against the steady one. */
export function startupText(s: NonNullable<BenchResult["startup"]>): string {
  if (s.status !== "ok") return `start-up: ${s.status}: ${s.note ?? ""}`;
  return (
    `start-up (fresh process importing ${s.entry}, PV 64 KiB sequential reads): first request after ` +
    `${s.firstRequestMs.toFixed(0)} ms; ${fmtNum(s.firstSecondPerSec)}/s over the first second, ` +
    `${fmtNum(s.steadyPerSec)}/s steady (${((s.firstSecondPerSec / s.steadyPerSec) * 100).toFixed(0)}%)`
  );
}

/** For a target measured in interleaved rounds: its range, the rounds, and the floor from the same rounds. */
function roundsNote(res: BenchResult, id: string): string {
  const x = interleavedFor(res.interleaved, id === "pv-async-vs-libuv" ? "pv-async-vs-sync" : id);
  if (!x) return "";
  const s = id === "pv-async-vs-libuv" ? x.asyncOfLibuv : x.ratio;
  if (!s) return "";
  return (
    ` (${rangeText(s)} in ${x.rounds} interleaved rounds of ${x.sliceMs} ms` +
    (id === "pv-async-vs-libuv" ? ")" : `; floor ${fmtRatio(x.floor.median)}`) +
    (x.gapUs ? `, ${fmtNum(x.gapUs.median)} us above it` : "") +
    (x.floorSeq ? `; in sequence ${fmtRatio(x.floorSeq.median)}, ${fmtAbove(x.gapSeqUs?.median)} it` : "") +
    (x.floorInPlace
      ? `; in place ${fmtRatio(x.floorInPlace.median)}, ${fmtAbove(x.gapInPlaceUs?.median)} it`
      : "") +
    (id === "pv-async-vs-libuv" ? "" : ")")
  );
}

/** The Markdown summary for the README: machine, targets, and the headline rows. */
export function benchMarkdown(res: BenchResult): string {
  const out: string[] = [];
  out.push(`Measured ${res.finishedAt.slice(0, 16).replace("T", " ")} UTC on ${machineLine(res)}.`);
  out.push(
    `Image ${res.image.bytes / 2 ** 20} MiB raw; ${res.settings.repeats} repeats x ${res.settings.budgetMs} ms per cell; ` +
      `ratios are against plain node:fs in the same run (readSync/writeSync at QD1, libuv callbacks deeper)` +
      (res.interleaved?.length
        ? `; the PV, DMA and async targets are the medians of per-round ratios from interleaved rounds (each round ` +
          `times the baseline, the path and its null disk for the same slice), with their range.`
        : "."),
  );
  out.push("");
  out.push(
    mdTable(
      ["target", "measured", "needed", "met"],
      res.targets.map((t) => [
        t.text,
        t.measured === null ? "not measured" : `${fmtNum(t.measured)}${t.unit}` + roundsNote(res, t.id),
        `${fmtNum(t.threshold)}${t.unit}`,
        t.met === null ? "n/a" : t.met ? "yes" : `no (${/missed by \d+%/.exec(t.detail)?.[0] ?? "missed"})`,
      ]),
    ),
  );
  out.push("");
  const headline = res.rows.filter(
    (r) =>
      r.status === "ok" &&
      r.op === "read" &&
      ((r.blockSize === 4096 && r.pattern === "rand") || (r.blockSize === 65536 && r.pattern === "seq")) &&
      (r.qd === 1 || r.qd === 32) &&
      (r.backend === "raw" || r.variant === "pv" || r.variant === "pio16"),
  );
  out.push(rowsMarkdown(headline));
  out.push("");
  const more = comparisons(res, (t) => mdTable(t.header, t.rows, t.leftCols));
  if (more.length) out.push(...more.slice(1), "");
  if (res.probes?.length) {
    out.push("Why, as measured in this run (`xenide bench` runs these probes):");
    out.push("");
    for (const p of res.probes) out.push(`- **${p.id}**: ${p.verdict}`);
    out.push("");
  }
  if (res.startup) out.push(startupText(res.startup), "");
  return out.join("\n");
}
