/**
 * `xenide report`: the bench JSON turned into a page (report/index.html) and its Markdown twin
 * (report/index.md), with charts as SVG files made by vega-lite. The page opens with the four questions of
 * the thread that started the project, each answered with this run's numbers and one chart.
 */
import fs from "node:fs";
import path from "node:path";

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
} from "../bench/compare.ts";
import { firstPassText, fmtNum, fmtRatio, fmtSize } from "../bench/format.ts";
import { findRow } from "../bench/targets.ts";
import { machineLine, ROW_HEADER, rowCells } from "../bench/table.ts";
import {
  BENCH_SCHEMA,
  type AccessPattern,
  type BenchResult,
  type CacheState,
  type IoOpKind,
  type Row,
} from "../bench/types.ts";
import { barChart, type ChartSpec, type Datum, lineChart, PAGE_WIDTH, renderSvg } from "./charts.ts";
import type { GuestFigures } from "./guests.ts";

/** One block of the report: a heading, paragraphs (may hold inline Markdown: `code`, **bold**), a chart. */
export interface Section {
  id: string;
  heading: string;
  paragraphs: string[];
  chart: ChartSpec | null;
  /** A table under the text: header and rows. */
  table?: { header: string[]; rows: string[][] };
}

export class ReportInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReportInputError";
  }
}

/** Parse and sanity-check a bench JSON document. */
export function parseBench(text: string): BenchResult {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ReportInputError(`not JSON: ${(e as Error).message}`);
  }
  const d = doc as Partial<BenchResult>;
  if (!d || typeof d !== "object" || d.schema !== BENCH_SCHEMA) {
    throw new ReportInputError(`not a bench result (schema must be "${BENCH_SCHEMA}")`);
  }
  for (const k of ["rows", "targets", "costs", "checks"] as const) {
    if (!Array.isArray(d[k])) throw new ReportInputError(`bench result has no "${k}" list`);
  }
  if (!d.machine || typeof d.machine !== "object")
    throw new ReportInputError(`bench result has no "machine"`);
  // The fields the report reads, each of the kind it reads them as: a result cut short or edited by hand is
  // refused here with what is wrong, not half-rendered.
  const want = (ok: boolean, what: string) => {
    if (!ok) throw new ReportInputError(`bench result: ${what}`);
  };
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;
  const num = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  want(
    typeof d.startedAt === "string" && typeof d.finishedAt === "string",
    `"startedAt"/"finishedAt" are not times`,
  );
  want(typeof d.machine.cpu === "string" && num(d.machine.cores), `"machine" lacks its cpu or cores`);
  want(isObj(d.image) && num(d.image.bytes), `"image" lacks its size`);
  want(
    isObj(d.settings) && num(d.settings.repeats) && num(d.settings.budgetMs),
    `"settings" lacks repeats or budgetMs`,
  );
  d.rows!.forEach((r: unknown, i) => {
    const row = r as Record<string, unknown>;
    want(
      isObj(r) &&
        ["path", "op", "pattern", "cache", "status"].every((k) => typeof row[k] === "string") &&
        num(row.blockSize) &&
        num(row.qd) &&
        isObj(row.iops) &&
        isObj(row.mbps),
      `row ${i} is not a measured cell`,
    );
  });
  for (const k of ["targets", "costs", "checks"] as const)
    d[k]!.forEach((e: unknown, i: number) => want(isObj(e), `"${k}" entry ${i} is not an object`));
  for (const k of ["dispatch", "rss", "rssQcow2", "qtest"] as const)
    want(d[k] === undefined || d[k] === null || isObj(d[k]), `"${k}" is neither null nor an object`);
  // The comparisons are absent in older results; present, they hold what their sections read.
  const status = (v: Record<string, unknown>) => ["ok", "unavailable", "error"].includes(v.status as string);
  const f: unknown = d.formats;
  if (f !== undefined && f !== null) {
    want(isObj(f) && status(f) && Array.isArray(f.rows), `"formats" lacks its status or rows`);
    (f as { rows: unknown[] }).rows.forEach((r, i) =>
      want(
        isObj(r) && typeof r.medium === "string" && num(r.qd) && typeof r.status === "string",
        `"formats" row ${i} is not a measured medium`,
      ),
    );
  }
  const t: unknown = d.ideTest;
  if (t !== undefined && t !== null) {
    want(
      isObj(t) && status(t) && num(t.cases) && isObj(t.launcher) && Array.isArray(t.launcher.cases),
      `"ideTest" lacks its status, case count or launcher cases`,
    );
    const it = t as { launcher: { cases: unknown[] }; qemu: unknown };
    const q = it.qemu;
    want(q === null || (isObj(q) && Array.isArray(q.cases)), `"ideTest.qemu" is neither null nor cases`);
    const qCases = q === null ? [] : (q as { cases: unknown[] }).cases;
    for (const c of [...it.launcher.cases, ...qCases])
      want(
        isObj(c) && typeof c.name === "string" && typeof c.ok === "boolean" && num(c.seconds),
        `"ideTest" has a case that is not a result`,
      );
  }
  const c: unknown = d.cd;
  if (c !== undefined && c !== null) {
    want(isObj(c) && status(c) && Array.isArray(c.rows), `"cd" lacks its status or rows`);
    (c as { rows: unknown[] }).rows.forEach((r, i) =>
      want(
        isObj(r) && typeof r.device === "string" && num(r.exitsPerMiB),
        `"cd" row ${i} is not a measured read`,
      ),
    );
  }
  const il: unknown = d.interleaved;
  if (il !== undefined && il !== null) {
    want(Array.isArray(il), `"interleaved" is not a list`);
    // A figure of rounds that measured nothing is NaN in the run, null in its JSON.
    const spreadOk = (v: unknown) =>
      isObj(v) && ["median", "min", "max"].every((k) => v[k] === null || typeof v[k] === "number");
    (il as unknown[]).forEach((x, i) =>
      want(
        isObj(x) &&
          typeof x.id === "string" &&
          num(x.rounds) &&
          num(x.sliceMs) &&
          num(x.seconds) &&
          spreadOk(x.ratio) &&
          spreadOk(x.floor) &&
          Array.isArray(x.sides) &&
          x.sides.every((s: unknown) => isObj(s) && typeof s.path === "string" && Array.isArray(s.usPerIo)),
        `"interleaved" entry ${i} is not a measured target`,
      ),
    );
  }
  return d as BenchResult;
}

