import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { attachBaselines } from "../../src/bench/index.ts";
import { prepareImage } from "../../src/bench/image.ts";
import { buildMatrix } from "../../src/bench/matrix.ts";
import { offsets } from "../../src/bench/offsets.ts";
import { type ImageRef, pathSpec } from "../../src/bench/paths.ts";
import { emptyRow, runCell } from "../../src/bench/runner.ts";
import { checkTargets } from "../../src/bench/targets.ts";
import type { CellSpec, Row } from "../../src/bench/types.ts";
import { verifyPath } from "../../src/bench/verify.ts";
import { parseBench } from "../../src/report/index.ts";

let dir = "";
let image: ImageRef;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-bench-test-"));
  image = { path: path.join(dir, "bench.img"), bytes: 4 << 20 };
  prepareImage(image.path, image.bytes);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("offsets", () => {
  it("sequential I/O walks the working set block by block and wraps", () => {
    const next = offsets("seq", 4096, 3 * 4096);
    expect([next(), next(), next(), next()]).toEqual([0, 8, 16, 0]);
  });

  it("random I/O stays inside the working set, block-aligned, and spreads over it", () => {
    const bs = 4096;
    const ws = 256 << 20;
    const next = offsets("rand", bs, ws);
    const seen = new Set<number>();
    let misplaced = 0;
    for (let i = 0; i < 20000; i++) {
      const s = next();
      if (s % (bs / 512) !== 0 || s < 0 || s * 512 + bs > ws) misplaced++;
      seen.add(s);
    }
    expect(misplaced).toBe(0);
    // 20000 draws over 65536 blocks: a uniform source repeats about 14%; a degenerate one far more.
    expect(seen.size).toBeGreaterThan(16000);
  });

  it("the same seed gives the path and its baseline the same sequence", () => {
    const a = offsets("rand", 512, 1 << 20);
    const b = offsets("rand", 512, 1 << 20);
    for (let i = 0; i < 100; i++) expect(a()).toBe(b());
  });
});

describe("matrix", () => {
  it("never asks IDE for more than one command in flight or PV for more than its ring", () => {
    for (const quick of [true, false]) {
      const cells = buildMatrix({ quick, direct: true });
      for (const c of cells) expect(c.workload.qd).toBeLessThanOrEqual(c.path.maxQd);
      expect(cells.some((c) => c.path.family === "ide")).toBe(true);
      expect(cells.some((c) => c.cache === "cold")).toBe(true);
    }
  });

  it("has a same-run baseline for every workload it measures", () => {
    const cells = buildMatrix({ quick: false, direct: true });
    const key = (c: CellSpec) =>
      `${c.cache} ${c.workload.op} ${c.workload.pattern} ${c.workload.blockSize} ${c.workload.qd}`;
    const base = new Set(cells.filter((c) => c.path.family === "baseline").map(key));
    for (const c of cells) expect(base.has(key(c)), key(c)).toBe(true);
  });

  it("drops O_DIRECT cells where the file system refuses O_DIRECT", () => {
    expect(buildMatrix({ quick: false, direct: false }).some((c) => c.cache === "cold")).toBe(false);
  });
});

describe("cells and rows", () => {
  it("a measured row has counts, a baseline ratio and survives the JSON round trip", async () => {
    const o = {
      image,
      workingSet: image.bytes,
      repeats: 2,
      budgetMs: 5,
      warmupMs: 1,
      warmupOps: 1,
      warmupMaxMs: 1,
    };
    const w = { op: "read" as const, pattern: "rand" as const, blockSize: 4096, qd: 1 };
    const base = await runCell({ path: pathSpec("fs-sync", null), workload: w, cache: "warm" }, o);
    const dma = await runCell({ path: pathSpec("dma", "sync"), workload: w, cache: "warm" }, o);
    const rows = [base, dma];
    attachBaselines(rows);
    expect(dma.status).toBe("ok");
    expect(dma.baseline).toBe("fs-sync");
    expect(dma.ratio).toBeCloseTo(dma.iops.median / base.iops.median, 10);
    expect(dma.opsPerRepeat).toHaveLength(2);
    expect(dma.exitsPerIo).toBe(16);
    expect(dma.exitsPerMiB).toBe(16 * 256);
    expect(dma.cyclesPerIo).toBeGreaterThan(0);
    expect(dma.warm?.bytes).toBe(image.bytes);
    expect(dma.storagePerIo).toBe(1);
    expect(base.exitsPerIo).toBe(0);
    // A whole bench result around the rows (parseBench refuses one missing what the report reads).
    const doc = {
      schema: "xenide-bench/1",
      startedAt: "2026-01-01T00:00:00.000Z",
      finishedAt: "2026-01-01T00:01:00.000Z",
      quick: true,
      machine: { cpu: "test", cores: 2 },
      image: { path: image.path, bytes: image.bytes, workingSetBytes: image.bytes, directSupported: false },
      settings: { repeats: 2, budgetMs: 5 },
      modelGHz: 3,
      rows,
      dispatch: null,
      rss: null,
      qtest: null,
      targets: checkTargets({ rows, dispatch: null, rss: null, qtest: null }),
      unavailable: [],
      costs: [],
      checks: [],
    };
    const back = parseBench(JSON.stringify(doc));
    expect(back.rows[1]!.exitsPerIo).toBe(16);
  });

  it("the data check catches a path that does not store what it is given", async () => {
    // The null disk acknowledges writes and returns nothing: reading back must not match.
    const bad = await verifyPath(pathSpec("pv", "sync", "null"), image, 0);
    expect(bad.ok).toBe(false);
    const good = await verifyPath(pathSpec("pv", "async", "raw"), image, 64);
    expect(good.ok, good.note).toBe(true);
  });
});

