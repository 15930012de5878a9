/**
 * A whole bench result around made-up rows and comparisons, for tests of the report and the output formats:
 * the envelope (machine line, image, settings, cost table) is fixed, the targets are computed from the parts as
 * the benchmark computes them.
 */
import { checkTargets } from "../../../src/bench/targets.ts";
import { BENCH_SCHEMA, type BenchResult } from "../../../src/bench/types.ts";
import { COUNTER_KINDS, DEFAULT_COSTS } from "../../../src/hypervisor/accounting.ts";

export type BenchParts = Parameters<typeof checkTargets>[0] &
  Partial<Pick<BenchResult, "cd" | "probes" | "startup">>;

export function benchResult(
  parts: BenchParts,
  opts: { quick: boolean; checks?: BenchResult["checks"] },
): BenchResult {
  return {
    schema: BENCH_SCHEMA,
    startedAt: "2026-01-01T00:00:00.000Z",
    finishedAt: "2026-01-01T00:10:00.000Z",
    quick: opts.quick,
    machine: {
      cpu: "test cpu",
      cores: 2,
      memGiB: 4,
      os: "Linux x64",
      kernel: "6",
      node: "20",
      v8: "11",
      uvThreadpool: 16,
      hostname: "h",
      loadAvg: { start: 0.5, end: 0.5 },
    },
    image: { path: "/x", bytes: 1 << 20, workingSetBytes: 1 << 20, directSupported: true },
    settings: { repeats: 3, budgetMs: 10 },
    costs: COUNTER_KINDS.map((k) => ({
      kind: k,
      cycles: DEFAULT_COSTS[k].cycles,
      source: DEFAULT_COSTS[k].source,
    })),
    modelGHz: 3.5,
    ...parts,
    targets: checkTargets(parts),
    unavailable: [],
    checks: opts.checks ?? [],
  };
}
