/**
 * The project's performance targets, checked against one run's figures (all ratios are between rows of the
 * same run, so the machine's load affects both sides alike). A target whose rows did not run is reported as
 * not measured, never as met.
 */
import { fmtNum } from "./format.ts";
import type { BenchResult, CacheState, IoOpKind, AccessPattern, Row, TargetResult } from "./types.ts";

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

export function checkTargets(res: Pick<BenchResult, "rows" | "dispatch" | "rss" | "qtest">): TargetResult[] {
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
    verdict(
      "pv-4k-random",
      "PV 4 KiB random reads, warm, sync engine: >= 0.9x baseline IOPS",
      ratioOf(pv4k, fs4k),
      0.9,
      "x",
      "pv/sync/raw vs fs-sync, QD1",
    ),
  );
  const pv64 = w("pv/sync/raw", "read", "seq", 65536, 1, "warm");
  const fs64 = w("fs-sync", "read", "seq", 65536, 1, "warm");
  out.push(
    verdict(
      "pv-64k-seq",
      "PV 64 KiB sequential reads, warm, sync engine: >= 0.9x baseline MB/s",
      ratioOf(pv64, fs64),
      0.9,
      "x",
      "pv/sync/raw vs fs-sync, QD1",
    ),
  );
  const dma64 = w("ide-dma/sync/raw", "read", "seq", 65536, 1, "warm");
  out.push(
    verdict(
      "ide-dma-64k",
      "IDE DMA, 64 KiB commands: >= 0.8x baseline MB/s",
      ratioOf(dma64, fs64),
      0.8,
      "x",
      "ide-dma/sync/raw vs fs-sync, sequential reads, QD1",
    ),
  );
  const d = res.dispatch;
  out.push(
    verdict(
      "ide-pio-exits",
      "IDE PIO: >= 20 million port exits/s through the full ioreq path",
      d ? d.ioreqExitsPerSec.median : null,
      20e6,
      "/s",
      d
        ? `status-port reads through Vcpu and the ioreq server (${fmtNum(d.ioreqExitsPerCpuSec?.median)}/s of CPU time); ` +
            `bare bus dispatch ${fmtNum(d.bareDispatchPerSec.median)}/s` +
            (d.pioWorkloadExitsPerSec
              ? `, inside a PIO read workload ${fmtNum(d.pioWorkloadExitsPerSec)}/s`
              : "")
        : "dispatch loop",
    ),
  );
  const pvA = w("pv/async/raw", "read", "rand", 4096, 32, "cold");
  const pvS = w("pv/sync/raw", "read", "rand", 4096, 32, "cold");
  const uv = w("fs-libuv", "read", "rand", 4096, 32, "cold");
  out.push(
    verdict(
      "pv-async-vs-sync",
      "PV async engine, O_DIRECT 4 KiB random, QD32: >= 3x the sync engine",
      ratioOf(pvA, pvS),
      3,
      "x",
      "pv/async/raw vs pv/sync/raw, cold",
    ),
  );
  out.push(
    verdict(
      "pv-async-vs-libuv",
      "PV async engine, O_DIRECT 4 KiB random, QD32: >= 0.8x plain libuv at QD32",
      ratioOf(pvA, uv),
      0.8,
      "x",
      "pv/async/raw vs fs-libuv, cold",
    ),
  );
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
  return out;
}
