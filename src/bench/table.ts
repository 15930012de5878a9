/** The bench's result table, as text for the terminal and as Markdown for the README and the report. */
import { fmtNum, fmtRatio, fmtSize, mdTable, textTable } from "./format.ts";
import type { BenchResult, Row } from "./types.ts";

export const ROW_HEADER = [
  "path",
  "engine",
  "RAM",
  "cache",
  "op",
  "pat",
  "bs",
  "qd",
  "IOPS",
  "MB/s",
  "spread",
  "vs fs",
  "exits/IO",
  "exits/MiB",
  "notify/IO",
  "irq/IO",
  "cycles/IO",
  "wall s",
];

export function rowCells(r: Row): string[] {
  const ok = r.status === "ok";
  const spreadPct =
    ok && r.iops.median > 0 ? `±${(((r.iops.max - r.iops.min) / 2 / r.iops.median) * 100).toFixed(0)}%` : "-";
  return [
    r.path,
    r.engine ?? "-",
    ramText(r.ramAligned),
    r.cache,
    r.op,
    r.pattern,
    fmtSize(r.blockSize),
    String(r.qd),
    ok ? fmtNum(r.iops.median) : r.status,
    ok ? fmtNum(r.mbps.median) : "-",
    spreadPct,
    fmtRatio(r.ratio),
    ok && r.family !== "baseline" ? fmtNum(r.exitsPerIo) : "-",
    ok && r.family !== "baseline" ? fmtNum(r.exitsPerMiB) : "-",
    ok && r.family !== "baseline" ? fmtNum(r.notifyPerIo) : "-",
    ok && r.family !== "baseline" ? fmtNum(r.irqPerIo) : "-",
    ok && r.family !== "baseline" ? fmtNum(r.cyclesPerIo) : "-",
    ok ? r.wallSeconds.toFixed(2) : "-",
  ];
}

/** The alignment of the memory a row's data lands in (guest RAM or the baseline's buffers). */
function ramText(aligned: boolean | null | undefined): string {
  return aligned === true ? "aligned" : aligned === false ? "UNALIGNED" : "-";
}

export function rowsText(rows: Row[]): string {
  return textTable(ROW_HEADER, rows.map(rowCells));
}

export function rowsMarkdown(rows: Row[]): string {
  return mdTable(ROW_HEADER, rows.map(rowCells));
}

export function costsText(res: BenchResult): string {
  return textTable(
    ["cost kind", "cycles", "source"],
    res.costs.map((c) => [c.kind, String(c.cycles), c.source]),
    1,
  ).replace(/^/gm, "");
}

export function targetsText(res: BenchResult): string {
  return textTable(
    ["target", "measured", "needed", "met", "detail"],
    res.targets.map((t) => [
      t.text,
      t.measured === null ? "-" : `${fmtNum(t.measured)}${t.unit}`,
      `${fmtNum(t.threshold)}${t.unit}`,
      t.met === null ? "n/a" : t.met ? "yes" : "NO",
      t.detail,
    ]),
    1,
  );
}

export function machineLine(res: BenchResult): string {
  const m = res.machine;
  return (
    `${m.cpu}, ${m.cores} vCPUs, ${m.memGiB} GiB RAM, ${m.os} ${m.kernel}, Node ${m.node} (V8 ${m.v8}), ` +
    `libuv pool ${m.uvThreadpool}` +
    (m.uvIoUring ? ", file I/O on io_uring" : "") +
    (m.loadAvg
      ? `; load average ${m.loadAvg.start.toFixed(1)} at start, ${m.loadAvg.end.toFixed(1)} at end`
      : "")
  );
}