type Pick = (
  path: string,
  op: IoOpKind,
  pattern: AccessPattern,
  blockSize: number,
  qd: number,
  cache: CacheState,
) => Row | undefined;

const us = (r: Row | undefined) => (r ? 1e6 / r.iops.median : NaN);
const iops = (r: Row | undefined) => (r ? r.iops.median : NaN);
const ratio = (a: Row | undefined, b: Row | undefined) => (a && b ? a.iops.median / b.iops.median : NaN);
const na = "not measured in this run";

/** A count that is close to whole printed whole ("32", not "32.0"); otherwise with one decimal. */
export function fmtCount(x: number): string {
  if (!Number.isFinite(x)) return "-";
  const r = Math.round(x);
  return Math.abs(x - r) < 0.05 ? r.toLocaleString("en-US") : x.toFixed(1);
}

/** Bytes in the largest binary unit that keeps at least 1: "128 KiB", "1.5 MiB". */
export function fmtBytes(b: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB"];
  let i = 0;
  while (i < units.length - 1 && b >= 1024) {
    b /= 1024;
    i++;
  }
  return `${fmtCount(b)} ${units[i]}`;
}

function q1(res: BenchResult, pick: Pick): Section {
  const c = (e: string, qd: number, cache: CacheState) =>
    pick(`pv/${e}/raw`, "read", "rand", 4096, qd, cache);
  const cells = [
    ["dom0 sync, guest QD1", "sync", 1],
    ["dom0 sync, guest QD32", "sync", 32],
    ["dom0 AIO, guest QD1", "async", 1],
    ["dom0 AIO, guest QD32", "async", 32],
  ] as const;
  const data: Datum[] = [];
  for (const [label, e, qd] of cells)
    for (const cache of ["cold", "warm"] as const) {
      const r = c(e, qd, cache);
      if (r)
        data.push({
          config: label,
          cache: cache === "cold" ? "cold (O_DIRECT)" : "warm page cache",
          iops: r.iops.median,
        });
    }
  const paragraphs: string[] = [];
  const s1 = c("sync", 1, "cold");
  const s32 = c("sync", 32, "cold");
  const a1 = c("async", 1, "cold");
  const a32 = c("async", 32, "cold");
  const uv = pick("fs-libuv", "read", "rand", 4096, 32, "cold");
  const cold = [
    ["guest QD1 on the sync engine", s1],
    ["guest QD32 on the sync engine", s32],
    ["guest QD1 on the async engine", a1],
    ["guest QD32 on the async engine", a32],
  ] as const;
  const missing = cold.filter(([, r]) => !r).map(([what]) => what);
  if (s1) {
    const g = (r: Row | undefined) => ratio(r, s1);
    // A figure with its ratio to the QD1 sync cell, or exactly what is missing.
    const fig = (r: Row | undefined) => (r ? `${fmtNum(iops(r))} IOPS (${fmtRatio(g(r))})` : na);
    let lead: string;
    if (missing.length > 0) lead = `**No verdict: ${missing.join(", ")}: ${na}.**`;
    else {
      const alone = Math.max(g(s32), g(a1), 1);
      lead =
        g(a32) >= 1.5 * alone
          ? "**Both: only the combination pays.**"
          : alone >= 1.5
            ? `**${g(s32) >= g(a1) ? "A deep guest queue" : "AIO in dom0"} alone is enough here.**`
            : "**Neither pays on this disk in this run.**";
    }
    paragraphs.push(
      `${lead} Cold 4 KiB random reads through PV (O_DIRECT, the disk's own latency exposed): guest QD1 with a ` +
        `synchronous dom0 backend, ${fmtNum(iops(s1))} IOPS. A guest keeping 32 requests in the ring while dom0 ` +
        `performs them one after the other: ${fig(s32)}. dom0 AIO with a guest that waits for each request: ` +
        `${fig(a1)}. Both: ${fig(a32)}` +
        (uv ? `, against ${fmtNum(iops(uv))} IOPS for plain libuv at the same depth on the host.` : "."),
    );
  } else
    paragraphs.push(
      `Cold (O_DIRECT) PV 4 KiB random reads, ${missing.join(", ")}: ${na}; question 1 has no answer from ` +
        `this run.`,
    );
  const ws = c("sync", 32, "warm");
  const wa = c("async", 32, "warm");
  if (ws && wa) {
    paragraphs.push(
      `On a warm page cache, at QD32, the synchronous backend does ${fmtNum(iops(ws))} IOPS and the ` +
        `asynchronous one ${fmtNum(iops(wa))}` +
        (iops(wa) < iops(ws)
          ? `: a cached read costs a few microseconds in the kernel, less than a hop through the thread pool, ` +
            `so AIO in dom0 is for disks that actually wait.`
          : "."),
    );
  }
  return {
    id: "q1",
    heading: "1. Should AIO be done in dom0, in the guest, or both?",
    paragraphs,
    chart: data.length
      ? barChart({
          name: "q1-aio-where",
          title: "PV, 4 KiB random reads: where the asynchrony is",
          data,
          x: "config",
          xTitle: null,
          y: "iops",
          yTitle: "IOPS (median)",
          color: "cache",
          colorTitle: "cache state",
        })
      : null,
  };
}

