/**
 * The benchmark's progress names only steps it takes: with --no-rss --no-qtest --no-formats those never
 * appear, and the ide-test comparison is not a quick run's step unless asked for.
 */
import { describe, expect, it } from "vitest";
import { runBench } from "../../src/bench/index.ts";

describe("bench progress", () => {
  it("counts and announces only the steps it runs, ending at its total", async () => {
    const seen: [number, number, string][] = [];
    await runBench({
      quick: true,
      only: ["ide-dma"],
      repeats: 1,
      budgetMs: 5,
      rss: false,
      qtest: false,
      formats: false,
      progress: (d, t, what) => seen.push([d, t, what]),
    });
    expect(seen.length).toBeGreaterThan(2);
    const steps = seen.map(([, , w]) => w);
    expect(steps.filter((w) => /streaming|qtest|qemu-img|ide-test/.test(w))).toEqual([]);
    expect(steps.filter((w) => /CD-ROM/.test(w))).toHaveLength(1);
    const [lastDone, total] = seen[seen.length - 1]!;
    expect(lastDone).toBe(total);
  }, 120_000);
});
