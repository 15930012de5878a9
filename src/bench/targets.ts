/**
 * The project's performance targets, checked against one run's figures. The PV, DMA and async targets take
 * their ratios from the interleaved rounds (src/bench/interleave.ts: each round times the baseline and the
 * path for the same slice, so a machine whose speed drifts weighs on both alike) when the run has them, and
 * from the rows (measured minutes apart) when it does not (`--only` left their paths out of the rounds). A
 * target whose figures did not run is reported as not measured, never as met.
 */
import { fmtAbove, fmtNum, fmtRatio } from "./format.ts";
import { median } from "./stats.ts";
import type {
  AccessPattern,
  BenchResult,
  CacheState,
  FormatMedium,
  FormatsResult,
  IdeTestResult,
  InterleavedResult,
  IoOpKind,
  RoundSpread,
  Row,
  TargetResult,
} from "./types.ts";

export interface RowKey {
  path: string;
  op: IoOpKind;
  pattern: AccessPattern;
  blockSize: number;
  qd: number;
  cache: CacheState;
}

export function findRow(rows: readonly Row[], k: RowKey): Row | undefined {
  return rows.find(
    (r) =>
      r.path === k.path &&
      r.op === k.op &&
      r.pattern === k.pattern &&
      r.blockSize === k.blockSize &&
      r.qd === k.qd &&
      r.cache === k.cache &&
      r.status === "ok",
  );
}

function verdict(
  id: string,
  text: string,
  measured: number | null,
  threshold: number,
  unit: string,
  how: string,
  lowerIsBetter = false,
): TargetResult {
  if (measured === null || !Number.isFinite(measured)) {
    return { id, text, measured: null, threshold, unit, met: null, detail: `not measured: ${how}` };
  }
  const met = lowerIsBetter ? measured <= threshold : measured >= threshold;
  const by = lowerIsBetter ? measured / threshold - 1 : 1 - measured / threshold;
  const detail = met
    ? `${how}; met`
    : `${how}; missed by ${(by * 100).toFixed(0)}% (${fmtNum(measured)}${unit} against ${fmtNum(threshold)}${unit})`;
  return { id, text, measured, threshold, unit, met, detail };
}

const ratioOf = (a: Row | undefined, b: Row | undefined): number | null =>
  a && b && b.iops.median > 0 ? a.iops.median / b.iops.median : null;

/** "0.62-0.75x": a per-round figure's range. */
export function rangeText(s: RoundSpread, unit = "x"): string {
  return `${fmtNum(s.min)}-${fmtNum(s.max)}${unit}`;
}

/** How an interleaved figure was measured: "median of 21 interleaved rounds of 100 ms, 0.62-0.75x". */
export function roundsText(x: InterleavedResult, s: RoundSpread = x.ratio): string {
  return `median of ${x.rounds} interleaved rounds of ${x.sliceMs} ms, ${rangeText(s)}`;
}

/** The interleaved measurement of target `id`, when the run made one with figures. */
export function interleavedFor(
  il: readonly InterleavedResult[] | undefined,
  id: string,
): InterleavedResult | undefined {
  return il?.find((x) => x.id === id && x.rounds > 0 && Number.isFinite(x.ratio.median));
}

/** A QD1 target's detail from its rounds: the ratio's range, and the floor and the gap from the same rounds. */
function floorDetail(x: InterleavedResult): string {
  const [base, path, nul] = x.sides;
  const med = (i: number) => x.sides[i]!.usPerIo;
  const us = (i: number) => fmtNum(median(med(i)));
  return (
    `${path!.path} vs ${base!.path}, QD1: ${roundsText(x)}; floor ${fmtRatio(x.floor.median)} ` +
    `(${base!.path} ${us(0)} us + ${nul!.path} ${us(2)} us, same rounds), ` +
    `${fmtNum(x.gapUs?.median)} us above it` +
    (x.floorSeq && x.sides[3]
      ? `; in sequence (${x.sides[3].path} ${us(3)} us) ${fmtRatio(x.floorSeq.median)}, ` +
        `${fmtAbove(x.gapSeqUs?.median)} that`
      : "") +
    (x.floorInPlace && x.sides[4]
      ? `; in place (${x.sides[4].path} ${us(4)} us) ${fmtRatio(x.floorInPlace.median)}, ` +
        `${fmtAbove(x.gapInPlaceUs?.median)} that`
      : "") +
    dataText(x)
  );
}