function q2(res: BenchResult, pick: Pick): Section {
  const data: Datum[] = [];
  const entries = [
    ["node:fs (QD1)", "fs-sync"],
    ["PV, dom0 sync", "pv/sync/raw"],
    ["PV, dom0 AIO", "pv/async/raw"],
    ["PV null disk, sync", "pv/sync/null"],
    ["PV null disk, AIO", "pv/async/null"],
  ] as const;
  for (const [label, p] of entries)
    for (const cache of ["warm", "cold"] as const) {
      const r = pick(p, "read", "rand", 4096, 1, cache);
      if (r)
        data.push({
          path: label,
          cache: cache === "cold" ? "cold (O_DIRECT)" : "warm",
          us: 1e6 / r.iops.median,
        });
    }
  const paragraphs: string[] = [];
  const a1c = pick("pv/async/raw", "read", "rand", 4096, 1, "cold");
  const s1c = pick("pv/sync/raw", "read", "rand", 4096, 1, "cold");
  const n1 = pick("pv/async/null", "read", "rand", 4096, 1, "warm");
  const fsC = pick("fs-sync", "read", "rand", 4096, 1, "cold");
  paragraphs.push(
    `**dom0 waits for the data.** blkback writes a response, and raises the event channel, only from the ` +
      `storage completion, after the data is in the guest's granted pages; it never answers at queue time. ` +
      `Were it otherwise, a read would complete with stale pages: every PV path passed the data check ` +
      `(write, read back, compare) before it was measured, with the asynchronous engine too` +
      `${res.checks.some((c) => c.path.startsWith("pv") && !c.ok) ? " — except the failures listed under the table" : ""}.`,
  );
  if (a1c && s1c) {
    paragraphs.push(
      `So a guest with one request outstanding pays the whole storage latency either way: cold, ` +
        `${us(s1c).toFixed(1)} µs per read with the synchronous backend and ${us(a1c).toFixed(1)} µs with AIO` +
        (fsC ? ` (the host's own O_DIRECT read: ${us(fsC).toFixed(1)} µs)` : "") +
        `. ` +
        (n1
          ? `The protocol alone (null disk) costs ${us(n1).toFixed(1)} µs per request, which is what an ` +
            `early notification would have shown. `
          : "") +
        `Nothing becomes synchronous by itself: concurrency comes from the guest keeping several requests in ` +
        `the ring (question 1); each request still completes only when its data is there.`,
    );
  }
  const pv = pick("pv/sync/raw", "read", "rand", 4096, 1, "warm");
  if (pv) {
    const dma = pick("ide-dma/sync/raw", "read", "rand", 4096, 1, "warm");
    paragraphs.push(
      `Per request at QD1: ${fmtNum(pv.notifyPerIo)} event-channel notifications (the frontend's kick and the ` +
        `backend's response) and ${fmtNum(pv.exitsPerIo)} exits (hypercalls)` +
        (dma
          ? `, against ${fmtNum(dma.exitsPerIo)} port exits and ${fmtNum(dma.irqPerIo)} interrupts per I/O for ` +
            `the same read through IDE DMA.`
          : `; the same read through IDE DMA: ${na}.`),
    );
  }
  return {
    id: "q2",
    heading: "2. Does dom0 wait for the AIO data before notifying the guest?",
    paragraphs,
    chart: data.length
      ? barChart({
          name: "q2-latency-qd1",
          title: "Time per 4 KiB random read at queue depth 1",
          data,
          x: "path",
          xTitle: null,
          y: "us",
          yTitle: "µs per I/O (median)",
          color: "cache",
        })
      : null,
  };
}

