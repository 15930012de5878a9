// Fault injection: the error paths device models must take (bad sector → ATA ERR with its LBA, BLKIF_RSP_ERROR).
import { describe, expect, it } from "vitest";

import { AsyncEngine, SyncEngine } from "../../src/storage/engine.ts";
import { FaultInjectingBackend } from "../../src/storage/fault.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { NullBackend } from "../../src/storage/null.ts";
import { type IoCompletion, type IoEngine, SECTOR_SIZE } from "../../src/storage/types.ts";
import { pattern, run } from "./helpers.ts";

const S = SECTOR_SIZE;

function setup(kind: "sync" | "async") {
  const mem = new MemoryBackend(pattern(64 * S, 1).slice());
  const fault = new FaultInjectingBackend(mem);
  const engine: IoEngine = kind === "sync" ? new SyncEngine(fault) : new AsyncEngine(fault);
  return { mem, fault, engine };
}

for (const kind of ["sync", "async"] as const) {
  describe(`fault injection through the ${kind} engine`, () => {
    it("a read failing at sector 5 transfers sectors before it and reports 5", async () => {
      const { fault, engine } = setup(kind);
      fault.addRule({ op: "read", from: 5, to: 8 });
      const buf = new Uint8Array(10 * S).fill(0xee);
      const c = await run(engine, { op: "read", tag: 1, sector: 0, bufs: [buf] });
      expect(c.error?.code).toBe("EIO");
      expect(c.error?.sector).toBe(5);
      expect(buf.subarray(0, 5 * S)).toEqual(pattern(64 * S, 1).subarray(0, 5 * S));
      expect(buf.subarray(5 * S).every((b) => b === 0xee)).toBe(true);
      expect(fault.injected.read).toBe(1);
    });

    it("requests outside the faulty range succeed; one starting inside fails at its own start", async () => {
      const { fault, engine } = setup(kind);
      fault.addRule({ op: "read", from: 5, to: 8 });
      expect(
        (await run(engine, { op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(5 * S)] })).error,
      ).toBeUndefined();
      expect(
        (await run(engine, { op: "read", tag: 2, sector: 8, bufs: [new Uint8Array(4 * S)] })).error,
      ).toBeUndefined();
      const c = await run(engine, { op: "read", tag: 3, sector: 7, bufs: [new Uint8Array(2 * S)] });
      expect(c.error?.sector).toBe(7);
      expect(fault.injected.read).toBe(1);
    });

    it("a write failing at sector 12 writes 10..11 only, and reports 12", async () => {
      const { mem, fault, engine } = setup(kind);
      fault.addRule({ op: "write", from: 12, code: "ENOSPC" });
      const before = mem.data.slice();
      const data = pattern(4 * S, 9);
      const c = await run(engine, { op: "write", tag: 1, sector: 10, bufs: [data] });
      expect(c.error?.code).toBe("ENOSPC");
      expect(c.error?.sector).toBe(12);
      expect(mem.data.subarray(10 * S, 12 * S)).toEqual(data.subarray(0, 2 * S));
      expect(mem.data.subarray(12 * S, 14 * S)).toEqual(before.subarray(12 * S, 14 * S));
    });

    it("scatter-gather: a fault in the second buffer completes the first", async () => {
      const { mem, fault, engine } = setup(kind);
      fault.addRule({ op: "write", from: 22, to: 23 });
      const a = pattern(2 * S, 4);
      const b = pattern(2 * S, 5);
      const c = await run(engine, { op: "write", tag: 1, sector: 20, bufs: [a, b] });
      expect(c.error?.sector).toBe(22);
      expect(mem.data.subarray(20 * S, 22 * S)).toEqual(a);
      expect(mem.data.subarray(22 * S, 24 * S)).toEqual(pattern(64 * S, 1).subarray(22 * S, 24 * S));
    });

    it("fails flushes and discards", async () => {
      const { mem, fault, engine } = setup(kind);
      fault.addRule({ op: "flush" });
      fault.addRule({ op: "discard", from: 33 });
      expect((await run(engine, { op: "flush", tag: 1, sector: 0 })).error?.code).toBe("EIO");
      const d = await run(engine, { op: "discard", tag: 2, sector: 30, count: 6 });
      expect(d.error?.sector).toBe(33);
      expect(mem.data.subarray(30 * S, 33 * S).every((x) => x === 0)).toBe(true);
      expect(mem.data.subarray(33 * S, 36 * S)).toEqual(pattern(64 * S, 1).subarray(33 * S, 36 * S));
      expect(fault.injected).toEqual({ read: 0, write: 0, flush: 1, discard: 1 });
      expect(fault.injectedTotal).toBe(2);
    });

    it("`times` disarms a rule after that many faults", async () => {
      const { fault, engine } = setup(kind);
      const rule = fault.addRule({ op: "read", times: 2 });
      const one = () => run(engine, { op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(S)] });
      expect((await one()).error?.code).toBe("EIO");
      expect((await one()).error?.code).toBe("EIO");
      expect((await one()).error).toBeUndefined();
      expect(rule.fired).toBe(2);
      expect(fault.rules).toEqual([]);
      expect(fault.injected.read).toBe(2);
    });

    it("rules can be added and cleared at run time", async () => {
      const { fault, engine } = setup(kind);
      const one = () => run(engine, { op: "write", tag: 1, sector: 3, bufs: [new Uint8Array(S)] });
      expect((await one()).error).toBeUndefined();
      const r = fault.addRule({ op: "write" });
      expect((await one()).error?.code).toBe("EIO");
      fault.removeRule(r);
      expect((await one()).error).toBeUndefined();
      fault.addRule({ op: "write", code: "EROFS" });
      fault.addRule({ op: "write", code: "EIO", from: 3 });
      expect((await one()).error?.code).toBe("EROFS");
      fault.clearRules();
      expect((await one()).error).toBeUndefined();
    });

    it("a latency-only rule delays without failing", async () => {
      const { fault, engine } = setup(kind);
      fault.addRule({ op: "read", latencyMs: 30 });
      const t0 = performance.now();
      const c = await run(engine, { op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(S)] });
      expect(c.error).toBeUndefined();
      expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
      expect(fault.delayed).toBe(1);
      expect(fault.injectedTotal).toBe(0);
    });
  });
}

