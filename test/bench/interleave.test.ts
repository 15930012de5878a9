/**
 * The speed targets in interleaved rounds: each round times every side for the same slice, and each figure is
 * the median of its per-round values (not a ratio of medians); the floor and the gap come from the same rounds;
 * the targets, the floor probes and the output read them. Then the same measurement for real, on a tiny budget.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { directSupported, prepareImage } from "../../src/bench/image.ts";
import {
  asyncFigures,
  comparisons,
  type Contender,
  floorFigures,
  interleaveSettings,
  measureComparison,
  runRounds,
} from "../../src/bench/interleave.ts";
import { benchMarkdown, benchText } from "../../src/bench/output.ts";
import { pathSpec } from "../../src/bench/paths.ts";
import { floorProbes } from "../../src/bench/probes.ts";
import { emptyRow } from "../../src/bench/runner.ts";
import { checkTargets } from "../../src/bench/targets.ts";
import type { InterleavedResult, Row } from "../../src/bench/types.ts";
import { benchResult } from "../support/bench/result.ts";

/** A millisecond clock that moves only when a fake side says it spent time. */
function fakeClock() {
  let t = 1000;
  return { now: () => t, spend: (ms: number) => (t += ms) };
}

/** A side that takes `us[r]` microseconds per I/O in round r and logs when it runs. */
function fakeSide(clock: ReturnType<typeof fakeClock>, name: string, us: number[], log: string[]): Contender {
  let r = 0;
  return {
    run(deadline) {
      const per = us[r++]!;
      log.push(name);
      const n = Math.max(1, Math.round(((deadline - clock.now()) * 1000) / per));
      clock.spend((n * per) / 1000);
      return n;
    },
  };
}

// Three measured rounds where the median of the per-round ratios (0.8) is not the ratio of the medians
// (4 / 8 = 0.5): the machine ran at half speed in the second round, for the baseline and the path alike.
const base = [4, 4, 8];
const pv = [5, 8, 10];
const nul = [1, 2, 2];

function floorResult(id: string, paths: [string, string, string], extra: Partial<InterleavedResult> = {}) {
  const r: InterleavedResult = {
    id,
    what: id,
    cache: "warm",
    op: "read",
    pattern: id === "pv-4k-random" ? "rand" : "seq",
    blockSize: id === "pv-4k-random" ? 4096 : 65536,
    rounds: 3,
    warmupRounds: 1,
    sliceMs: 100,
    sides: paths.map((p, i) => ({
      path: p,
      label: p,
      qd: 1,
      usPerIo: [base, pv, nul][i]!,
      ramAligned: true,
    })),
    ...floorFigures(base, pv, nul),
    dataChecks: 4,
    loadAvg: { start: 0, end: 0 },
    seconds: 1.2,
    ...extra,
  };
  return r;
}

/** A measured QD1 row with `usPerIo` microseconds per I/O. */
function row(p: ReturnType<typeof pathSpec>, pattern: "seq" | "rand", bs: number, usPerIo: number): Row {
  const iops = 1e6 / usPerIo;
  return {
    ...emptyRow(
      { path: p, workload: { op: "read", pattern, blockSize: bs, qd: 1 }, cache: "warm" },
      "ok",
      "",
    ),
    iops: { median: iops, min: iops, max: iops },
  };
}

