/**
 * The report's sections for the comparisons with QEMU's own programs (qemu-img bench, ide-test) and the
 * CD-ROM rows, and `parseBench` on the result fields behind them: carried through when present, left out
 * when absent (older results), refused when malformed.
 */
import { describe, expect, it } from "vitest";

import { floorFigures } from "../../src/bench/interleave.ts";
import { benchMarkdown, benchText } from "../../src/bench/output.ts";
import { type BenchResult } from "../../src/bench/types.ts";
import { buildSections, parseBench, renderReport, ReportInputError } from "../../src/report/index.ts";
import { benchResult } from "../support/bench/result.ts";

const spread = (m: number) => ({ median: m, min: m, max: m });

/** A result with no cells and the three comparisons filled in (made-up figures the report must carry). */
function result(): BenchResult {
  const partial = {
    rows: [],
    dispatch: null,
    rss: null,
    qtest: null,
    formats: {
      status: "ok" as const,
      qemuImgVersion: "qemu-img version 7.2.22",
      imageBytes: 64 << 20,
      repeats: 3,
      budgetMs: 200,
      checked: ["raw" as const, "qcow2" as const],
      rows: [
        {
          medium: "qcow2" as const,
          qd: 32,
          blockSize: 4096,
          direct: true,
          status: "ok" as const,
          xenideRandIops: spread(21234),
          xenideSeqIops: spread(22345),
          qemuImgIops: spread(23456),
          ratio: 21234 / 23456,
          seqRatio: 22345 / 23456,
          qemuImg: "qemu-img bench -f qcow2 -t none -d 32 -s 4K -c 5000 /tmp/x.qcow2",
        },
        {
          medium: "nbd" as const,
          qd: 1,
          blockSize: 4096,
          direct: false,
          status: "unavailable" as const,
          note: "qemu-nbd not installed",
          xenideRandIops: null,
          xenideSeqIops: null,
          qemuImgIops: null,
          ratio: null,
          seqRatio: null,
          qemuImg: "",
        },
      ],
    },
    ideTest: {
      status: "ok" as const,
      cases: 1,
      rounds: 3,
      launcher: {
        passed: 1,
        seconds: 0.35,
        cases: [{ name: "/x86_64/ide/identify", ok: true, seconds: 0.35 }],
      },
      qemu: {
        version: "QEMU emulator version 7.2.22",
        passed: 1,
        seconds: 0.25,
        cases: [{ name: "/x86_64/ide/identify", ok: true, seconds: 0.25 }],
      },
      compared: 1,
      ratio: 1.4,
    },
    interleaved: [
      {
        id: "ide-dma-64k",
        what: "IDE DMA 64 KiB sequential reads, sync engine, warm",
        cache: "warm" as const,
        op: "read" as const,
        pattern: "seq" as const,
        blockSize: 65536,
        rounds: 3,
        warmupRounds: 1,
        sliceMs: 100,
        sides: [
          ["fs-sync", [5, 5, 6]],
          ["ide-dma/sync/raw", [8, 9, 9]],
          ["ide-dma/sync/null", [2, 2, 2]],
          ["ide-dma/sync/null+readSync", [7.5, 8, 8.5]],
          ["ide-dma/sync/readsync", [7.8, 8.5, 8.5]],
        ].map(([p, us]) => ({
          path: p as string,
          label: "",
          qd: 1,
          usPerIo: us as number[],
          ramAligned: true,
        })),
        ...floorFigures([5, 5, 6], [8, 9, 9], [2, 2, 2], [7.5, 8, 8.5], [7.8, 8.5, 8.5]),
        dataChecks: 4,
        loadAvg: { start: 0, end: 0 },
        seconds: 1.6,
      },
    ],
    cd: {
      status: "ok" as const,
      rows: [
        {
          device: "cd" as const,
          via: "dma" as const,
          bytesPerCommand: 32768,
          exitsPerCommand: 23,
          exitsPer2KiB: 23 / 16,
          exitsPerMiB: 736,
          irqPerCommand: 1,
        },
      ],
    },
  };
  return benchResult(partial, { quick: true });
}