function q3(res: BenchResult, pick: Pick): Section {
  const data: Datum[] = [];
  const paragraphs: string[] = [];
  for (const e of ["sync", "async"] as const)
    for (const op of ["read", "write"] as const)
      for (const pattern of ["seq", "rand"] as const)
        for (const v of ["pv", "pv-merge"] as const) {
          const r = pick(`${v}/${e}/raw`, op, pattern, 4096, 32, "warm");
          if (r && r.storagePerIo !== null)
            data.push({
              // The engine on its own label line, so sync and async cells can always be told apart.
              workload: `${op} ${pattern}, ${e} engine`,
              merging: v === "pv" ? "merging off" : "merging on",
              storage: r.storagePerIo,
              mbps: r.mbps.median,
            });
        }
  paragraphs.push(
    `The hypervisor decides what the host's I/O scheduler gets to see. An HVM guest's emulated IDE channel ` +
      `carries one command at a time, so however deep the guest's own queue, dom0 receives one request, waits ` +
      `for it, then the next: the host elevator never has two requests from that disk to sort or merge. A PV ` +
      `guest hands dom0 up to a ring's worth (32 slots per ring page) at once, and the backend may merge ` +
      `adjacent ones before the host sees them.`,
  );
  const off = pick("pv/async/raw", "read", "seq", 4096, 32, "warm");
  const on = pick("pv-merge/async/raw", "read", "seq", 4096, 32, "warm");
  if (off && on && off.storagePerIo !== null && on.storagePerIo !== null) {
    // 1 / (host requests per guest request) = guest requests per host request; each is one 4 KiB block.
    const perHost = 1 / on.storagePerIo;
    const bytes = perHost * on.blockSize;
    const randOn = pick("pv-merge/async/raw", "read", "rand", 4096, 32, "warm");
    paragraphs.push(
      `Sequential 4 KiB reads at QD32 with the asynchronous backend: without merging every guest request is ` +
        `one host request (${fmtNum(off.storagePerIo)} host requests per guest I/O, ${fmtNum(off.mbps.median)} ` +
        `MB/s); with merging the host sees ${fmtNum(on.storagePerIo)} requests per guest I/O, i.e. one host ` +
        `request for every ${fmtCount(perHost)} guest requests (${fmtCount(bytes / 512)} sectors, ` +
        `${fmtBytes(bytes)}), and ${fmtNum(on.mbps.median)} MB/s (${fmtRatio(ratio(on, off))}). ` +
        (randOn && randOn.storagePerIo !== null
          ? `Random requests are not adjacent and hardly merge: ${fmtNum(randOn.storagePerIo)} host requests ` +
            `per guest I/O with merging on.`
          : `Random reads with merging on: ${na}.`),
    );
  } else paragraphs.push(`Sequential 4 KiB reads at QD32 on the async engine, merging on and off: ${na}.`);
  return {
    id: "q3",
    heading: "3. Does the hypervisor change how the I/O scheduler behaves?",
    paragraphs,
    chart: data.length
      ? barChart({
          name: "q3-merging",
          title: "Host storage requests per guest I/O (PV, 4 KiB, QD32)",
          data,
          x: "workload",
          xTitle: null,
          y: "storage",
          yTitle: "storage requests per guest I/O",
          color: "merging",
        })
      : null,
  };
}

function q4(res: BenchResult, pick: Pick): Section {
  const data: Datum[] = [];
  const pairs = [
    ["HVM: IDE DMA, QD1", "ide-dma", 1],
    ["PV, QD1", "pv", 1],
    ["PV, QD32", "pv", 32],
  ] as const;
  const found: Record<string, number> = {};
  for (const [label, v, qd] of pairs)
    for (const cache of ["warm", "cold"] as const) {
      const s = pick(`${v}/sync/raw`, "read", "rand", 4096, qd, cache);
      const a = pick(`${v}/async/raw`, "read", "rand", 4096, qd, cache);
      if (s && a) {
        const x = a.iops.median / s.iops.median;
        found[`${label}|${cache}`] = x;
        data.push({ path: label, cache: cache === "cold" ? "cold (O_DIRECT)" : "warm", speedup: x });
      }
    }
  const paragraphs: string[] = [];
  // The ratios measured for one path, cold and warm, naming any that this run did not measure.
  const both = (label: string) => {
    const got = (["cold", "warm"] as const).filter((c) => found[`${label}|${c}`] !== undefined);
    const miss = (["cold", "warm"] as const).filter((c) => found[`${label}|${c}`] === undefined);
    if (got.length === 0) return na;
    return (
      got.map((c) => `${fmtRatio(found[`${label}|${c}`])} ${c}`).join(" and ") +
      (miss.length ? ` (${miss.join(" and ")}: ${na})` : "")
    );
  };
  const hvm = found["HVM: IDE DMA, QD1|cold"];
  const pv32 = found["PV, QD32|cold"];
  if (Object.keys(found).length === 0) {
    paragraphs.push(`IDE DMA and PV 4 KiB random reads with both engines (sync and async): ${na}.`);
  } else {
    let lead: string;
    if (hvm !== undefined && pv32 !== undefined)
      lead =
        pv32 >= 1.5 && pv32 >= 1.5 * hvm
          ? "**Yes: only PV gives dom0 something to overlap.**"
          : `**Not in this run: cold, async over sync is ${fmtRatio(pv32)} for PV at QD32 and ${fmtRatio(hvm)} ` +
            `for HVM.**`;
    else {
      // Say exactly which cells the verdict lacks.
      const lacking = [
        ["cold IDE DMA reads at QD1", "ide-dma", 1],
        ["cold PV reads at QD32", "pv", 32],
      ] as const;
      const parts: string[] = [];
      for (const [what, v, qd] of lacking) {
        const engines = (["sync", "async"] as const).filter(
          (e) => !pick(`${v}/${e}/raw`, "read", "rand", 4096, qd, "cold"),
        );
        if (engines.length)
          parts.push(`${what} on the ${engines.join(" and ")} engine${engines.length > 1 ? "s" : ""}`);
      }
      lead = `**No verdict: ${parts.join(" and ")}: ${na}.**`;
    }
    paragraphs.push(
      `${lead} The HVM guest's IDE channel has one command in flight, so an asynchronous device model can only ` +
        `move the same wait elsewhere: IDE DMA, 4 KiB random reads, async over sync: ${both("HVM: IDE DMA, QD1")}. ` +
        `A PV guest at QD32 lets the backend keep many reads at the disk: ${both("PV, QD32")}. At QD1 PV is in ` +
        `HVM's position: ${both("PV, QD1")}.`,
    );
  }
  return {
    id: "q4",
    heading: "4. Does AIO help PV and HVM guests differently?",
    paragraphs,
    chart: data.length
      ? barChart({
          name: "q4-aio-pv-hvm",
          title: "Async engine over sync engine, 4 KiB random reads",
          data,
          x: "path",
          xTitle: null,
          y: "speedup",
          yTitle: "IOPS async / IOPS sync",
          color: "cache",
        })
      : null,
  };
}