describe("interleaved rounds: the arithmetic", () => {
  it("times every side in every round, alternating the order, and leaves the warm-up rounds out", async () => {
    const clock = fakeClock();
    const log: string[] = [];
    const us = await runRounds(
      [
        fakeSide(clock, "base", [50, ...base], log),
        fakeSide(clock, "pv", [50, ...pv], log),
        fakeSide(clock, "null", [50, ...nul], log),
      ],
      { rounds: 3, warmupRounds: 1, sliceMs: 100, now: clock.now },
    );
    expect(log.join(" ")).toBe("base pv null null pv base base pv null null pv base");
    expect(us[0]!.map((x) => +x.toFixed(6))).toEqual(base);
    expect(us[1]!.map((x) => +x.toFixed(6))).toEqual(pv);
    expect(us[2]!.map((x) => +x.toFixed(6))).toEqual(nul);
  });

  it("a QD1 target: the median of the per-round ratios, and the floor and gap of the same rounds", () => {
    const f = floorFigures(base, pv, nul);
    expect(f.ratio.perRound).toEqual([0.8, 0.5, 0.8]);
    expect(f.ratio).toMatchObject({ median: 0.8, min: 0.5, max: 0.8 });
    // Floor per round: base / (base + null) = 4/5, 4/6, 8/10.
    expect(f.floor.median).toBeCloseTo(0.8);
    expect(f.floor.min).toBeCloseTo(2 / 3);
    // Above the floor per round: path - (base + null) = 0, 2, 0.
    expect(f.gapUs!.perRound).toEqual([0, 2, 0]);
    expect(f.gapUs!.median).toBe(0);
  });

  it("the floor in sequence: the baseline over the null disk with the baseline's read in one loop, per round", () => {
    // The null disk with the baseline's read before each I/O: 6, 7, 12 us, against 4 + 1, 4 + 2, 8 + 2 apart.
    const f = floorFigures(base, pv, nul, [6, 7, 12]);
    expect(f.floorSeq!.perRound.map((x) => +x.toFixed(6))).toEqual([
      +(4 / 6).toFixed(6),
      +(4 / 7).toFixed(6),
      +(8 / 12).toFixed(6),
    ]);
    expect(f.floorSeq!.median).toBeCloseTo(2 / 3);
    // The path above it per round: 5 - 6, 8 - 7, 10 - 12.
    expect(f.gapSeqUs!.perRound).toEqual([-1, 1, -2]);
    expect(f.gapSeqUs!.median).toBe(-1);
    expect(floorFigures(base, pv, nul).floorSeq).toBeUndefined();
  });

  it("the floor in place: the baseline over the path on the baseline's own read, and the path above it", () => {
    // The path over a disk whose read is the baseline's readSync: 5.5, 7, 9 us; the path took 5, 8, 10.
    const f = floorFigures(base, pv, nul, [6, 7, 12], [5.5, 7, 9]);
    expect(f.floorInPlace!.perRound.map((x) => +x.toFixed(6))).toEqual([
      +(4 / 5.5).toFixed(6),
      +(4 / 7).toFixed(6),
      +(8 / 9).toFixed(6),
    ]);
    expect(f.gapInPlaceUs!.perRound).toEqual([-0.5, 1, 1]);
    expect(f.gapInPlaceUs!.median).toBe(1);
    // The floor in sequence is the fourth series, the floor in place the fifth: neither stands in for the other.
    expect(f.floorSeq!.perRound[0]).toBeCloseTo(4 / 6);
    expect(floorFigures(base, pv, nul, [6, 7, 12]).floorInPlace).toBeUndefined();
  });

  it("the async target: sync over async, its floor libuv QD32 over readSync QD1, all per round", () => {
    const f = asyncFigures([100, 100, 120], [50, 40, 60], [110, 100, 130], [50, 50, 40]);
    expect(f.ratio.perRound).toEqual([2.2, 2, 3.25]);
    expect(f.ratio.median).toBeCloseTo(2.2);
    expect(f.floor.perRound).toEqual([2, 2.5, 2]);
    expect(f.floor.median).toBe(2);
    expect(f.asyncOfLibuv!.median).toBe(1);
    expect(f.syncOfReadSync!.median).toBeCloseTo(120 / 130);
  });

  it("the targets and floor probes read the rounds when the run has them, the rows when it does not", () => {
    // Rows measured apart say 0.5x (4 us against 8 us) and a floor of 0.67x; the rounds say 0.8x and 0.8x.
    const rows = [
      row(pathSpec("fs-sync", null), "rand", 4096, 4),
      row(pathSpec("pv", "sync"), "rand", 4096, 8),
      row(pathSpec("pv", "sync", "null"), "rand", 4096, 2),
    ];
    const interleaved = [floorResult("pv-4k-random", ["fs-sync", "pv/sync/raw", "pv/sync/null"])];
    const none = { dispatch: null, rss: null, qtest: null };
    const t = checkTargets({ rows, ...none, interleaved }).find((x) => x.id === "pv-4k-random")!;
    expect(t.measured).toBeCloseTo(0.8);
    expect(t.detail).toMatch(
      /^pv\/sync\/raw vs fs-sync, QD1: median of 3 interleaved rounds of 100 ms, 0\.50-0\.80x; floor 0\.80x \(fs-sync 4\.00 us \+ pv\/sync\/null 2\.00 us, same rounds\), 0 us above it; missed by 11%/,
    );
    const fromRows = checkTargets({ rows, ...none }).find((x) => x.id === "pv-4k-random")!;
    expect(fromRows.measured).toBeCloseTo(0.5);
    expect(fromRows.detail).toMatch(/rows measured apart/);

    const [p] = floorProbes(rows, interleaved);
    expect(p!.id).toBe("floor-pv-4k");
    expect(p!.measured).toMatchObject({ rounds: 3, sliceMs: 100, ratio: 0.8, ratioMin: 0.5, restUs: 0 });
    expect(p!.measured.floorRatio).toBeCloseTo(0.8);
    expect(p!.verdict).toMatch(/^In 3 interleaved rounds of 100 ms .*a floor of 0\.80x \(0\.67-0\.80x\)/);
    expect(floorProbes(rows)[0]!.measured.floorRatio).toBeCloseTo(4 / 6);
  });

  it("a failed data check in the rounds leaves the figure but never meets the target", () => {
    const fast = floorFigures([4, 4, 4], [4, 4, 4], [0.1, 0.1, 0.1]);
    const bad = floorResult("ide-dma-64k", ["fs-sync", "ide-dma/sync/raw", "ide-dma/sync/null"], {
      ...fast,
      dataMismatch: "ide-dma/sync/raw: the block read at LBA 8 is not the image's",
    });
    const t = checkTargets({ rows: [], dispatch: null, rss: null, qtest: null, interleaved: [bad] }).find(
      (x) => x.id === "ide-dma-64k",
    )!;
    expect(t.measured).toBe(1);
    expect(t.met).toBe(false);
    expect(t.detail).toMatch(/DATA CHECK FAILED: ide-dma\/sync\/raw: the block read at LBA 8/);
  });

  it("the async target and its libuv target from the same rounds", () => {
    const f = asyncFigures([100, 100, 120], [50, 40, 60], [110, 100, 130], [50, 50, 40]);
    const x: InterleavedResult = {
      ...floorResult("pv-async-vs-sync", ["fs-sync", "pv/sync/raw", "pv/sync/null"]),
      cache: "cold",
      pattern: "rand",
      blockSize: 4096,
      sliceMs: 200,
      sides: [
        { path: "fs-sync", label: "", qd: 1, usPerIo: [100, 100, 120], ramAligned: true },
        { path: "fs-libuv", label: "", qd: 32, usPerIo: [50, 40, 60], ramAligned: true },
        { path: "pv/sync/raw", label: "", qd: 32, usPerIo: [110, 100, 130], ramAligned: true },
        { path: "pv/async/raw", label: "", qd: 32, usPerIo: [50, 50, 40], ramAligned: true },
      ],
      gapUs: undefined,
      ...f,
      dataChecks: 0,
    };
    const res = { rows: [], dispatch: null, rss: null, qtest: null, interleaved: [x] };
    const ts = checkTargets(res);
    const a = ts.find((t) => t.id === "pv-async-vs-sync")!;
    expect(a.measured).toBeCloseTo(2.2);
    expect(a.detail).toMatch(
      /rounds of 200 ms, 2\.00-3\.25x; floor 2\.00x \(fs-libuv QD32 vs fs-sync QD1, same rounds/,
    );
    expect(a.detail).toMatch(/to the floor: PV async 1\.00x libuv QD32, PV sync 0\.92x readSync QD1/);
    expect(ts.find((t) => t.id === "pv-async-vs-libuv")!.measured).toBe(1);
    const p = floorProbes([], [x]).find((q) => q.id === "floor-pv-async")!;
    expect(p.measured).toMatchObject({ floorRatio: 2, ratio: f.ratio.median, libuvQd32Iops: 1e6 / 50 });
    expect(p.verdict).toMatch(/^In 3 interleaved rounds of 200 ms/);
  });

  it("the terminal and Markdown outputs print the rounds, the range, the floor and the gap", () => {
    const interleaved = [floorResult("pv-4k-random", ["fs-sync", "pv/sync/raw", "pv/sync/null"])];
    const res = benchResult(
      { rows: [], dispatch: null, rss: null, qtest: null, interleaved },
      { quick: true },
    );
    const text = benchText(res);
    expect(text).toMatch(/the targets in interleaved rounds/);
    expect(text).toMatch(
      /pv-4k-random\s+3 x 100 ms\s+1\.2\s+0\.80x\s+0\.50x-0\.80x\s+0\.80x\s+0\.67x-0\.80x\s+\+0 us/,
    );
    const md = benchMarkdown(res);
    expect(md).toMatch(
      /\| 0\.80x \(0\.50-0\.80x in 3 interleaved rounds of 100 ms; floor 0\.80x, 0 us above it\) \|/,
    );

    // With the floor in sequence (a fourth side: the null disk with the baseline's read before each I/O).
    const seq = floorResult("pv-64k-seq", ["fs-sync", "pv/sync/raw", "pv/sync/null"], {
      ...floorFigures(base, pv, nul, [6, 7, 12]),
    });
    seq.sides.push({
      path: "pv/sync/null+readSync",
      label: "",
      qd: 1,
      usPerIo: [6, 7, 12],
      ramAligned: true,
    });
    const res2 = benchResult(
      { rows: [], dispatch: null, rss: null, qtest: null, interleaved: [seq] },
      { quick: true },
    );
    const t = checkTargets(res2).find((x) => x.id === "pv-64k-seq")!;
    expect(t.detail).toMatch(
      /0 us above it; in sequence \(pv\/sync\/null\+readSync 7\.00 us\) 0\.67x, 1\.00 us below that;/,
    );
    expect(benchText(res2)).toMatch(/\+0 us\s+0\.67x, 1\.00 us below\s+-\s+fs-sync 4\.00/);
    expect(benchMarkdown(res2)).toMatch(
      /floor 0\.80x, 0 us above it; in sequence 0\.67x, 1\.00 us below it\) \|/,
    );
    const [p] = floorProbes([], [seq]);
    expect(p!.measured).toMatchObject({ sequenceUs: 7, restSeqUs: -1 });
    expect(p!.verdict).toMatch(
      /take 7\.00 us, 1\.00 us more than apart: a floor of 0\.67x \(0\.57-0\.67x\), below the 0\.9x target; the path is 1\.00 us below it\./,
    );
    expect(p!.verdict).not.toMatch(/In place/);

    // With the floor in place too (a fifth side: the path over a disk whose read is the baseline's readSync).
    const placed = floorResult("pv-64k-seq", ["fs-sync", "pv/sync/raw", "pv/sync/null"], {
      ...floorFigures(base, pv, nul, [6, 7, 12], [5.5, 7, 9]),
    });
    placed.sides.push(
      { path: "pv/sync/null+readSync", label: "", qd: 1, usPerIo: [6, 7, 12], ramAligned: true },
      { path: "pv/sync/readsync", label: "", qd: 1, usPerIo: [5.5, 7, 9], ramAligned: true },
    );
    const res3 = benchResult(
      { rows: [], dispatch: null, rss: null, qtest: null, interleaved: [placed] },
      { quick: true },
    );
    expect(checkTargets(res3).find((x) => x.id === "pv-64k-seq")!.detail).toMatch(
      /1\.00 us below that; in place \(pv\/sync\/readsync 7\.00 us\) 0\.73x, 1\.00 us above that;/,
    );
    expect(benchText(res3)).toMatch(/0\.67x, 1\.00 us below\s+0\.73x, 1\.00 us above\s+fs-sync 4\.00/);
    expect(benchMarkdown(res3)).toMatch(
      /in sequence 0\.67x, 1\.00 us below it; in place 0\.73x, 1\.00 us above it\) \|/,
    );
    const [q] = floorProbes([], [placed]);
    expect(q!.measured).toMatchObject({ inPlaceUs: 7, restInPlaceUs: 1 });
    // In place 7 us against 7 us in sequence: the request's place costs nothing here.
    expect(q!.verdict).toMatch(
      /In place \(.*\) 7\.00 us, 0 us above the floor in sequence: a floor of 0\.73x \(0\.57-0\.89x\), below the 0\.9x target; the path is 1\.00 us above it: what its medium adds to the baseline's call\./,
    );
    // A path below its floor in place: its medium adds nothing to the baseline's call.
    const below = floorResult("pv-64k-seq", ["fs-sync", "pv/sync/raw", "pv/sync/null"], {
      ...floorFigures(base, pv, nul, [6, 7, 12], [6, 9, 11]),
    });
    below.sides.push(
      { path: "pv/sync/null+readSync", label: "", qd: 1, usPerIo: [6, 7, 12], ramAligned: true },
      { path: "pv/sync/readsync", label: "", qd: 1, usPerIo: [6, 9, 11], ramAligned: true },
    );
    expect(floorProbes([], [below])[0]!.verdict).toMatch(
      /the path is 1\.00 us below it: its medium adds nothing to the baseline's call\./,
    );
  });

  it("runs the comparisons whose measured path --only names, and the async one only with O_DIRECT", () => {
    const ids = (direct: boolean, only?: string[]) => comparisons(direct, only).map((c) => c.id);
    expect(ids(true)).toEqual(["pv-4k-random", "pv-64k-seq", "ide-dma-64k", "pv-async-vs-sync"]);
    expect(ids(false)).not.toContain("pv-async-vs-sync");
    expect(ids(true, ["ide-dma"])).toEqual(["ide-dma-64k"]);
    expect(ids(true, ["pv/async"])).toEqual(["pv-async-vs-sync"]);
    expect(ids(true, ["pv/sync/null"])).toEqual([]);
    // A full run stays within about a minute of rounds, a quick one within about 15 s.
    const cost = (quick: boolean) => {
      const s = interleaveSettings(quick, quick ? 80 : 150);
      const per = (slice: number, sides: number) => ((s.rounds + s.warmupRounds) * sides * slice) / 1000;
      return 3 * per(s.sliceMs, 4) + per(s.asyncSliceMs, 4);
    };
    expect(cost(false)).toBeLessThan(50);
    expect(cost(true)).toBeLessThan(12);
  });
});