function dataText(x: InterleavedResult): string {
  return x.dataMismatch ? `; DATA CHECK FAILED: ${x.dataMismatch}` : "";
}

/** A target read from the rounds: a failed data check leaves the figure standing but never met. */
function fromRounds(t: TargetResult, x: InterleavedResult): TargetResult {
  return x.dataMismatch ? { ...t, met: false } : t;
}

export function checkTargets(
  res: Pick<BenchResult, "rows" | "dispatch" | "rss" | "qtest"> &
    Partial<Pick<BenchResult, "formats" | "ideTest" | "rssQcow2" | "interleaved">>,
): TargetResult[] {
  const il = (id: string) => interleavedFor(res.interleaved, id);
  /** A QD1 target: from its rounds when the run has them, else from the rows. */
  const qd1 = (
    id: string,
    text: string,
    goal: number,
    path: Row | undefined,
    base: Row | undefined,
    how: string,
  ): TargetResult => {
    const x = il(id);
    if (!x) return verdict(id, text, ratioOf(path, base), goal, "x", `${how} (rows measured apart)`);
    return fromRounds(verdict(id, text, x.ratio.median, goal, "x", floorDetail(x)), x);
  };
  const rows = res.rows;
  const w = (
    path: string,
    op: IoOpKind,
    pattern: AccessPattern,
    blockSize: number,
    qd: number,
    cache: CacheState,
  ) => findRow(rows, { path, op, pattern, blockSize, qd, cache });
  const out: TargetResult[] = [];

  const pv4k = w("pv/sync/raw", "read", "rand", 4096, 1, "warm");
  const fs4k = w("fs-sync", "read", "rand", 4096, 1, "warm");
  out.push(
    qd1(
      "pv-4k-random",
      "PV 4 KiB random reads, warm, sync engine: >= 0.9x baseline IOPS",
      0.9,
      pv4k,
      fs4k,
      "pv/sync/raw vs fs-sync, QD1",
    ),
  );
  const pv64 = w("pv/sync/raw", "read", "seq", 65536, 1, "warm");
  const fs64 = w("fs-sync", "read", "seq", 65536, 1, "warm");
  out.push(
    qd1(
      "pv-64k-seq",
      "PV 64 KiB sequential reads, warm, sync engine: >= 0.9x baseline MB/s",
      0.9,
      pv64,
      fs64,
      "pv/sync/raw vs fs-sync, QD1",
    ),
  );
  const dma64 = w("ide-dma/sync/raw", "read", "seq", 65536, 1, "warm");
  out.push(
    qd1(
      "ide-dma-64k",
      "IDE DMA, 64 KiB commands: >= 0.8x baseline MB/s",
      0.8,
      dma64,
      fs64,
      "ide-dma/sync/raw vs fs-sync, sequential reads, QD1",
    ),
  );
  const d = res.dispatch;
  const pioCpu = d?.pioWorkloadExitsPerCpuSec ?? null;
  out.push(
    verdict(
      "ide-pio-exits",
      "IDE PIO: >= 20 million port exits per CPU-second on a real 16-bit PIO READ workload",
      pioCpu ? pioCpu.median : null,
      20e6,
      "/s",
      d
        ? `64 KiB PIO reads by the guest ATA driver, null disk, per second of CPU time` +
            (pioCpu ? ` (${fmtNum(pioCpu.min)}-${fmtNum(pioCpu.max)})` : "") +
            `; status-port loop ${fmtNum(d.ioreqExitsPerCpuSec?.median)}/s of CPU time, ` +
            `bare bus dispatch ${fmtNum(d.bareDispatchPerSec.median)}/s`
        : "dispatch loop",
    ),
  );
  const pvA = w("pv/async/raw", "read", "rand", 4096, 32, "cold");
  const pvS = w("pv/sync/raw", "read", "rand", 4096, 32, "cold");
  const uv = w("fs-libuv", "read", "rand", 4096, 32, "cold");
  const fsCold = w("fs-sync", "read", "rand", 4096, 1, "cold");
  const xa = il("pv-async-vs-sync");
  const asyncText = "PV async engine, O_DIRECT 4 KiB random, QD32: >= 3x the sync engine";
  const libuvText = "PV async engine, O_DIRECT 4 KiB random, QD32: >= 0.8x plain libuv at QD32";
  if (xa && xa.asyncOfLibuv) {
    // The floor: what plain node:fs gains from the same depth on the same file, in the same rounds.
    out.push(
      fromRounds(
        verdict(
          "pv-async-vs-sync",
          asyncText,
          xa.ratio.median,
          3,
          "x",
          `pv/async/raw vs pv/sync/raw, cold, QD32: ${roundsText(xa)}; floor ${fmtRatio(xa.floor.median)} ` +
            `(fs-libuv QD32 vs fs-sync QD1, same rounds, ${rangeText(xa.floor)}); to the floor: PV async ` +
            `${fmtRatio(xa.asyncOfLibuv.median)} libuv QD32, PV sync ${fmtRatio(xa.syncOfReadSync?.median)} readSync QD1`,
        ),
        xa,
      ),
      fromRounds(
        verdict(
          "pv-async-vs-libuv",
          libuvText,
          xa.asyncOfLibuv.median,
          0.8,
          "x",
          `pv/async/raw vs fs-libuv, cold, QD32: ${roundsText(xa, xa.asyncOfLibuv)}`,
        ),
        xa,
      ),
    );
  } else {
    out.push(
      verdict(
        "pv-async-vs-sync",
        asyncText,
        ratioOf(pvA, pvS),
        3,
        "x",
        // The floor: what plain node:fs gains from the same depth on the same file (probes.ts, floor-pv-async).
        "pv/async/raw vs pv/sync/raw, cold" +
          (uv && fsCold
            ? `; floor ${fmtRatio(ratioOf(uv, fsCold))} (fs-libuv QD32 vs fs-sync QD1, cold)`
            : ""),
      ),
      verdict("pv-async-vs-libuv", libuvText, ratioOf(pvA, uv), 0.8, "x", "pv/async/raw vs fs-libuv, cold"),
    );
  }
  const rss = res.rss;
  out.push(
    verdict(
      "pv-stream-rss",
      "Streaming 4 GiB through PV from a sparse image: < 150 MiB RSS",
      rss && rss.status === "ok" ? rss.maxRssMiB : null,
      150,
      " MiB",
      rss
        ? rss.status === "ok"
          ? `${fmtNum(rss.bytesStreamed / 2 ** 30)} GiB in ${rss.seconds.toFixed(1)} s, RSS at start ${rss.startRssMiB.toFixed(0)} MiB`
          : `failed: ${rss.note ?? ""}`
        : "streaming probe",
      true,
    ),
  );
  const rq = res.rssQcow2;
  if (rq !== undefined)
    out.push(
      verdict(
        "pv-stream-rss-qcow2",
        "Streaming 4 GiB through PV from an empty qcow2 image: < 150 MiB RSS",
        rq && rq.status === "ok" ? rq.maxRssMiB : null,
        150,
        " MiB",
        rq
          ? rq.status === "ok"
            ? `${fmtNum(rq.bytesStreamed / 2 ** 30)} GiB in ${rq.seconds.toFixed(1)} s, RSS at start ${rq.startRssMiB.toFixed(0)} MiB`
            : `failed: ${rq.note ?? ""}`
          : "streaming probe (qcow2)",
        true,
      ),
    );
  const q = res.qtest;
  out.push(
    verdict(
      "qtest-vs-qemu",
      "xenide qtest serves the same client >= 5x faster than QEMU",
      q && q.status === "ok" ? q.speedup : null,
      5,
      "x",
      q ? (q.status === "ok" ? q.workload : `${q.status}: ${q.note ?? ""}`) : "qtest client",
    ),
  );
  out.push(...formatTargets(res.formats ?? null));
  out.push(ideTestTarget(res.ideTest ?? null));
  return out;
}

