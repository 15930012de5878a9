/**
 * The comparisons with QEMU's own programs and the CD-ROM rows as tables (header and cells) and one-line
 * summaries, shared by the terminal output, the Markdown summary and the report page.
 */
import { fmtAbove, fmtNum, fmtRatio, fmtSize } from "./format.ts";
import { median } from "./stats.ts";
import type {
  CdResult,
  FormatsResult,
  IdeTestResult,
  InterleavedResult,
  RoundSpread,
  Spread,
} from "./types.ts";

export interface Table {
  header: string[];
  rows: string[][];
  /** Columns of words (left-aligned); the rest are figures. */
  leftCols: number;
}

const iops = (s: Spread | null) => (s ? fmtNum(s.median) : "-");

/** raw, qcow2 and NBD at each depth: xenide random and sequential, qemu-img bench, the ratios. */
export function formatsTable(f: FormatsResult): Table {
  return {
    header: [
      "medium",
      "QD",
      "xenide rand IOPS",
      "xenide seq IOPS",
      "qemu-img bench IOPS",
      "rand / qemu-img",
      "seq / qemu-img",
    ],
    leftCols: 1,
    rows: f.rows.map((r) =>
      r.status === "ok"
        ? [
            `${r.medium}${r.direct ? " (O_DIRECT)" : ""}`,
            String(r.qd),
            iops(r.xenideRandIops),
            iops(r.xenideSeqIops),
            iops(r.qemuImgIops),
            fmtRatio(r.ratio),
            fmtRatio(r.seqRatio),
          ]
        : [r.medium, String(r.qd), `${r.status}: ${r.note ?? ""}`, "", "", "", ""],
    ),
  };
}

/** One line above the formats table: what was compared, or why nothing was. */
export function formatsLine(f: FormatsResult): string {
  if (f.status !== "ok") return `raw/qcow2/NBD vs qemu-img bench: ${f.status}: ${f.note ?? ""}`;
  return (
    `raw/qcow2/NBD vs ${f.qemuImgVersion ?? "qemu-img"} bench: ${fmtSize(f.imageBytes)} of the bench image's bytes, ` +
    `4 KiB reads on the async engine, ${f.repeats} repeats of ${f.budgetMs} ms, median; qcow2 made by ` +
    `\`qemu-img convert -O qcow2 -S 0\` (fully allocated), NBD served by \`qemu-nbd -r --cache=none\` on a unix ` +
    `socket. qemu-img bench reads sequentially (its only pattern), so xenide's sequential figure is the like-for-like one` +
    (f.checked?.length ? `; bytes checked through ${f.checked.join(", ")}` : "") +
    (f.qcow2OfRaw
      ? `; qcow2 against raw at QD32 in alternating rounds: ${fmtNum(f.qcow2OfRaw.qcow2.median)} vs ` +
        `${fmtNum(f.qcow2OfRaw.raw.median)} IOPS random, ${fmtRatio(f.qcow2OfRaw.ratio)}`
      : "")
  );
}

/** Case by case: the launcher and QEMU, pass or fail, seconds. */
export function ideTestTable(t: IdeTestResult): Table {
  const q = new Map((t.qemu?.cases ?? []).map((c) => [c.name, c]));
  const cell = (c: { ok: boolean; seconds: number } | undefined) =>
    c ? `${c.ok ? "pass" : "FAIL"} ${c.seconds.toFixed(2)} s` : "-";
  return {
    header: ["case", "launcher", "QEMU", "launcher / QEMU"],
    leftCols: 3,
    rows: t.launcher.cases.map((c) => {
      const d = q.get(c.name);
      return [
        c.name.replace(/^\/x86_64/, ""),
        cell(c),
        cell(d),
        c.ok && d?.ok && d.seconds > 0 ? fmtRatio(c.seconds / d.seconds) : "-",
      ];
    }),
  };
}