describe("interleaved rounds: for real, on a tiny budget", () => {
  let dir = "";
  let image = { path: "", bytes: 4 << 20 };
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-interleave-"));
    image = { path: path.join(dir, "bench.img"), bytes: 4 << 20 };
    prepareImage(image.path, image.bytes);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("measures every target's sides through the rows' paths, in page-aligned memory, data checked", async () => {
    const specs = comparisons(directSupported(image.path));
    expect(specs.length).toBeGreaterThanOrEqual(3);
    for (const c of specs) {
      const x = await measureComparison(c, {
        rounds: 3,
        warmupRounds: 1,
        sliceMs: 5,
        asyncSliceMs: 5,
        image,
        workingSet: image.bytes,
      });
      expect(x.id).toBe(c.id);
      expect(x.rounds).toBe(3);
      expect(x.sides.map((s) => s.path)).toEqual(
        c.sides.map((s) => (s.withBaselineRead ? `${s.spec.id}+readSync` : s.spec.id)),
      );
      for (const s of x.sides) {
        expect(s.usPerIo).toHaveLength(3);
        for (const u of s.usPerIo) expect(u).toBeGreaterThan(0);
        expect(s.ramAligned).toBe(true);
      }
      for (const f of [x.ratio, x.floor]) {
        expect(f.perRound).toHaveLength(3);
        expect(f.min).toBeLessThanOrEqual(f.median);
        expect(f.median).toBeLessThanOrEqual(f.max);
      }
      expect(x.dataMismatch).toBeUndefined();
      if (c.kind === "floor") {
        // The floor leaves out the path's own storage cost: never above 1, and the path's ratio is the
        // baseline's time over its own.
        expect(x.floor.max).toBeLessThanOrEqual(1);
        expect(x.gapUs!.perRound).toHaveLength(3);
        expect(x.ratio.perRound[0]).toBeCloseTo(x.sides[0]!.usPerIo[0]! / x.sides[1]!.usPerIo[0]!);
        // The fourth side is the null disk with the baseline's read before each I/O: the floor in sequence.
        expect(x.sides[3]!.path).toBe(`${x.sides[2]!.path}+readSync`);
        expect(x.floorSeq!.perRound[1]).toBeCloseTo(x.sides[0]!.usPerIo[1]! / x.sides[3]!.usPerIo[1]!);
        expect(x.gapSeqUs!.perRound[2]).toBeCloseTo(x.sides[1]!.usPerIo[2]! - x.sides[3]!.usPerIo[2]!);
        // The fifth is the same path over a disk whose read is the baseline's readSync: the floor in place.
        expect(x.sides[4]!.path).toBe(x.sides[1]!.path.replace(/\/raw$/, "/readsync"));
        expect(x.floorInPlace!.perRound[0]).toBeCloseTo(x.sides[0]!.usPerIo[0]! / x.sides[4]!.usPerIo[0]!);
        expect(x.gapInPlaceUs!.perRound[1]).toBeCloseTo(x.sides[1]!.usPerIo[1]! - x.sides[4]!.usPerIo[1]!);
        // The raw path's last block is checked after every slice, warm-up included.
        expect(x.dataChecks).toBe(4);
      } else {
        expect(x.sides.map((s) => s.qd)).toEqual([1, 32, 32, 32]);
        expect(x.asyncOfLibuv!.perRound).toHaveLength(3);
      }
    }
  }, 60_000);
});