describe("targets", () => {
  const cell = (
    p: string,
    engine: "sync" | "async" | null,
    w: Partial<CellSpec["workload"]>,
    cache: "warm" | "cold" = "warm",
  ) => {
    const [variant, , backend] = p.split("/");
    const spec = engine
      ? pathSpec(
          (variant!.startsWith("ide-") ? variant!.slice(4) : variant) as never,
          engine,
          (backend ?? "raw") as never,
        )
      : pathSpec(p as never, null);
    return {
      path: spec,
      workload: { op: "read", pattern: "rand", blockSize: 4096, qd: 1, ...w },
      cache,
    } as CellSpec;
  };
  const row = (c: CellSpec, iops: number): Row => ({
    ...emptyRow(c, "ok", ""),
    iops: { median: iops, min: iops, max: iops },
  });

  it("compares rows of the same run and says by how much a target is missed", () => {
    const rows = [
      row(cell("fs-sync", null, {}), 100),
      row(cell("pv/sync/raw", "sync", {}), 95),
      row(cell("fs-sync", null, { pattern: "seq", blockSize: 65536 }), 100),
      row(cell("pv/sync/raw", "sync", { pattern: "seq", blockSize: 65536 }), 45),
    ];
    const t = checkTargets({ rows, dispatch: null, rss: null, qtest: null });
    const pv4 = t.find((x) => x.id === "pv-4k-random")!;
    expect(pv4.met).toBe(true);
    expect(pv4.measured).toBeCloseTo(0.95);
    const pv64 = t.find((x) => x.id === "pv-64k-seq")!;
    expect(pv64.met).toBe(false);
    expect(pv64.detail).toMatch(/missed by 50%/);
    // Rows that did not run are "not measured", never met.
    const dma = t.find((x) => x.id === "ide-dma-64k")!;
    expect(dma.met).toBeNull();
    expect(t.find((x) => x.id === "pv-stream-rss")!.met).toBeNull();
  });

  it("checks the memory target as an upper bound", () => {
    const rss = {
      status: "ok" as const,
      bytesStreamed: 4 * 2 ** 30,
      seconds: 2,
      maxRssMiB: 120,
      startRssMiB: 80,
    };
    const t = checkTargets({ rows: [], dispatch: null, rss, qtest: null }).find(
      (x) => x.id === "pv-stream-rss",
    )!;
    expect(t.met).toBe(true);
    const t2 = checkTargets({ rows: [], dispatch: null, rss: { ...rss, maxRssMiB: 300 }, qtest: null }).find(
      (x) => x.id === "pv-stream-rss",
    )!;
    expect(t2.met).toBe(false);
    // The qcow2 stream has its own verdict, only when it was part of the run.
    expect(checkTargets({ rows: [], dispatch: null, rss, qtest: null }).map((x) => x.id)).not.toContain(
      "pv-stream-rss-qcow2",
    );
    const q = checkTargets({
      rows: [],
      dispatch: null,
      rss,
      rssQcow2: { ...rss, format: "qcow2", maxRssMiB: 151 },
      qtest: null,
    }).find((x) => x.id === "pv-stream-rss-qcow2")!;
    expect(q.met).toBe(false);
  });
});
