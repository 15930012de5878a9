/**
 * CI form of the IDE port-I/O fuzzing (test/fuzz/ide-ports.ts): 10,000 random port sequences, each followed by
 * a driver's reset and real I/O, fixed seed (FUZZ_SEED overrides; both printed).
 */
import { expect, it } from "vitest";
import { IdeWorld, idePortsProperty } from "../support/fuzz/ide-ports.ts";
import { ciSeed, runSurface } from "../support/fuzz/runner.ts";

it("the IDE model survives 10,000 random port sequences and then serves a driver correctly", async () => {
  const world = new IdeWorld();
  const run = await runSurface("ide-ports", idePortsProperty(world), {
    numRuns: 10_000,
    seed: ciSeed(),
    firstFailure: () => world.first.message,
  });
  expect(run.cases).toBe(10_000);
  const s = world.stats;
  console.log(`ide-ports: ${JSON.stringify(s)}`);
  expect(s.recoveries).toBe(10_000);
  // The sequences reach the command layer and the medium, not just the register file.
  expect(s.commandsAccepted).toBeGreaterThan(20_000);
  expect(s.writesChecked).toBeGreaterThan(10_000);
}, 150_000);
