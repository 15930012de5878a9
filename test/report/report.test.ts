import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { pathSpec } from "../../src/bench/paths.ts";
import { emptyRow } from "../../src/bench/runner.ts";
import {
  BENCH_SCHEMA,
  type BenchResult,
  type CellSpec,
  type PathVariant,
  type Row,
} from "../../src/bench/types.ts";
import { DASH_SHAPES, PAGE_WIDTH, renderSvg } from "../../src/report/charts.ts";
import {
  buildSections,
  numericColumns,
  parseBench,
  ReportInputError,
  renderReport,
  writeReport,
} from "../../src/report/index.ts";
import { benchResult } from "../support/bench/result.ts";

/** A small synthetic result: the figures are made up; the report must only carry them through. */
function synthetic(): BenchResult {
  const rows: Row[] = [];
  const add = (
    variant: PathVariant,
    engine: "sync" | "async" | null,
    w: Partial<CellSpec["workload"]>,
    cache: "warm" | "cold",
    iops: number,
    extra: Partial<Row> = {},
  ) => {
    const c: CellSpec = {
      path: pathSpec(variant, engine),
      workload: { op: "read", pattern: "rand", blockSize: 4096, qd: 1, ...w },
      cache,
    };
    rows.push({
      ...emptyRow(c, "ok", ""),
      note: undefined,
      repeats: 3,
      iops: { median: iops, min: iops * 0.9, max: iops * 1.1 },
      mbps: { median: (iops * c.workload.blockSize) / 1e6, min: 0, max: 0 },
      exitsPerIo: c.path.family === "ide" ? 16 : c.path.family === "pv" ? 2 : 0,
      exitsPerMiB: c.path.family === "ide" ? 4096 : 512,
      notifyPerIo: c.path.family === "pv" ? 2 : 0,
      storagePerIo: c.path.family === "baseline" ? null : 1,
      ...extra,
    });
  };
  for (const cache of ["warm", "cold"] as const) {
    add("fs-sync", null, {}, cache, 11111);
    add("fs-libuv", null, { qd: 32 }, cache, 22222);
    for (const qd of [1, 32]) {
      add("pv", "sync", { qd }, cache, 1000 + qd);
      add("pv", "async", { qd }, cache, 2000 + qd);
    }
    add("dma", "sync", {}, cache, 3001);
    add("dma", "async", {}, cache, 3002);
  }
  add("pv", "async", { pattern: "seq", qd: 32 }, "warm", 4001, { storagePerIo: 1 });
  add("pv-merge", "async", { pattern: "seq", qd: 32 }, "warm", 4002, { storagePerIo: 0.25 });
  add("pio16", "sync", { pattern: "seq", blockSize: 65536 }, "warm", 50, {
    exitsPerIo: 32903,
    exitsPerMiB: 526448,
  });
  const partial = { rows, dispatch: null, rss: null, qtest: null };
  return benchResult(partial, { quick: false, checks: [{ path: "pv/sync/raw", ok: true, note: "" }] });
}

