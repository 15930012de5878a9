/** Number and size formatting shared by the bench table, the report and the demo. */
import type { QtestResult } from "./types.ts";

export function fmtSize(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes >> 20}M`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes >> 10}K`;
  return `${bytes}`;
}

/** Three significant digits with k/M suffixes: 1234 → "1.23k", 52100000 → "52.1M". */
export function fmtNum(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "-";
  const a = Math.abs(x);
  if (a >= 1e9) return `${(x / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${(x / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${(x / 1e3).toPrecision(3)}k`;
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toPrecision(3);
  if (a === 0) return "0";
  return x.toPrecision(2);
}

/** Microseconds a path spends beyond a floor: "1.20 us above" or, when it beats it, "0.30 us below". */
export function fmtAbove(us: number | null | undefined): string {
  if (us === null || us === undefined || !Number.isFinite(us)) return "- us above";
  return us >= 0 ? `${fmtNum(us)} us above` : `${fmtNum(-us)} us below`;
}

export function fmtRatio(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "-";
  return `${x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toPrecision(2)}x`;
}

/** A plain-text table with right-aligned numeric columns. */
export function textTable(header: string[], rows: string[][], leftCols = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i < leftCols ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** A Markdown table (numeric columns right-aligned). */
export function mdTable(header: string[], rows: string[][], leftCols = 1): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  const out = [`| ${header.map(esc).join(" | ")} |`];
  out.push(`|${header.map((_, i) => (i < leftCols ? " --- " : " ---: ")).join("|")}|`);
  for (const r of rows) out.push(`| ${r.map(esc).join(" | ")} |`);
  return out.join("\n");
}

/** The cold first pass of each server, which the warm medians leave out. */
export function firstPassText(q: QtestResult): string {
  const f = q.firstPass;
  if (!f) return "";
  const qemu = f.qemu === null ? "" : `, QEMU ${f.qemu.toFixed(3)} s`;
  return `; first pass after start: xenide ${f.xenide.toFixed(3)} s${qemu}`;
}
