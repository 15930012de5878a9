/**
 * Frontend and backend on separate worker threads over one shared guest memory, the ring's Atomics barriers
 * and an Atomics event channel: random sizes, random completion order, random notify timing. The CI version
 * pushes 50,000 + 20,000 requests through a ring-level backend and 10,000 through blkback's data path;
 * `npm run stress:pv` pushes a million (scripts/pv-stress.ts).
 *
 * What would fail: a lost or duplicated request (the backend checks sequence numbers in ring order), a lost,
 * duplicated or misdirected response (the frontend matches slot, sequence number and operation), corrupted data
 * (per-sector stamps checked by the backend on writes, by the frontend on reads, and over the whole disk at the
 * end), a lost notification (a side that sleeps past a timeout with work on the ring), a stall, and (with
 * grants) a backend that answers before it has unmapped the request's pages.
 */
import { describe, expect, it } from "vitest";
import { runRingStress, type StressReport } from "../support/xenblk/worker-stress.ts";

function expectClean(r: StressReport): void {
  expect(r.frontend.errors).toEqual([]);
  expect(r.backend.errors).toEqual([]);
  expect(r.frontend.ok).toBe(true);
  expect(r.backend.ok).toBe(true);
  const n = r.config.requests;
  // Every request seen once by the backend and answered once; every answer consumed once by the frontend.
  expect([r.frontend.issued, r.frontend.completed, r.backend.issued, r.backend.completed]).toEqual([
    n,
    n,
    n,
    n,
  ]);
  expect(r.backend.reads).toBe(r.frontend.reads);
  expect(r.backend.writes).toBe(r.frontend.writes);
  expect(r.backend.flushes).toBe(r.frontend.flushes);
  expect(r.diskMismatches).toBe(0);
  // The run really exercised what it claims: out-of-order completion, both kinds of data, several sizes.
  expect(r.frontend.reordered).toBeGreaterThan(n / 4);
  expect(r.frontend.reads).toBeGreaterThan(n / 4);
  expect(r.frontend.writes).toBeGreaterThan(n / 4);
  expect(r.frontend.sectors / n).toBeGreaterThan(20);
  if (r.toBackend && r.toFrontend) {
    expect(r.backend.sectors).toBe(r.frontend.sectors);
    // Sends are exactly the pushes whose event-index check asked for one, plus the frontend's final stop kick.
    expect(r.toBackend.sends).toBe(r.frontend.notifies + 1);
    expect(r.toFrontend.sends).toBe(r.backend.notifies);
    // Event indices and the sleep flag keep wake-ups below one per request (both ways together).
    expect(r.toBackend.wakeups + r.toFrontend.wakeups).toBeLessThan(n);
  } else {
    // blkback considers a kick per completion, filtered by rsp_event: never more kicks than responses.
    expect(r.backend.notifies).toBeGreaterThan(0);
    expect(r.backend.notifies).toBeLessThanOrEqual(r.backend.completed);
  }
}

describe("blkif ring across worker threads", () => {
  it("x86_64-abi, 4-page ring, 50,000 requests crossing 2^32, every page granted, mapped and revoked", async () => {
    const r = await runRingStress({
      requests: 50_000,
      abi: "x86_64-abi",
      ringPages: 4,
      seed: 7,
      grants: true,
    });
    expectClean(r);
  }, 60_000);

  it("x86_32-abi, 1-page ring, 20,000 requests, ring transport only (grant refs are frame numbers)", async () => {
    const r = await runRingStress({
      requests: 20_000,
      abi: "x86_32-abi",
      ringPages: 1,
      seed: 11,
      grants: false,
    });
    expectClean(r);
  }, 60_000);

  it("blkback's data path on the backend worker, x86_64-abi, 2-page ring, 20,000 requests completed out of order", async () => {
    const r = await runRingStress({
      requests: 20_000,
      abi: "x86_64-abi",
      ringPages: 2,
      seed: 5,
      backend: "blkback",
    });
    expectClean(r);
  }, 60_000);
});
