/** The benchmark's progress names only steps it takes: with --no-rss --no-qtest those two never appear. */
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
      progress: (d, t, what) => seen.push([d, t, what]),
    });
    expect(seen.length).toBeGreaterThan(2);
    expect(seen.map(([, , w]) => w).filter((w) => /streaming|qtest/.test(w))).toEqual([]);
    const [lastDone, total] = seen[seen.length - 1]!;
    expect(lastDone).toBe(total);
  }, 120_000);
});
