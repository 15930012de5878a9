/** The probes behind the benchmark's explanations: what each measures and how its verdict follows. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";

import { prepareImage } from "../../src/bench/image.ts";
import { pathSpec } from "../../src/bench/paths.ts";
import { floorProbes, probeAlignment, probeSyscallInPv, probeSyscallTlb } from "../../src/bench/probes.ts";
import { emptyRow } from "../../src/bench/runner.ts";
import { benchText } from "../../src/bench/output.ts";
import { rowCells } from "../../src/bench/table.ts";
import type { BenchResult, Row } from "../../src/bench/types.ts";

/** A measured row of `path` with `usPerIo` microseconds per I/O. */
function row(p: ReturnType<typeof pathSpec>, pattern: "seq" | "rand", bs: number, usPerIo: number): Row {
  const iops = 1e6 / usPerIo;
  return {
    ...emptyRow(
      { path: p, workload: { op: "read", pattern, blockSize: bs, qd: 1 }, cache: "warm" },
      "ok",
      "",
    ),
    iops: { median: iops, min: iops, max: iops },
    ramAligned: true,
  };
}

describe("explanations measured by the benchmark", () => {
  it("the floor of a target: baseline time plus the protocol's own time on the null disk", () => {
    const rows = [
      row(pathSpec("fs-sync", null), "rand", 4096, 3),
      row(pathSpec("pv", "sync"), "rand", 4096, 6),
      row(pathSpec("pv", "sync", "null"), "rand", 4096, 1),
    ];
    const [f] = floorProbes(rows);
    expect(f!.id).toBe("floor-pv-4k");
    expect(f!.measured.floorUs).toBeCloseTo(4);
    expect(f!.measured.floorRatio).toBeCloseTo(0.75);
    expect(f!.measured.restUs).toBeCloseTo(2);
    expect(f!.verdict).toMatch(/floor of 0\.75x \(below the 0\.9x target/);
    expect(f!.verdict).toMatch(/2(\.00)? us above the floor/);
    // No null-disk row, no floor.
    expect(floorProbes(rows.slice(0, 2))).toEqual([]);
    // A full run measures the null disk sequentially only: the 4 KiB random floor takes that row (no storage,
    // so the pattern changes nothing).
    const seqNull = [...rows.slice(0, 2), row(pathSpec("pv", "sync", "null"), "seq", 4096, 1.5)];
    const [g] = floorProbes(seqNull);
    expect(g!.id).toBe("floor-pv-4k");
    expect(g!.measured.protocolUs).toBeCloseTo(1.5);
  });

  it("measures a system call alone, pages touched alone and after one, and says what the kernel runs", () => {
    const p = probeSyscallTlb(16, 1);
    expect(p.measured.syscallUs).toBeGreaterThan(0);
    expect(p.measured.touchUs).toBeGreaterThan(0);
    expect(p.measured.syscallThenTouchUs).toBeGreaterThan(p.measured.touchUs!);
    expect(p.verdict).toMatch(/Kernel page-table isolation: .*; CPU PCID: (yes|no|unknown)\./);
  });

  it("measures a system call inside a PV round trip on the null disk", async () => {
    const p = await probeSyscallInPv(1);
    expect(p.measured.pvNullWithSyscallUs).toBeGreaterThan(0);
    expect(p.measured.extraUs).toBeCloseTo(
      p.measured.pvNullWithSyscallUs! - p.measured.pvNullUs! - p.measured.syscallAloneUs!,
    );
  });

  it("compares reads into page-aligned and misaligned memory at 4 KiB and 64 KiB", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-probe-"));
    try {
      const img = path.join(dir, "bench.img");
      prepareImage(img, 4 << 20);
      const p = probeAlignment(img, 4 << 20, 1);
      expect(Object.keys(p.measured).sort()).toEqual(
        [
          "aligned_us_4096",
          "aligned_us_65536",
          "plus16_us_4096",
          "plus16_us_65536",
          "slowdown_4096",
          "slowdown_65536",
        ].sort(),
      );
      expect(p.verdict).toMatch(/^readSync into page-aligned memory vs 16 bytes past a page boundary: 4 KiB/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("every row shows its engine and the alignment of its memory; the verdicts are printed", () => {
    const r = row(pathSpec("pv", "async"), "rand", 4096, 5);
    const cells = rowCells(r);
    expect(cells.slice(0, 3)).toEqual(["pv/async/raw", "async", "aligned"]);
    expect(rowCells({ ...r, ramAligned: false })[2]).toBe("UNALIGNED");
    const res = {
      startedAt: "a",
      finishedAt: "b",
      quick: true,
      machine: {
        cpu: "c",
        cores: 2,
        memGiB: 1,
        os: "o",
        kernel: "k",
        node: "n",
        v8: "v",
        uvThreadpool: 4,
        hostname: "h",
        loadAvg: { start: 0, end: 0 },
      },
      image: { path: "i", bytes: 1 << 20, workingSetBytes: 1 << 20, directSupported: false },
      settings: { repeats: 1, budgetMs: 1 },
      costs: [],
      modelGHz: 3.5,
      rows: [r],
      dispatch: null,
      rss: null,
      qtest: null,
      targets: [],
      probes: [{ id: "syscall-tlb", question: "q", measured: {}, verdict: "VERDICT TEXT" }],
      startup: {
        status: "ok",
        entry: "dist/index.mjs",
        firstRequestMs: 80,
        firstSecondPerSec: 1000,
        steadyPerSec: 4000,
      },
      unavailable: [],
      checks: [],
    } as unknown as BenchResult;
    const text = benchText(res);
    expect(text).toMatch(/- syscall-tlb: VERDICT TEXT/);
    expect(text).toMatch(/first request after 80 ms; 1000\/s over the first second, 4000\/s steady \(25%\)/);
  });
});