let dir = "";
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-report-test-"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("report", () => {
  it("answers the four questions with this run's numbers, each with a chart", () => {
    const s = buildSections(synthetic());
    const qs = s.filter((x) => /^q[1-4]$/.test(x.id));
    expect(qs.map((x) => x.heading.slice(0, 2))).toEqual(["1.", "2.", "3.", "4."]);
    for (const q of qs) expect(q.chart, q.id).not.toBeNull();
    const text = (id: string) => s.find((x) => x.id === id)!.paragraphs.join(" ");
    // Figures from the synthetic rows, carried into the answers.
    expect(text("q1")).toContain("1001"); // cold, dom0 sync, guest QD1
    expect(text("q1")).toContain("2032"); // cold, both
    expect(text("q3")).toContain("0.25");
  });

  it("leaves out a chart that has no data instead of drawing it empty", () => {
    const r = synthetic();
    r.rows = r.rows.filter((x) => !x.variant.startsWith("pv"));
    const s = buildSections(r);
    expect(s.find((x) => x.id === "q1")!.chart).toBeNull();
    expect(s.find((x) => x.id === "q1")!.paragraphs.join(" ")).toMatch(/not measured/);
  });

  it("renders SVG charts with vega-lite and a Markdown twin with the same sections", async () => {
    const r = await renderReport(synthetic());
    expect(r.charts.length).toBeGreaterThanOrEqual(4);
    for (const c of r.charts) {
      expect(c.svg.startsWith("<svg")).toBe(true);
      expect(c.svg).toContain("</svg>");
      expect(r.html).toContain(`src="${c.file}"`);
      expect(r.markdown).toContain(`(${c.file})`);
    }
    for (const h of ["Should AIO be done in dom0", "wait for the AIO data", "I/O scheduler", "PV and HVM"]) {
      expect(r.html).toContain(h);
      expect(r.markdown).toContain(h);
    }
    // The exits chart is on a log scale (vega writes the scale's ticks as powers of ten).
    expect(r.charts.find((c) => c.file.includes("exits"))!.svg).toMatch(/100,000|1e\+5|100k/);
  });

  it("question 3 counts merged guest requests as requests, with their sectors and bytes", () => {
    // Synthetic: 0.25 host requests per guest I/O = 4 guest requests of 4 KiB (8 sectors each) per host request.
    const text = buildSections(synthetic())
      .find((x) => x.id === "q3")!
      .paragraphs.join(" ");
    expect(text).not.toMatch(/sectors' worth/);
    expect(text).toContain("one host request for every 4 guest requests (32 sectors, 16 KiB)");
  });

  it("question 4 says exactly which cells are missing, and never 'not measured' before figures", () => {
    const r = synthetic();
    r.rows = r.rows.filter((x) => !(x.variant === "dma" && x.cache === "cold"));
    const p = buildSections(r)
      .find((x) => x.id === "q4")!
      .paragraphs.join(" ");
    expect(p).not.toMatch(/^\*\*Not measured in this run/);
    expect(p).toMatch(
      /^\*\*No verdict: cold IDE DMA reads at QD1 on the sync and async engines: not measured in this run\.\*\*/,
    );
    // The figures that were measured are still given, each missing one named as such.
    expect(p).toContain("async over sync: 1.00x warm (cold: not measured in this run)");
    expect(p).toContain(`${(2032 / 1032).toFixed(2)}x cold`);

    // Nothing measured: no figures at all, and one sentence saying what is missing.
    r.rows = r.rows.filter((x) => x.variant !== "dma" && !x.variant.startsWith("pv"));
    const none = buildSections(r).find((x) => x.id === "q4")!.paragraphs;
    expect(none).toEqual([
      "IDE DMA and PV 4 KiB random reads with both engines (sync and async): not measured in this run.",
    ]);
  });

  it("question 1 names a missing cell instead of printing a dash for it", () => {
    const r = synthetic();
    r.rows = r.rows.filter((x) => !(x.path === "pv/sync/raw" && x.qd === 32 && x.cache === "cold"));
    const p = buildSections(r).find((x) => x.id === "q1")!.paragraphs[0]!;
    expect(p).not.toMatch(/- IOPS|\(-\)/);
    expect(p).toMatch(/^\*\*No verdict: guest QD32 on the sync engine: not measured in this run\.\*\*/);
    expect(p).toContain("one after the other: not measured in this run.");
  });

  it("sizes every chart to the page's content width and never cuts an axis label", async () => {
    const s = buildSections(synthetic()).filter((x) => x.chart);
    expect(s.length).toBeGreaterThanOrEqual(6);
    for (const { chart } of s) {
      const spec = chart!.spec as unknown as {
        width: unknown;
        autosize: { type: string; contains: string };
        mark: { type: string };
        encoding: { x: { axis?: { labelLimit?: number; labelAngle?: number; labelExpr?: string } } };
      };
      expect(spec.width, chart!.name).toBe(PAGE_WIDTH);
      expect(spec.autosize, chart!.name).toEqual({ type: "fit-x", contains: "padding" });
      if (spec.mark.type === "bar") {
        const axis = spec.encoding.x.axis!;
        expect(axis.labelLimit, chart!.name).toBe(0); // no limit: labels are never truncated
        // Either horizontal and broken into lines, or turned.
        if (axis.labelAngle === 0) expect(axis.labelExpr).toMatch(/split\(datum\.label/);
        else expect(Math.abs(axis.labelAngle!)).toBeGreaterThanOrEqual(30);
      }
      const svg = await renderSvg(chart!.spec);
      expect(svg, chart!.name).toMatch(new RegExp(`^<svg[^>]* width="${PAGE_WIDTH}"`));
      expect(svg, `${chart!.name}: a label cut short`).not.toContain("…");
    }
    // Question 3's labels tell the sync engine from the async one.
    const q3 = await renderSvg(s.find((x) => x.id === "q3")!.chart!.spec);
    expect(q3).toMatch(/>sync engine</);
    expect(q3).toMatch(/>async engine</);
  });

  it("turns long labels instead of cutting them when the bands are narrow", async () => {
    const { barChart } = await import("../../src/report/charts.ts");
    const data = Array.from({ length: 24 }, (_, i) => ({
      x: `a rather long category name number ${i}, async engine`,
      c: "k",
      y: i + 1,
    }));
    const c = barChart({ name: "t", title: "t", data, x: "x", y: "y", yTitle: "y", color: "c" });
    const axis = (
      c.spec as unknown as { encoding: { x: { axis: { labelAngle: number; labelLimit: number } } } }
    ).encoding.x.axis;
    expect(axis.labelAngle).not.toBe(0);
    expect(axis.labelLimit).toBe(0);
    const svg = await renderSvg(c.spec);
    expect(svg).not.toContain("…");
    expect(svg).toContain("a rather long category name number 23, async engine");
  });

  it("gives cold and warm different point shapes (and dashes) in the queue-depth chart and its legend", async () => {
    const qd = buildSections(synthetic()).find((x) => x.id === "qd")!.chart!;
    const enc = (
      qd.spec as unknown as {
        encoding: Record<
          string,
          { field: string; title?: string; scale?: { domain: string[]; range: unknown[] } }
        >;
      }
    ).encoding;
    expect(enc.shape?.field).toBe("cache");
    expect(enc.strokeDash?.field).toBe("cache");
    // Same field and title: one merged legend, whose symbols differ in shape.
    expect(enc.shape!.title).toBe(enc.strokeDash!.title);
    expect(enc.shape!.scale!.domain).toEqual(["warm", "cold (O_DIRECT)"]);
    expect(enc.shape!.scale!.range).toEqual([DASH_SHAPES[0], DASH_SHAPES[1]]);
    expect(new Set(enc.strokeDash!.scale!.range.map((d) => JSON.stringify(d))).size).toBe(2);
    // In the SVG, the legend's two entries are drawn with two different symbol paths.
    const svg = await renderSvg(qd.spec);
    const symbolOf = new Map(
      [
        ...svg.matchAll(
          /role-legend-symbol"[^>]*><path [^>]*d="([^"]+)"[^>]*\/><\/g><g class="mark-text role-legend-label"[^>]*><text[^>]*>([^<]+)<\/text>/g,
        ),
      ].map((m) => [m[2], m[1]]),
    );
    expect(symbolOf.get("warm")).toBeDefined();
    expect(symbolOf.get("cold (O_DIRECT)")).toBeDefined();
    expect(symbolOf.get("warm")).not.toBe(symbolOf.get("cold (O_DIRECT)"));
  });

  it("aligns number columns right and prose columns left, in HTML and Markdown", async () => {
    const r = await renderReport(synthetic());
    const targets = buildSections(synthetic()).find((x) => x.id === "targets")!.table!;
    // target, measured, needed, met, how
    expect(numericColumns(targets.header, targets.rows)).toEqual([false, true, true, false, false]);
    expect(r.markdown).toContain(
      "| target | measured | needed | met | how |\n| :--- | ---: | ---: | :--- | :--- |",
    );
    expect(r.html).toMatch(
      /<th>target<\/th><th class="num">measured<\/th><th class="num">needed<\/th><th>met<\/th><th>how<\/th>/,
    );
    expect(r.html).toMatch(/td,th\{[^}]*text-align:left/);
    expect(r.html).toMatch(/td\.num,th\.num\{[^}]*text-align:right/);
    // A numeric column with a status word in it (a failed cell) stays numeric; a column of words does not.
    expect(
      numericColumns(
        ["a", "b", "c"],
        [
          ["pv/sync/raw", "1.23k", "yes"],
          ["fs-sync", "failed", "no"],
        ],
      ),
    ).toEqual([false, true, false]);
  });

  it("refuses input that is not a bench result", () => {
    expect(() => parseBench("{")).toThrow(ReportInputError);
    expect(() => parseBench(JSON.stringify({ schema: "other" }))).toThrow(/schema/);
    expect(() => parseBench(JSON.stringify({ schema: BENCH_SCHEMA, rows: [] }))).toThrow(/targets/);
  });
});

const CHROMIUM = process.env.XENIDE_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = spawnSync(CHROMIUM, ["--version"], { encoding: "utf8" }).status === 0;
const chromiumTest = haveChromium || process.env.CI === "true" ? it : it.skip;
if (!haveChromium && process.env.CI !== "true")
  console.log(`skipping the browser check: ${CHROMIUM} not found (apt-get install chromium)`);

describe("report in a browser", () => {
  chromiumTest(
    "renders in headless Chromium with every chart loaded and no console errors",
    async () => {
      const out = path.join(dir, "report");
      await writeReport(synthetic(), out);
      const { chromium } = await import("playwright-core");
      const ctx = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(dir, "profile-")), {
        executablePath: CHROMIUM,
        headless: true,
        viewport: { width: 1280, height: 900 },
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      });
      try {
        const page = await ctx.newPage();
        const errors: string[] = [];
        page.on("console", (m) => {
          if (m.type() === "error") errors.push(m.text());
        });
        page.on("pageerror", (e) => errors.push(String(e)));
        await page.goto(`file://${path.join(out, "index.html")}`, { waitUntil: "load" });
        const images = await page.evaluate(() =>
          [...document.images].map((i) => ({ src: i.getAttribute("src"), w: i.naturalWidth })),
        );
        expect(images.length).toBeGreaterThanOrEqual(4);
        for (const i of images) expect(i.w, i.src ?? "").toBeGreaterThan(0);
        // Every chart uses the content column's full width, at its natural size (not scaled up or cut).
        const widths = await page.evaluate(() =>
          [...document.images].map((i) => ({
            src: i.getAttribute("src"),
            shown: i.getBoundingClientRect().width,
            natural: i.naturalWidth,
            column: i.parentElement!.clientWidth,
          })),
        );
        for (const w of widths) {
          expect(w.shown, w.src ?? "").toBeGreaterThanOrEqual(0.98 * w.column);
          expect(w.natural, w.src ?? "").toBe(w.shown);
        }
        // The targets table: prose columns left, figures right.
        const align = await page.evaluate(() => {
          const row = document.querySelector("#targets tbody tr")!;
          return [...row.children].map((td) => getComputedStyle(td).textAlign);
        });
        expect(align).toEqual(["left", "right", "right", "left", "left"]);
        const headings = await page.evaluate(() =>
          [...document.querySelectorAll("h2")].map((h) => h.textContent),
        );
        expect(headings.slice(0, 4).map((h) => h?.slice(0, 2))).toEqual(["1.", "2.", "3.", "4."]);
        expect(errors).toEqual([]);
      } finally {
        await ctx.close();
      }
    },
    60_000,
  );
});

