/**
 * CI form of the PV ring fuzzing (test/fuzz/pv-ring.ts): 10,000 random batches, raw slots and overruns against
 * eight connected frontends of domain 1, each host also running an honest domain 2 (test/fuzz/pv-peer.ts) whose
 * I/O must complete intact; fixed seed (FUZZ_SEED overrides; both printed).
 */
import { expect, it } from "vitest";
import { PvRingWorld, pvRingProperty } from "../support/fuzz/pv-ring.ts";
import { ciSeed, runSurface } from "../support/fuzz/runner.ts";

it("blkback survives 10,000 malicious ring batches with Linux's statuses and no stray memory access", async () => {
  const world = new PvRingWorld();
  const run = await runSurface("pv-ring", pvRingProperty(world), {
    numRuns: 10_000,
    seed: ciSeed(),
    firstFailure: () => world.first.message,
  });
  expect(run.cases).toBe(10_000);
  // The generators reach every outcome and every kind of case.
  const s = world.stats;
  console.log(`pv-ring: ${JSON.stringify(s)}`);
  expect(s.okay).toBeGreaterThan(1000);
  expect(s.error).toBeGreaterThan(1000);
  expect(s.eopnotsupp).toBeGreaterThan(50);
  expect(s.ringsHalted).toBeGreaterThan(10);
  expect(s.rawSlots).toBeGreaterThan(500);
  expect(s.scribbled).toBeGreaterThan(100);
  // The honest domain 2 on the same host did real I/O all along, checked round by round.
  expect(s.peerRounds).toBeGreaterThan(2000);
}, 120_000);
