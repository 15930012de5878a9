/**
 * CI form of the CLI argument fuzzing (test/fuzz/cli-args.ts): 10,000 random argument vectors, fixed seed.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { CliWorld, cliArgsProperty, cliFixtures, preloadCommands } from "../support/fuzz/cli-args.ts";
import { ciSeed, runSurface } from "../support/fuzz/runner.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-cli-fuzz-"));
// Relative paths the fuzzer tries ("-", "") must land in the scratch directory, never in the checkout.
const cwd = process.cwd();
beforeAll(() => process.chdir(dir));
afterAll(() => {
  process.chdir(cwd);
  rmSync(dir, { recursive: true, force: true });
});

it("10,000 random argument vectors: exit 0 or a one-line error, never a crash", async () => {
  await preloadCommands();
  const world = new CliWorld(cliFixtures(dir));
  const run = await runSurface("cli-args", cliArgsProperty(world), { numRuns: 10_000, seed: ciSeed() });
  expect(run.cases).toBe(10_000);
  console.log(`cli-args: ${JSON.stringify(world.stats)}`);
  expect(world.stats.ok).toBeGreaterThan(200);
  expect(world.stats.refused).toBeGreaterThan(5_000);
}, 150_000);

it("--trace to a directory is a one-line error, not an unhandled stream error", async () => {
  await preloadCommands();
  const f = cliFixtures(join(dir, "trace"));
  const world = new CliWorld(f);
  // Found by the fuzzer: the trace file was opened lazily by a write stream whose 'error' event nobody handled.
  await world.run(["identify", f.img!, "--trace", f.dir!]);
  await world.run(["read", f.img!, "--lba", "0", "--trace", f.nested!]);
  expect(world.stats.refused).toBe(2);
});

it("a block size the drive refuses for READ MULTIPLE is a one-line error, not an internal error", async () => {
  await preloadCommands();
  const f = cliFixtures(join(dir, "multiple"));
  const world = new CliWorld(f);
  // Found by the long fuzzing run: SET MULTIPLE MODE 5 is aborted by the drive (not a power of two, ATA/ATAPI-6
  // §8.39) and the AtaError escaped runCli as "internal error" with a stack trace.
  await world.run(["read", "--multiple", "5", "--lba", "0", f.img!]);
  await world.run(["write", "--multiple", "64", "--lba", "0", "-i", f.input!, f.img!]);
  expect(world.stats.refused).toBe(2);
  await world.run(["read", "--multiple", "4", "--lba", "0", "--count", "8", f.img!]);
  expect(world.stats.ok).toBe(1);
});