describe("fault injection with latency on the async engine", () => {
  it("keeps exactly one completion per request, none lost or duplicated", async () => {
    const { fault, engine } = setup("async");
    fault.addRule({ op: "read", from: 0, to: 16, latencyMs: 15 });
    fault.addRule({ op: "read", from: 16, to: 24, latencyMs: 5, code: "EIO" });
    fault.addRule({ op: "write", from: 40, to: 48, latencyMs: 10, code: "EIO", times: 3 });
    const seen = new Map<number, IoCompletion>();
    let dup = 0;
    engine.onReady = () => {
      const out: IoCompletion[] = [];
      engine.reap(out);
      for (const c of out) {
        if (seen.has(c.tag)) dup++;
        seen.set(c.tag, c);
      }
    };
    const N = 64;
    for (let i = 0; i < N; i++) {
      const sector = i % 64;
      const op = i % 2 === 0 ? "read" : "write";
      engine.submit({ op, tag: i, sector, bufs: [new Uint8Array(S)] });
    }
    await engine.drain();
    await new Promise((r) => setTimeout(r, 0));
    expect(dup).toBe(0);
    expect(seen.size).toBe(N);
    for (let i = 0; i < N; i++) {
      const sector = i % 64;
      const isRead = i % 2 === 0;
      const shouldFail = isRead ? sector >= 16 && sector < 24 : sector >= 40 && sector < 48;
      if (!shouldFail) expect(seen.get(i)!.error, `tag ${i}`).toBeUndefined();
    }
    // 4 reads in [16,24) fail every time; the write rule fires at most 3 times.
    expect(fault.injected.read).toBe(4);
    expect(fault.injected.write).toBe(3);
    const failed = [...seen.values()].filter((c) => c.error).length;
    expect(failed).toBe(7);
  });
});

describe("NullBackend", () => {
  it("completes everything without touching buffers", async () => {
    const nb = new NullBackend(1000);
    for (const engine of [new SyncEngine(nb), new AsyncEngine(nb)]) {
      const buf = new Uint8Array(S).fill(0x5a);
      expect((await run(engine, { op: "read", tag: 1, sector: 999, bufs: [buf] })).error).toBeUndefined();
      expect(buf.every((b) => b === 0x5a)).toBe(true);
      expect((await run(engine, { op: "write", tag: 2, sector: 0, bufs: [buf] })).error).toBeUndefined();
      expect((await run(engine, { op: "flush", tag: 3, sector: 0 })).error).toBeUndefined();
      expect((await run(engine, { op: "discard", tag: 4, sector: 0, count: 1000 })).error).toBeUndefined();
      expect((await run(engine, { op: "read", tag: 5, sector: 1000, bufs: [buf] })).error?.code).toBe(
        "ERANGE",
      );
    }
  });
});