function qdSection(res: BenchResult): Section {
  const data: Datum[] = [];
  for (const r of res.rows) {
    if (r.status !== "ok" || r.op !== "read" || r.pattern !== "rand" || r.blockSize !== 4096) continue;
    if (r.backend !== "raw" || !(r.variant === "pv" || r.variant === "dma" || r.family === "baseline"))
      continue;
    data.push({
      path: r.path,
      cache: r.cache === "cold" ? "cold (O_DIRECT)" : "warm",
      qd: r.qd,
      iops: r.iops.median,
    });
  }
  return {
    id: "qd",
    heading: "Throughput against queue depth",
    paragraphs: [
      `4 KiB random reads, every depth each path can keep (IDE: one command per channel; PV: up to the ring's ` +
        `slots; node:fs through ${res.machine.uvIoUring ? "io_uring" : `libuv's pool of ${res.machine.uvThreadpool} threads`}). ` +
        `Warm page cache: solid ` +
        `lines, round points; cold (O_DIRECT): dashed lines, square points.`,
    ],
    chart: data.length
      ? lineChart({
          name: "qd-throughput",
          title: "4 KiB random reads: IOPS against queue depth",
          data,
          x: "qd",
          xTitle: "queue depth",
          y: "iops",
          yTitle: "IOPS (median)",
          color: "path",
          dash: "cache",
          dashOrder: ["warm", "cold (O_DIRECT)"],
          logX: true,
          logY: true,
        })
      : null,
  };
}

function exitsSection(res: BenchResult): Section {
  const data: Datum[] = [];
  const seen = new Set<string>();
  for (const r of res.rows) {
    if (r.status !== "ok" || r.family === "baseline" || r.op !== "read" || r.qd !== 1 || r.cache !== "warm")
      continue;
    if (r.engine !== "sync" || r.backend !== "raw") continue;
    const k = `${r.variant}|${r.blockSize}`;
    if (seen.has(k)) continue;
    seen.add(k);
    data.push({
      path: r.label.replace(/, sync$/, ""),
      block: fmtSize(r.blockSize),
      exitsPerMiB: r.exitsPerMiB,
    });
  }
  const readQd1 = (r: Row) => r.status === "ok" && r.op === "read" && r.qd === 1;
  const pio = res.rows.find((r) => readQd1(r) && r.variant === "pio16" && r.blockSize === 4096);
  const dmaRows = res.rows.filter((r) => readQd1(r) && r.variant === "dma");
  const dma = dmaRows.find((r) => r.blockSize === 4096);
  const pv = res.rows.find((r) => readQd1(r) && r.variant === "pv" && r.blockSize === 4096);
  const clauses: string[] = [];
  if (pio) clauses.push(`16-bit PIO needs ${fmtNum(pio.exitsPerIo)} exits for a 4 KiB read`);
  if (dma) {
    const sizes = [...new Set(dmaRows.map((r) => r.blockSize))];
    const same = dmaRows.every((r) => r.exitsPerIo === dma.exitsPerIo);
    clauses.push(
      `Bus Master DMA ${fmtNum(dma.exitsPerIo)}` +
        (sizes.length > 1 && same ? ` at every block size measured (${sizes.map(fmtSize).join(", ")})` : ""),
    );
  }
  if (pv) clauses.push(`the PV ring ${fmtNum(pv.exitsPerIo)} (hypercalls: event-channel sends)`);
  const paragraphs = [
    `Exits per MiB moved, reads at QD1 (log scale). Every port access of an HVM guest is an exit` +
      (clauses.length ? `: ${clauses.join(", ")}.` : "."),
  ];
  return {
    id: "exits",
    heading: "Exits per MiB per path",
    paragraphs,
    chart: data.length
      ? barChart({
          name: "exits-per-mib",
          title: "Exits per MiB (reads, QD1, log scale)",
          data,
          x: "path",
          xTitle: null,
          y: "exitsPerMiB",
          yTitle: "exits per MiB",
          color: "block",
          colorTitle: "block size",
          log: true,
        })
      : null,
  };
}

function syncAsyncSection(res: BenchResult): Section {
  const data: Datum[] = [];
  for (const r of res.rows) {
    if (
      r.status !== "ok" ||
      r.engine === null ||
      r.backend !== "raw" ||
      r.op !== "read" ||
      r.blockSize !== 4096
    )
      continue;
    if (r.pattern !== "rand" || !(r.qd === 1 || r.qd === 32)) continue;
    data.push({
      path: `${r.label.replace(/, (sync|async)$/, "")}, QD${r.qd} ${r.cache}`,
      engine: r.engine,
      iops: r.iops.median,
    });
  }
  return {
    id: "sync-async",
    heading: "Sync against async storage engine",
    paragraphs: [
      `The same device models over the synchronous engine (each request performed inside the exit or ring ` +
        `kick that submits it) and the asynchronous one (libuv's thread pool, completions from the event loop).`,
    ],
    chart: data.length
      ? barChart({
          name: "sync-vs-async",
          title: "4 KiB random reads: sync vs async engine",
          data,
          x: "path",
          xTitle: null,
          y: "iops",
          yTitle: "IOPS (median)",
          color: "engine",
        })
      : null,
  };
}

