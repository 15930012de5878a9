/**
 * CI form of the soak (test/soak/soak.ts; `npm run soak` runs a million requests): 20,000 mixed requests over
 * PV and IDE with random faults, every sector checked against the shadow copy.
 */
import { expect, it } from "vitest";
import { runSoak } from "../support/soak/soak.ts";

it("20,000 mixed PV and IDE requests with random faults: nothing lost, duplicated or corrupted", async () => {
  const seed = 0x50a4;
  console.log(`soak: seed ${seed}`);
  const r = await runSoak({ requests: 20_000, seed });
  console.log(`soak: ${JSON.stringify(r)}`);
  expect(r.requests).toBe(20_000);
  expect(r.lost).toBe(0);
  expect(r.duplicated).toBe(0);
  expect(r.corrupted).toBe(0);
  // The run did what it claims: faults fired and were reported as errors, and data was read back and checked.
  expect(r.faultsInjected).toBeGreaterThan(10);
  expect(r.failedAsExpected).toBeGreaterThanOrEqual(r.faultsInjected);
  expect(r.sectorsChecked).toBeGreaterThan(100_000);
}, 120_000);