export function ideTestLine(t: IdeTestResult): string {
  if (t.status !== "ok") return `QEMU's ide-test: ${t.status}: ${t.note ?? ""}`;
  const l = t.launcher;
  const head =
    `QEMU's ide-test (${t.cases} cases, one process each, interleaved` +
    `${(t.rounds ?? 1) > 1 ? `, median of ${t.rounds} rounds` : ""}): launcher ${l.passed}/${t.cases} passed, ` +
    `${l.seconds.toFixed(1)} s`;
  if (!t.qemu) return `${head}; QEMU not measured: ${t.qemuNote ?? ""}`;
  return (
    `${head}; ${t.qemu.version} ${t.qemu.passed}/${t.cases} passed, ${t.qemu.seconds.toFixed(1)} s; ` +
    `over the ${t.compared} cases both passed the launcher takes ${fmtRatio(t.ratio)} QEMU's time`
  );
}

/** CD-ROM reads through PIO and DMA beside the disk's: exits per command, per 2 KiB sector, per MiB. */
export function cdTable(c: CdResult): Table {
  return {
    header: ["device", "via", "bytes/command", "exits/command", "exits/2 KiB", "exits/MiB", "IRQs/command"],
    leftCols: 2,
    rows: c.rows.map((r) => [
      r.device === "cd"
        ? "CD-ROM, PACKET READ(10)"
        : r.via === "pio"
          ? "disk, READ SECTORS"
          : "disk, READ DMA",
      r.via.toUpperCase(),
      fmtSize(r.bytesPerCommand),
      fmtNum(r.exitsPerCommand),
      fmtNum(r.exitsPer2KiB),
      fmtNum(r.exitsPerMiB),
      fmtNum(r.irqPerCommand),
    ]),
  };
}

export function cdLine(c: CdResult): string {
  if (c.status !== "ok") return `CD-ROM reads: ${c.status}: ${c.note ?? ""}`;
  return "CD-ROM reads by PIO and DMA, exits counted exactly (the protocol is deterministic), beside the disk's:";
}

/**
 * The targets measured in interleaved rounds: the median of the per-round ratios with their range, the floor
 * and the gap to it from the same rounds, and each side's time per I/O.
 */
export function interleavedTable(il: readonly InterleavedResult[]): Table {
  const range = (s: RoundSpread) => `${fmtRatio(s.min)}-${fmtRatio(s.max)}`;
  return {
    header: [
      "target",
      "rounds",
      "wall s",
      "ratio",
      "range",
      "floor",
      "floor range",
      "to the floor",
      "floor in sequence",
      "floor in place",
      "us/IO (median)",
    ],
    leftCols: 1,
    rows: il.map((x) => [
      x.id,
      `${x.rounds} x ${x.sliceMs} ms`,
      x.seconds.toFixed(1),
      fmtRatio(x.ratio.median),
      range(x.ratio),
      fmtRatio(x.floor.median),
      range(x.floor),
      x.gapUs
        ? `+${fmtNum(x.gapUs.median)} us`
        : x.asyncOfLibuv
          ? `${fmtRatio(x.asyncOfLibuv.median)} libuv`
          : "-",
      x.floorSeq ? `${fmtRatio(x.floorSeq.median)}, ${fmtAbove(x.gapSeqUs?.median)}` : "-",
      x.floorInPlace ? `${fmtRatio(x.floorInPlace.median)}, ${fmtAbove(x.gapInPlaceUs?.median)}` : "-",
      x.sides.map((s) => `${s.path}${s.qd > 1 ? ` QD${s.qd}` : ""} ${fmtNum(median(s.usPerIo))}`).join(", ") +
        (x.dataMismatch ? `; DATA CHECK FAILED: ${x.dataMismatch}` : ""),
    ]),
  };
}

export function interleavedLine(il: readonly InterleavedResult[]): string {
  const checks = il.reduce((n, x) => n + x.dataChecks, 0);
  return (
    `the targets in interleaved rounds (each round times every side for the same slice, in alternating order; ` +
    `each figure the median of its per-round values; QD1 floor = baseline / (baseline + null disk), in sequence = ` +
    `baseline / (null disk with the baseline's read before each I/O, one loop), in place = baseline / (the path ` +
    `over a disk whose read is the baseline's readSync), async floor = ` +
    `libuv QD32 / readSync QD1)` +
    (checks ? `; ${checks} slices' last blocks checked against the image` : "") +
    ":"
  );
}
