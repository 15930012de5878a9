import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";

import { measureDispatch } from "../../src/bench/dispatch.ts";
import { streamProbe } from "../../src/bench/rss.ts";
import { runCli } from "../../src/cli/main.ts";

describe("probes", () => {
  it("streams a sparse image through PV and reports every byte and the peak RSS", async () => {
    const r = await streamProbe(16 << 20);
    expect(r.status).toBe("ok");
    expect(r.bytesStreamed).toBe(16 << 20);
    expect(r.maxRssMiB).toBeGreaterThanOrEqual(r.startRssMiB);
  });

  it("streams an empty qcow2 image through PV the same way (every read through its L1/L2 lookups)", async () => {
    const r = await streamProbe(16 << 20, undefined, "qcow2");
    expect(r).toMatchObject({ status: "ok", format: "qcow2", bytesStreamed: 16 << 20 });
  });

  it("measures the port-exit rate through the ioreq path and straight on the bus", () => {
    const d = measureDispatch(1, 5);
    expect(d.ioreqExitsPerSec.median).toBeGreaterThan(0);
    expect(d.bareDispatchPerSec.median).toBeGreaterThan(0);
  });
});

describe("report command", () => {
  it("fails with one line when the bench result is missing or not one", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-report-cli-"));
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await runCli(["report", path.join(dir, "missing.json"), "--out", dir])).toBe(1);
      fs.writeFileSync(path.join(dir, "x.json"), JSON.stringify({ schema: "nope" }));
      expect(await runCli(["report", path.join(dir, "x.json"), "--out", dir])).toBe(1);
    } finally {
      process.stderr.write = write;
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(err[0]).toMatch(/cannot read .*missing\.json/);
    expect(err[1]).toMatch(/not a bench result/);
    expect(err.every((l) => l.split("\n").filter(Boolean).length === 1)).toBe(true);
  });
});