/** xenide's media against `qemu-img bench` (QD32, 4 KiB, O_DIRECT where it applies), and qcow2 against raw. */
function formatTargets(f: FormatsResult | null): TargetResult[] {
  const row = (m: FormatMedium) => f?.rows.find((r) => r.medium === m && r.qd === 32 && r.status === "ok");
  const why = (m: FormatMedium) => {
    if (!f) return "raw/qcow2/NBD comparison not run";
    if (f.status !== "ok") return `${f.status}: ${f.note ?? ""}`;
    const r = f.rows.find((x) => x.medium === m && x.qd === 32);
    return r?.status === "ok" || !r ? "" : `${m}: ${r.status}: ${r.note ?? ""}`;
  };
  const vsQemu = (id: string, m: FormatMedium, what: string): TargetResult => {
    const r = row(m);
    return verdict(
      id,
      `${what}, 4 KiB random reads at QD32, async engine: >= 0.8x qemu-img bench IOPS`,
      r ? r.ratio : null,
      0.8,
      "x",
      r
        ? `${fmtNum(r.xenideRandIops!.median)} IOPS random against \`${r.qemuImg}\` ` +
            `${fmtNum(r.qemuImgIops!.median)} IOPS (sequential: its only pattern); xenide sequential ` +
            `${fmtRatio(r.seqRatio)}`
        : why(m),
    );
  };
  const raw = row("raw");
  const qcow2 = row("qcow2");
  // Measured in alternating rounds when the run has it (a drifting disk weighs on both alike), else the rows.
  const alt = f?.qcow2OfRaw;
  return [
    vsQemu("raw-vs-qemu-img", "raw", "Raw image, O_DIRECT"),
    vsQemu("qcow2-vs-qemu-img", "qcow2", "Fully allocated qcow2, O_DIRECT"),
    verdict(
      "qcow2-vs-raw",
      "Fully allocated qcow2, 4 KiB random reads at QD32: >= 0.9x xenide's raw IOPS",
      alt ? alt.ratio : raw && qcow2 ? qcow2.xenideRandIops!.median / raw.xenideRandIops!.median : null,
      0.9,
      "x",
      alt
        ? `qcow2 ${fmtNum(alt.qcow2.median)} vs raw ${fmtNum(alt.raw.median)} IOPS, the same bytes, async engine, ` +
            `QD32, O_DIRECT, in alternating rounds`
        : raw && qcow2
          ? "qcow2 vs raw, the same bytes, async engine, QD32"
          : why(raw ? "qcow2" : "raw"),
    ),
    vsQemu("nbd-vs-qemu-img", "nbd", "NBD (qemu-nbd on a unix socket)"),
  ];
}

/** QEMU's ide-test: the launcher's wall time against QEMU's, over the cases both passed. */
function ideTestTarget(t: IdeTestResult | null): TargetResult {
  const how = !t
    ? "ide-test comparison not run (full runs, or --ide-test)"
    : t.status !== "ok"
      ? `${t.status}: ${t.note ?? ""}`
      : !t.qemu
        ? `QEMU not measured: ${t.qemuNote ?? ""}`
        : `${t.compared} cases both passed (launcher ${t.launcher.passed}/${t.cases}, QEMU ${t.qemu.passed}/${t.cases}); ` +
          `launcher ${t.launcher.seconds.toFixed(1)} s, QEMU ${t.qemu.seconds.toFixed(1)} s in all`;
  return verdict(
    "ide-test-vs-qemu",
    "QEMU's ide-test against the launcher takes no longer than against QEMU (wall time ratio <= 1)",
    t?.status === "ok" && t.qemu ? t.ratio : null,
    1,
    "x",
    how,
    true,
  );
}
