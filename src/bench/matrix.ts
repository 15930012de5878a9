/**
 * Which cells a run measures. The full run crosses every path with every workload it can take (IDE at depth
 * 1 only; PV up to its ring's slots); the PV variants (ring size, indirect, persistent grants, merging) and
 * the null disk run a subset that isolates their effect. Cold cells (O_DIRECT) cover random reads, where the
 * disk's own queue is what asynchronous I/O can use. `--quick` keeps one cell of each kind that a target or
 * a report chart needs.
 */
import { pathSpec } from "./paths.ts";
import {
  type AccessPattern,
  BLOCK_SIZES,
  type CacheState,
  type CellSpec,
  type EngineKind,
  type IoOpKind,
  type PathSpec,
  type PathVariant,
  QUEUE_DEPTHS,
  type Workload,
} from "./types.ts";

const ENGINES: EngineKind[] = ["sync", "async"];
const IDE_VARIANTS: PathVariant[] = ["pio16", "pio32", "rep", "dma"];
const PV_EXTRA: PathVariant[] = ["pv-ring16", "pv-noindirect", "pv-nopersistent", "pv-merge"];

function workloads(
  ops: IoOpKind[],
  patterns: AccessPattern[],
  sizes: readonly number[],
  qds: readonly number[],
): Workload[] {
  const out: Workload[] = [];
  for (const op of ops)
    for (const pattern of patterns)
      for (const blockSize of sizes) for (const qd of qds) out.push({ op, pattern, blockSize, qd });
  return out;
}

function cells(paths: PathSpec[], ws: Workload[], cache: CacheState): CellSpec[] {
  const out: CellSpec[] = [];
  for (const path of paths)
    for (const w of ws) {
      if (w.qd > path.maxQd) continue;
      out.push({ path, workload: w, cache });
    }
  return out;
}

export interface MatrixOptions {
  quick: boolean;
  /** Include O_DIRECT cells (false when the file system refuses O_DIRECT). */
  direct: boolean;
  /** Only paths whose id contains one of these strings. */
  only?: string[];
}

export function buildMatrix(o: MatrixOptions): CellSpec[] {
  const baselines = [pathSpec("fs-sync", null), pathSpec("fs-libuv", null)];
  const ide = (backend: "raw" | "null", engines = ENGINES, variants = IDE_VARIANTS) =>
    variants.flatMap((v) => engines.map((e) => pathSpec(v, e, backend)));
  const pv = (variant: PathVariant, backend: "raw" | "null" = "raw") =>
    ENGINES.map((e) => pathSpec(variant, e, backend));
  let list: CellSpec[];

  if (o.quick) {
    const qd1 = workloads(["read"], ["rand"], [4096], [1]).concat(
      workloads(["read"], ["seq"], [65536], [1]),
      workloads(["write"], ["rand"], [4096], [1]),
    );
    const qd32 = workloads(["read"], ["rand"], [4096], [32]).concat(
      workloads(["read"], ["seq"], [4096], [32]),
    );
    list = [
      ...cells(baselines, qd1.concat(qd32), "warm"),
      ...cells([...ide("raw", ["sync"]), pathSpec("dma", "async")], qd1, "warm"),
      ...cells([pathSpec("pio16", "sync", "null"), pathSpec("dma", "sync", "null")], qd1, "warm"),
      ...cells([...pv("pv"), ...pv("pv", "null")], qd1.concat(qd32), "warm"),
      ...cells([pathSpec("pv-merge", "async"), pathSpec("pv-ring16", "async")], qd32, "warm"),
    ];
    if (o.direct) {
      const cold = workloads(["read"], ["rand"], [4096], [1, 32]);
      list.push(...cells([...baselines, ...pv("pv")], cold, "cold"));
    }
  } else {
    const all = workloads(["read", "write"], ["seq", "rand"], BLOCK_SIZES, QUEUE_DEPTHS);
    const variantWs = workloads(["read", "write"], ["seq", "rand"], [4096, 65536, 1048576], [1, 32]);
    const nullWs = workloads(["read", "write"], ["seq"], BLOCK_SIZES, [1, 32]);
    list = [
      ...cells(baselines, all, "warm"),
      ...cells(ide("raw"), all, "warm"),
      ...cells(ide("null", ["sync"]), nullWs, "warm"),
      ...cells(pv("pv"), all, "warm"),
      ...cells(
        PV_EXTRA.flatMap((v) => pv(v)),
        variantWs.concat(workloads(["read"], ["seq", "rand"], [4096], [64])),
        "warm",
      ),
      ...cells(pv("pv", "null"), nullWs, "warm"),
    ];
    if (o.direct) {
      const cold = workloads(["read"], ["rand"], [4096, 65536], QUEUE_DEPTHS).concat(
        workloads(["write"], ["rand"], [4096], [1, 32]),
      );
      list.push(...cells([...baselines, ...pv("pv"), ...ide("raw", ENGINES, ["dma"])], cold, "cold"));
    }
  }
  if (o.only && o.only.length > 0) {
    const keep = o.only;
    list = list.filter((c) => c.path.family === "baseline" || keep.some((s) => c.path.id.includes(s)));
  }
  return list;
}

/** The baseline a row is compared with: readSync/writeSync at depth 1, libuv callbacks deeper. */
export function baselineFor(w: Workload): PathVariant {
  return w.qd === 1 ? "fs-sync" : "fs-libuv";
}