describe("report: comparisons with QEMU and CD-ROM rows", () => {
  it("a section each, with the run's figures in its table", () => {
    const s = buildSections(parseBench(JSON.stringify(result())));
    const sec = (id: string) => s.find((x) => x.id === id)!;
    expect(sec("formats").table!.rows).toEqual([
      ["qcow2 (O_DIRECT)", "32", "21.2k", "22.3k", "23.5k", "0.91x", "0.95x"],
      ["nbd", "1", "unavailable: qemu-nbd not installed", "", "", "", ""],
    ]);
    expect(sec("formats").paragraphs.join(" ")).toMatch(
      /qemu-img version 7\.2\.22.*bytes checked through raw, qcow2/,
    );
    expect(sec("ide-test").table!.rows).toEqual([["/ide/identify", "pass 0.35 s", "pass 0.25 s", "1.40x"]]);
    expect(sec("ide-test").paragraphs[0]).toMatch(/median of 3 rounds.*launcher takes 1\.40x QEMU's time/);
    expect(sec("cd").table!.rows).toEqual([
      ["CD-ROM, PACKET READ(10)", "DMA", "32K", "23.0", "1.44", "736", "1.00"],
    ]);
    // Per round: ratio 5/8, 5/9, 6/9; floor 5/7, 5/7, 6/8; above it 1, 2, 1 us; in sequence 5/7.5, 5/8, 6/8.5,
    // the path 0.5, 1, 0.5 us above that; in place 5/7.8, 5/8.5, 6/8.5, the path 0.2, 0.5, 0.5 us above that.
    // Each printed figure is the median of its rounds.
    const il = sec("interleaved");
    expect(il.paragraphs[0]).toMatch(
      /^the targets in interleaved rounds .*in sequence = baseline.*in place = /,
    );
    expect(il.table!.rows).toEqual([
      [
        "ide-dma-64k",
        "3 x 100 ms",
        "1.6",
        "0.63x",
        "0.56x-0.67x",
        "0.71x",
        "0.71x-0.75x",
        "+1.00 us",
        "0.67x, 0.50 us above",
        "0.64x, 0.50 us above",
        "fs-sync 5.00, ide-dma/sync/raw 9.00, ide-dma/sync/null 2.00, ide-dma/sync/null+readSync 8.00, " +
          "ide-dma/sync/readsync 8.50",
      ],
    ]);
    // The targets section carries the comparison's verdicts.
    const targets = sec("targets").table!.rows.map((r) => r[0]);
    expect(targets.some((t) => /qcow2.*qemu-img bench/.test(t!))).toBe(true);
    expect(targets.some((t) => /ide-test/.test(t!))).toBe(true);
  });

  it("the page and its Markdown twin show the tables", async () => {
    const r = await renderReport(result());
    for (const text of [r.html, r.markdown]) {
      expect(text).toContain("raw, qcow2 and NBD against qemu-img bench");
      expect(text).toContain("ide-test: the launcher against QEMU");
      expect(text).toContain("CD-ROM reads by PIO and DMA");
      expect(text).toContain("23.5k");
    }
  });

  it("the terminal table and the Markdown summary carry the same three tables", () => {
    const r = result();
    const text = benchText(r);
    expect(text).toMatch(/^qcow2 \(O_DIRECT\) +32 +21\.2k +22\.3k +23\.5k +0\.91x +0\.95x$/m);
    expect(text).toMatch(/^\/ide\/identify +pass 0\.35 s +pass 0\.25 s +1\.40x$/m);
    expect(text).toMatch(/^CD-ROM, PACKET READ\(10\) +DMA +32K +23\.0 +1\.44 +736 +1\.00$/m);
    const md = benchMarkdown(r);
    expect(md).toContain("| qcow2 (O_DIRECT) | 32 | 21.2k | 22.3k | 23.5k | 0.91x | 0.95x |");
    expect(md).toContain("| /ide/identify | pass 0.35 s | pass 0.25 s | 1.40x |");
    expect(md).toContain("| CD-ROM, PACKET READ(10) | DMA | 32K | 23.0 | 1.44 | 736 | 1.00 |");
  });

  it("an older result without the comparisons has none of their sections", () => {
    const r = result() as Partial<BenchResult>;
    delete r.formats;
    delete r.ideTest;
    delete r.cd;
    delete r.interleaved;
    const ids = buildSections(parseBench(JSON.stringify(r))).map((x) => x.id);
    for (const id of ["formats", "ide-test", "cd", "interleaved"]) expect(ids).not.toContain(id);
  });

  it("parseBench refuses a comparison that is not what its section reads", () => {
    const bad = (edit: (r: Record<string, any>) => void) => {
      const r = JSON.parse(JSON.stringify(result())) as Record<string, any>;
      edit(r);
      return () => parseBench(JSON.stringify(r));
    };
    expect(bad((r) => (r.formats.rows = "none"))).toThrow(/"formats" lacks its status or rows/);
    expect(bad((r) => (r.formats.status = "fine"))).toThrow(ReportInputError);
    expect(bad((r) => delete r.formats.rows[0].qd)).toThrow(/"formats" row 0/);
    expect(bad((r) => delete r.ideTest.launcher)).toThrow(/"ideTest" lacks/);
    expect(bad((r) => (r.ideTest.qemu.cases[0].ok = "yes"))).toThrow(/"ideTest" has a case/);
    expect(bad((r) => (r.ideTest.qemu = 3))).toThrow(/"ideTest.qemu"/);
    expect(bad((r) => (r.cd.rows[0].exitsPerMiB = null))).toThrow(/"cd" row 0/);
    expect(bad((r) => (r.cd = []))).toThrow(/"cd" lacks/);
    expect(bad((r) => (r.interleaved = {}))).toThrow(/"interleaved" is not a list/);
    expect(bad((r) => delete r.interleaved[0].floor)).toThrow(
      /"interleaved" entry 0 is not a measured target/,
    );
    expect(bad((r) => (r.interleaved[0].sides[1].usPerIo = "9"))).toThrow(/"interleaved" entry 0/);
    // A figure whose rounds measured nothing is null in the JSON: still a result.
    expect(bad((r) => (r.interleaved[0].ratio.median = null))).not.toThrow();
    // null is "not run" and passes.
    expect(bad((r) => ((r.formats = null), (r.ideTest = null), (r.cd = null)))).not.toThrow();
  });
});