function pvVariantsSection(res: BenchResult): Section {
  const data: Datum[] = [];
  const variants = ["pv", "pv-ring16", "pv-noindirect", "pv-nopersistent"];
  for (const r of res.rows) {
    if (r.status !== "ok" || !variants.includes(r.variant) || r.backend !== "raw" || r.cache !== "warm")
      continue;
    if (r.op !== "read" || r.qd !== 32) continue;
    if (!((r.pattern === "rand" && r.blockSize === 4096) || (r.pattern === "seq" && r.blockSize >= 65536)))
      continue;
    data.push({
      workload: `${r.op} ${r.pattern} ${fmtSize(r.blockSize)}, ${r.engine} engine`,
      variant: r.label.replace(/, (sync|async)$/, ""),
      mbps: r.mbps.median,
    });
  }
  const ind = res.rows.find(
    (r) => r.variant === "pv-noindirect" && r.blockSize === 1048576 && r.op === "read" && r.status === "ok",
  );
  const on =
    ind &&
    findRow(res.rows, {
      path: ind.path.replace("pv-noindirect", "pv"),
      op: ind.op,
      pattern: ind.pattern,
      blockSize: ind.blockSize,
      qd: ind.qd,
      cache: ind.cache,
    });
  const paragraphs = [
    `Ring pages (1 page = 32 slots, 16 pages = 512), indirect descriptors (without them a request carries at ` +
      `most 11 pages, 44 KiB) and persistent grants (pages granted once and reused, against a grant map and ` +
      `unmap per request).`,
  ];
  if (ind && on) {
    paragraphs.push(
      `1 MiB reads without indirect descriptors become ${fmtNum(ind.storagePerIo)} storage requests each ` +
        `(${fmtNum(ind.mbps.median)} MB/s) against ${fmtNum(on.storagePerIo)} with them (${fmtNum(on.mbps.median)} MB/s).`,
    );
  }
  return {
    id: "pv-variants",
    heading: "PV ring size, indirect descriptors and persistent grants",
    paragraphs,
    chart: data.length
      ? barChart({
          name: "pv-variants",
          title: "PV variants: MB/s at QD32",
          data,
          x: "workload",
          xTitle: null,
          y: "mbps",
          yTitle: "MB/s (median)",
          color: "variant",
        })
      : null,
  };
}

function extrasSection(res: BenchResult): Section {
  const p: string[] = [];
  const d = res.dispatch;
  if (d) {
    p.push(
      `Port exits: ${fmtNum(d.ioreqExitsPerSec.median)}/s through the whole ioreq path (vCPU, ioreq slot, ioreq ` +
        `server, port bus, IDE device, response; ${fmtNum(d.ioreqExitsPerCpuSec?.median)}/s of the process's CPU ` +
        `time), against ${fmtNum(d.bareDispatchPerSec.median)}/s for the same ` +
        `reads straight on the port bus` +
        (d.pioWorkloadExitsPerSec
          ? `; inside a 16-bit PIO read workload, ${fmtNum(d.pioWorkloadExitsPerSec)}/s.`
          : "."),
    );
  }
  for (const r of [res.rss, res.rssQcow2]) {
    if (!r) continue;
    const what = r.format === "qcow2" ? "an empty qcow2 image" : "a sparse image";
    p.push(
      r.status === "ok"
        ? `Streaming ${fmtNum(r.bytesStreamed / 2 ** 30)} GiB through PV from ${what}: peak RSS ` +
            `${r.maxRssMiB.toFixed(0)} MiB (${r.startRssMiB.toFixed(0)} MiB before streaming), ` +
            `${fmtNum(r.bytesStreamed / r.seconds / 1e6)} MB/s.`
        : `Streaming probe (${r.format ?? "raw"}): ${r.status}${r.note ? `: ${r.note}` : ""}.`,
    );
  }
  if (res.qtest) {
    const q = res.qtest;
    p.push(
      q.status === "ok"
        ? `qtest, ${q.workload}: xenide ${q.xenideSeconds!.median.toFixed(3)} s, ${q.qemuVersion} ` +
            `${q.qemuSeconds!.median.toFixed(3)} s (${fmtRatio(q.speedup)})${firstPassText(q)}.`
        : `qtest comparison: ${q.status}${q.note ? `: ${q.note}` : ""}.`,
    );
  }
  return { id: "extras", heading: "Port exits, memory, qtest", paragraphs: p, chart: null };
}

/**
 * The speed targets in interleaved rounds, the comparisons with QEMU's own programs and the CD-ROM rows, one
 * section each, present only when the run measured them (older results and runs that left them out have none).
 */
function comparisonSections(res: BenchResult): Section[] {
  const out: Section[] = [];
  const section = (id: string, heading: string, line: string, t: Table | null): Section => ({
    id,
    heading,
    paragraphs: [line],
    chart: null,
    ...(t && t.rows.length ? { table: { header: t.header, rows: t.rows } } : {}),
  });
  if (res.interleaved && res.interleaved.length > 0) {
    out.push(
      section(
        "interleaved",
        "The speed targets in interleaved rounds, with their floors",
        interleavedLine(res.interleaved),
        interleavedTable(res.interleaved),
      ),
    );
  }
  if (res.formats) {
    out.push(
      section(
        "formats",
        "raw, qcow2 and NBD against qemu-img bench",
        formatsLine(res.formats),
        formatsTable(res.formats),
      ),
    );
  }
  if (res.ideTest) {
    out.push(
      section(
        "ide-test",
        "QEMU's ide-test: the launcher against QEMU",
        ideTestLine(res.ideTest),
        ideTestTable(res.ideTest),
      ),
    );
  }
  if (res.cd) out.push(section("cd", "CD-ROM reads by PIO and DMA", cdLine(res.cd), cdTable(res.cd)));
  return out;
}

