import { describe, expect, it } from "vitest";

import { pathSpec } from "../../src/bench/paths.ts";
import { currentLibuv, floorProbes, usesIoUring } from "../../src/bench/probes.ts";
import { emptyRow } from "../../src/bench/runner.ts";
import { checkTargets } from "../../src/bench/targets.ts";
import { machineLine } from "../../src/bench/table.ts";
import type { Row } from "../../src/bench/types.ts";
import { benchResult } from "../support/bench/result.ts";

/** A measured O_DIRECT 4 KiB random-read row of `path` at depth `qd` with `iops`. */
function cold(p: ReturnType<typeof pathSpec>, qd: number, iops: number): Row {
  return {
    ...emptyRow(
      { path: p, workload: { op: "read", pattern: "rand", blockSize: 4096, qd }, cache: "cold" },
      "ok",
      "",
    ),
    iops: { median: iops, min: iops, max: iops },
  };
}

const rows = [
  cold(pathSpec("fs-sync", null), 1, 10_000),
  cold(pathSpec("fs-libuv", null), 32, 21_000),
  cold(pathSpec("pv", "sync"), 32, 9_500),
  cold(pathSpec("pv", "async"), 32, 19_950),
];

describe("the floor of the async target", () => {
  it("is libuv at QD32 against readSync at QD1 on the same O_DIRECT file, beside the measured ratio", () => {
    const f = floorProbes(rows).find((p) => p.id === "floor-pv-async")!;
    expect(f.measured.floorRatio).toBeCloseTo(2.1);
    expect(f.measured.ratio).toBeCloseTo(2.1); // 19,950 / 9,500
    expect(f.measured.asyncOfLibuv).toBeCloseTo(0.95);
    expect(f.measured.syncOfReadSync).toBeCloseTo(0.95);
    expect(f.verdict).toMatch(/a floor of 2\.10x \(below the 3x target/);
    expect(f.verdict).toMatch(/libuv: (io_uring|thread pool, io_uring off); pool of /);
    expect(f.verdict).toMatch(/async engine is at the floor/);
  });

  it("says how far below the floor the async engine is when it is", () => {
    const slow = [...rows.slice(0, 3), cold(pathSpec("pv", "async"), 32, 14_700)];
    const f = floorProbes(slow).find((p) => p.id === "floor-pv-async")!;
    expect(f.measured.asyncOfLibuv).toBeCloseTo(0.7);
    expect(f.verdict).toMatch(/30% below the floor/);
  });

  it("states the floor alone when the PV rows did not run, and nothing without the baselines", () => {
    const f = floorProbes(rows.slice(0, 2)).find((p) => p.id === "floor-pv-async")!;
    expect(f.measured.ratio).toBeUndefined();
    expect(f.verdict).toMatch(/a floor of 2\.10x/);
    expect(floorProbes(rows.slice(1)).find((p) => p.id === "floor-pv-async")).toBeUndefined();
  });

  it("prints the floor in the target's line", () => {
    const t = checkTargets({ rows, dispatch: null, rss: null, qtest: null } as never).find(
      (x) => x.id === "pv-async-vs-sync",
    )!;
    expect(t.measured).toBeCloseTo(2.1);
    expect(t.met).toBe(false);
    expect(t.detail).toMatch(/floor 2\.10x \(fs-libuv QD32 vs fs-sync QD1, cold\)/);
  });
});

describe("libuv's configuration in the async floor's verdict", () => {
  it("is the run's, as its machine line records it, not the environment of whoever derives the verdict", () => {
    const f = (pool: number, ioUring: boolean) =>
      floorProbes(rows, [], { pool, ioUring }).find((p) => p.id === "floor-pv-async")!.verdict;
    expect(f(16, false)).toContain("(libuv: thread pool, io_uring off; pool of 16 threads)");
    expect(f(4, true)).toContain("(libuv: io_uring; pool of 4 threads)");
  });

  it("reads UV_THREADPOOL_SIZE as libuv does", () => {
    expect(currentLibuv({}).pool).toBe(4);
    expect(currentLibuv({ UV_THREADPOOL_SIZE: "16" }).pool).toBe(16);
    expect(currentLibuv({ UV_THREADPOOL_SIZE: "0" }).pool).toBe(1);
    expect(currentLibuv({ UV_THREADPOOL_SIZE: "many" }).pool).toBe(1);
    expect(currentLibuv({ UV_THREADPOOL_SIZE: "5000" }).pool).toBe(1024);
    expect(currentLibuv({ UV_THREADPOOL_SIZE: "-3" }).pool).toBe(1024);
    expect(currentLibuv({ UV_USE_IO_URING: "1" }).ioUring).toBe(true);
  });
});

describe("io_uring", () => {
  it("is on only when the process started with UV_USE_IO_URING set to a non-zero number", () => {
    expect(usesIoUring({})).toBe(false);
    expect(usesIoUring({ UV_USE_IO_URING: "0" })).toBe(false);
    expect(usesIoUring({ UV_USE_IO_URING: "" })).toBe(false);
    expect(usesIoUring({ UV_USE_IO_URING: "1" })).toBe(true);
  });

  it("the bench's machine line says when file I/O ran on io_uring", () => {
    const res = benchResult({ rows: [], dispatch: null, rss: null, qtest: null }, { quick: true });
    const line = (uvIoUring?: boolean) => machineLine({ ...res, machine: { ...res.machine, uvIoUring } });
    expect(line(true)).toContain("libuv pool 16, file I/O on io_uring");
    expect(line(false)).not.toContain("io_uring");
    expect(line(undefined)).not.toContain("io_uring");
  });
});
