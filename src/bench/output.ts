/** The bench's terminal output and the files it leaves for `xenide report` and the README. */
import { firstPassText, fmtNum } from "./format.ts";
import { costsText, machineLine, rowsMarkdown, rowsText, targetsText } from "./table.ts";
import { mdTable } from "./format.ts";
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
  if (res.rss) {
    const r = res.rss;
    out.push(
      r.status === "ok"
        ? `PV streaming: ${fmtNum(r.bytesStreamed / 2 ** 30)} GiB in ${r.seconds.toFixed(1)} s ` +
            `(${fmtNum(r.bytesStreamed / r.seconds / 1e6)} MB/s), peak RSS ${r.maxRssMiB.toFixed(0)} MiB ` +
            `(${r.startRssMiB.toFixed(0)} MiB at start)`
        : `PV streaming: ${r.status}: ${r.note ?? ""}`,
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
  out.push("");
  out.push("targets:");
  out.push(targetsText(res));
  return out.join("\n") + "\n";
}

/** The Markdown summary for the README: machine, targets, and the headline rows. */
export function benchMarkdown(res: BenchResult): string {
  const out: string[] = [];
  out.push(`Measured ${res.finishedAt.slice(0, 16).replace("T", " ")} UTC on ${machineLine(res)}.`);
  out.push(
    `Image ${res.image.bytes / 2 ** 20} MiB raw; ${res.settings.repeats} repeats x ${res.settings.budgetMs} ms per cell; ` +
      `ratios are against plain node:fs in the same run (readSync/writeSync at QD1, libuv callbacks deeper).`,
  );
  out.push("");
  out.push(
    mdTable(
      ["target", "measured", "needed", "met"],
      res.targets.map((t) => [
        t.text,
        t.measured === null ? "not measured" : `${fmtNum(t.measured)}${t.unit}`,
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
  return out.join("\n");
}