function targetsSection(res: BenchResult): Section {
  return {
    id: "targets",
    heading: "Targets",
    paragraphs: [
      `Checked by the benchmark against this run's figures; ratios are between rows of the same run.`,
    ],
    chart: null,
    table: {
      header: ["target", "measured", "needed", "met", "how"],
      rows: res.targets.map((t) => [
        t.text,
        t.measured === null ? "-" : `${fmtNum(t.measured)}${t.unit}`,
        `${fmtNum(t.threshold)}${t.unit}`,
        t.met === null ? "not measured" : t.met ? "yes" : "no",
        t.detail,
      ]),
    },
  };
}

function guestSections(g: GuestFigures | undefined): Section[] {
  if (!g || (g.phases.length === 0 && !g.v86)) {
    return [
      {
        id: "guests",
        heading: "Real guests",
        paragraphs: [`Real-guest exit counts and the v86 comparison: not present (no guest runs found).`],
        chart: null,
      },
    ];
  }
  const out: Section[] = [];
  if (g.phases.length) {
    const data: Datum[] = g.phases
      .filter((p) => p.exitsPerMiB !== null && p.bytes > 0)
      .map((p) => ({ run: `${p.run}, ${p.phase}`, what: "exits per MiB", value: p.exitsPerMiB }));
    out.push({
      id: "guests",
      heading: "Real guests: exits counted while firmware and Linux use the disk",
      paragraphs: [
        `SeaBIOS and Linux booted on the emulated PIIX IDE controller; every port access of their own drivers ` +
          `counted by phase (${g.sources.filter((s) => !s.endsWith("v86-ide.json")).length} runs).`,
      ],
      chart: data.length
        ? barChart({
            name: "guest-exits-per-mib",
            title: "Real guests: exits per MiB moved (log scale)",
            data,
            x: "run",
            xTitle: null,
            y: "value",
            yTitle: "exits per MiB",
            color: "what",
            colorTitle: " ",
            log: true,
          })
        : null,
      table: {
        header: ["run", "phase", "commands", "exits", "exits/command", "exits/MiB", "Mcycles/MiB"],
        rows: g.phases.map((p) => [
          p.run,
          p.phase,
          String(p.commands),
          String(p.exits),
          fmtNum(p.exitsPerCommand),
          p.bytes > 0 ? fmtNum(p.exitsPerMiB) : "-",
          p.bytes > 0 && p.cyclesPerMiB !== null ? fmtNum(p.cyclesPerMiB / 1e6) : "-",
        ]),
      },
    });
  }
  if (g.v86) {
    const data: Datum[] = [];
    for (const r of g.v86.rows) {
      data.push({ run: `${r.mode.toUpperCase()} read`, controller: r.controller, mbps: r.readMBps });
      data.push({ run: `${r.mode.toUpperCase()} write`, controller: r.controller, mbps: r.writeMBps });
    }
    out.push({
      id: "v86",
      heading: "v86's IDE controller against xenide's, same Linux guest",
      paragraphs: [
        `The same Linux guest in v86 writing then reading ${g.v86.mib} MiB with direct I/O, once on v86's own IDE ` +
          `controller and once on xenide's (both disks in memory, so this compares controllers).`,
      ],
      chart: barChart({
        name: "v86-vs-xenide",
        title: "Linux in v86: MB/s through each IDE controller",
        data,
        x: "run",
        xTitle: null,
        y: "mbps",
        yTitle: "MB/s (guest wall time)",
        color: "controller",
      }),
      table: {
        header: ["controller", "mode", "read MB/s", "write MB/s"],
        rows: g.v86.rows.map((r) => [r.controller, r.mode, fmtNum(r.readMBps), fmtNum(r.writeMBps)]),
      },
    });
  }
  return out;
}

