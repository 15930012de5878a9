/**
 * CI form of the qtest protocol fuzzing (test/fuzz/qtest-lines.ts), plus the limits a random line is unlikely to
 * reach.
 */
import { expect, it } from "vitest";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { QTEST_MAX_HEX_READ, QTEST_MAX_LEN, QtestServer } from "../../src/qtest/server.ts";
import { QtestWorld, qtestLinesProperty } from "../support/fuzz/qtest-lines.ts";
import { ciSeed, runSurface } from "../support/fuzz/runner.ts";

it("10,000 random qtest chunks each get one OK/FAIL/ERR line per request", async () => {
  const world = new QtestWorld();
  const run = await runSurface("qtest-lines", qtestLinesProperty(world), { numRuns: 10_000, seed: ciSeed() });
  expect(run.cases).toBe(10_000);
  const s = world.stats;
  console.log(`qtest-lines: ${JSON.stringify(s)}`);
  expect(s.ok).toBeGreaterThan(5_000);
  expect(s.fail).toBeGreaterThan(5_000);
}, 150_000);

it("a hex read too long for one reply line is refused with FAIL, not an exception", () => {
  const hv = new Hypervisor({ ramSize: 1 << 20 });
  const s = new QtestServer({ hv, vcpu: hv.vcpu(0) });
  // "OK 0x" + two characters per byte: at QTEST_MAX_LEN (256 MiB) the reply would pass V8's longest string
  // (2^29 - 24 characters), and building it threw out of the server.
  expect(s.execute(`read 0 0x${QTEST_MAX_LEN.toString(16)}`)).toMatch(/^FAIL .*too large/);
  expect(s.execute(`read 0 0x${(QTEST_MAX_HEX_READ + 1).toString(16)}`)).toMatch(/^FAIL .*too large/);
  expect(s.execute(`read 0 0x${(QTEST_MAX_LEN + 1).toString(16)}`)).toMatch(/^FAIL /);
});