describe("real-guest figures", () => {
  it("reads ledgers in both shapes, skips what is not one, and reports them in their own sections", async () => {
    const { loadGuestFigures } = await import("../../src/report/guests.ts");
    const g = path.join(dir, "guests");
    fs.mkdirSync(g, { recursive: true });
    const phase = { phase: "seq-read", exits: 10, commandCount: 5, bytes: 1 << 20, exitsPerMiB: 10 };
    fs.writeFileSync(path.join(g, "a.json"), JSON.stringify([phase]));
    fs.writeFileSync(path.join(g, "b.json"), JSON.stringify({ mode: "dma", phases: [phase, { phase: 3 }] }));
    fs.writeFileSync(path.join(g, "c.json"), "not json");
    const v86 = path.join(dir, "v86.json");
    fs.writeFileSync(
      v86,
      JSON.stringify({ mib: 16, rows: [{ controller: "v86", mode: "dma", readMBps: 6, writeMBps: 5 }] }),
    );
    const figs = loadGuestFigures(g, v86);
    expect(figs.phases.map((p) => p.run)).toEqual(["a", "b"]);
    expect(figs.v86?.rows).toHaveLength(1);
    const ids = buildSections(synthetic(), figs).map((s) => s.id);
    expect(ids).toContain("guests");
    expect(ids).toContain("v86");
    const none = loadGuestFigures(path.join(dir, "nowhere"), path.join(dir, "nothing.json"));
    const s = buildSections(synthetic(), none).find((x) => x.id === "guests")!;
    expect(s.paragraphs.join(" ")).toMatch(/not present/);
  });
});