/** Every section of the report, in order. */
export function buildSections(res: BenchResult, guests?: GuestFigures): Section[] {
  const pick: Pick = (p, op, pattern, blockSize, qd, cache) =>
    findRow(res.rows, { path: p, op, pattern, blockSize, qd, cache });
  return [
    q1(res, pick),
    q2(res, pick),
    q3(res, pick),
    q4(res, pick),
    targetsSection(res),
    qdSection(res),
    exitsSection(res),
    syncAsyncSection(res),
    pvVariantsSection(res),
    extrasSection(res),
    ...comparisonSections(res),
    ...guestSections(guests),
  ];
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** The little inline Markdown the paragraphs use, as HTML. */
function inline(s: string): string {
  return esc(s)
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/`([^`]+)`/g, "<code>$1</code>");
}

/**
 * A cell that is a number, possibly with a unit or suffix ("1.23k", "0.57x", "150 MiB", "14.7M/s", "±5%",
 * "4K"); such columns are right-aligned, every other column (prose, names) left-aligned.
 */
const NUMERIC_CELL = /^[-+±~≈]?\d[\d,.]*(?:e[-+]?\d+)?(?: ?[A-Za-zµ%]{1,3}(?:\/s)?)?$/;
/** A cell that says nothing either way: a placeholder or a one-word status in a numeric column. */
const NEUTRAL_CELL = /^(?:-|n\/a|[a-z]+)?$/;

/** For each column: true when it holds numbers (at least one, and nothing but numbers and placeholders). */
export function numericColumns(header: string[], rows: string[][]): boolean[] {
  return header.map((_, i) => {
    const cells = rows.map((r) => (r[i] ?? "").trim());
    return (
      cells.some((c) => NUMERIC_CELL.test(c)) &&
      cells.every((c) => NUMERIC_CELL.test(c) || NEUTRAL_CELL.test(c))
    );
  });
}

function htmlTable(header: string[], rows: string[][]): string {
  const num = numericColumns(header, rows);
  const cls = (i: number) => (num[i] ? ` class="num"` : "");
  return (
    `<table><thead><tr>${header.map((h, i) => `<th${cls(i)}>${esc(h)}</th>`).join("")}</tr></thead><tbody>` +
    rows.map((r) => `<tr>${r.map((c, i) => `<td${cls(i)}>${esc(c)}</td>`).join("")}</tr>`).join("") +
    `</tbody></table>`
  );
}

function mdTable(header: string[], rows: string[][]): string {
  const cell = (s: string) => s.replace(/\|/g, "\\|");
  const num = numericColumns(header, rows);
  return [
    `| ${header.map(cell).join(" | ")} |`,
    `|${header.map((_, i) => (num[i] ? " ---: " : " :--- ")).join("|")}|`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ].join("\n");
}

// The content column is exactly as wide as the charts (PAGE_WIDTH), so a chart fills it at its natural size;
// on a narrower window both shrink together. Prose columns of tables read left-aligned, numbers right-aligned.
const CSS = `body{font:15px/1.5 system-ui,sans-serif;max-width:${PAGE_WIDTH}px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{background:#f4f4f4;padding:0 3px}img{display:block;width:100%;max-width:${PAGE_WIDTH}px;height:auto;margin:1em 0}
.meta{color:#555}details{margin:1em 0}summary{cursor:pointer}`;

export interface RenderedReport {
  html: string;
  markdown: string;
  charts: { file: string; svg: string }[];
}

export async function renderReport(res: BenchResult, guests?: GuestFigures): Promise<RenderedReport> {
  const sections = buildSections(res, guests);
  const charts: RenderedReport["charts"] = [];
  for (const s of sections) {
    if (s.chart) charts.push({ file: `charts/${s.chart.name}.svg`, svg: await renderSvg(s.chart.spec) });
  }
  const title = "xenide: how a Xen guest reaches its disk, measured";
  const meta =
    `Measured ${res.finishedAt.slice(0, 19).replace("T", " ")} UTC${res.quick ? " (quick run)" : ""} on ` +
    `${machineLine(res)}. Image ${res.image.bytes / 2 ** 20} MiB raw; ${res.settings.repeats} repeats of ` +
    `${res.settings.budgetMs} ms per cell, medians; baselines are plain node:fs in the same run.`;
  const intro =
    `HVM guests reach the disk through an emulated IDE controller, where every register access is a VM exit ` +
    `and a round trip to the device model; PV guests through the shared-memory blkif ring. A users' list ` +
    `thread asked four questions about asynchronous I/O on these paths; here are the answers, measured.`;
  const allRows = res.rows.map(rowCells);
  const costRows = res.costs.map((c) => [c.kind, String(c.cycles), c.source]);

  const h: string[] = [];
  h.push(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>`);
  h.push(`<style>${CSS}</style></head><body>`);
  h.push(`<h1>${esc(title)}</h1><p class="meta">${esc(meta)}</p><p>${inline(intro)}</p>`);
  const md: string[] = [`# ${title}`, "", meta, "", intro, ""];
  for (const s of sections) {
    h.push(`<section id="${s.id}"><h2>${esc(s.heading)}</h2>`);
    md.push(`## ${s.heading}`, "");
    for (const p of s.paragraphs) {
      h.push(`<p>${inline(p)}</p>`);
      md.push(p, "");
    }
    if (s.chart) {
      const file = `charts/${s.chart.name}.svg`;
      h.push(`<img src="${file}" alt="${esc(s.chart.title)}">`);
      md.push(`![${s.chart.title}](${file})`, "");
    }
    if (s.table) {
      h.push(htmlTable(s.table.header, s.table.rows));
      md.push(mdTable(s.table.header, s.table.rows), "");
    }
    h.push(`</section>`);
  }
  h.push(`<section id="all"><h2>All rows</h2><details><summary>${res.rows.length} rows</summary>`);
  h.push(htmlTable(ROW_HEADER, allRows) + `</details>`);
  h.push(`<h3>Modelled costs</h3>` + htmlTable(["kind", "cycles", "source"], costRows));
  const bad = res.checks.filter((c) => !c.ok);
  h.push(
    `<p>Data checks: ${res.checks.length - bad.length} of ${res.checks.length} paths moved the right bytes.` +
      bad.map((c) => ` ${esc(c.path)}: ${esc(c.note)}.`).join("") +
      `</p></section></body></html>`,
  );
  md.push("## All rows", "", mdTable(ROW_HEADER, allRows), "", "### Modelled costs", "");
  md.push(mdTable(["kind", "cycles", "source"], costRows), "");
  md.push(
    `Data checks: ${res.checks.length - bad.length} of ${res.checks.length} paths moved the right bytes.`,
    "",
  );
  return { html: h.join("\n") + "\n", markdown: md.join("\n"), charts };
}

/** Write index.html, index.md and charts/*.svg into `dir`. */
export async function writeReport(
  res: BenchResult,
  dir: string,
  guests?: GuestFigures,
): Promise<RenderedReport> {
  const r = await renderReport(res, guests);
  fs.mkdirSync(path.join(dir, "charts"), { recursive: true });
  for (const c of r.charts) fs.writeFileSync(path.join(dir, c.file), c.svg);
  fs.writeFileSync(path.join(dir, "index.html"), r.html);
  fs.writeFileSync(path.join(dir, "index.md"), r.markdown);
  return r;
}
