/**
 * CI form of the CLI fuzzing: 10,000 random argument vectors in process (test/support/fuzz/cli-args.ts), and 80
 * random commands run as child processes on scratch trees of random existing files
 * (test/support/fuzz/cli-files.ts), each with a fixed seed (printed; FUZZ_SEED overrides).
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliWorld, cliArgsProperty, cliFixtures, preloadCommands } from "../support/fuzz/cli-args.ts";
import { type CliBundle, CliFilesWorld, buildCliBundle, runCliFiles } from "../support/fuzz/cli-files.ts";
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
  const world = new CliWorld(cliFixtures(dir), { filesEvery: 0 });
  const run = await runSurface("cli-args", cliArgsProperty(world), { numRuns: 10_000, seed: ciSeed() });
  expect(run.cases).toBe(10_000);
  console.log(`cli-args: ${JSON.stringify(world.stats)}`);
  expect(world.stats.ok).toBeGreaterThan(200);
  expect(world.stats.refused).toBeGreaterThan(5_000);
}, 150_000);

it("--trace to a directory is a one-line error, not an unhandled stream error", async () => {
  await preloadCommands();
  const f = cliFixtures(join(dir, "trace"));
  const world = new CliWorld(f, { filesEvery: 0 });
  // Found by the fuzzer: the trace file was opened lazily by a write stream whose 'error' event nobody handled.
  await world.run(["identify", f.img!, "--trace", f.dir!]);
  await world.run(["read", f.img!, "--lba", "0", "--trace", f.nested!]);
  expect(world.stats.refused).toBe(2);
});

it("a block size the drive refuses for READ MULTIPLE is a one-line error, not an internal error", async () => {
  await preloadCommands();
  const f = cliFixtures(join(dir, "multiple"));
  const world = new CliWorld(f, { filesEvery: 0 });
  // Found by the long fuzzing run: SET MULTIPLE MODE 5 is aborted by the drive (not a power of two, ATA/ATAPI-6
  // §8.39) and the AtaError escaped runCli as "internal error" with a stack trace.
  await world.run(["read", "--multiple", "5", "--lba", "0", f.img!]);
  await world.run(["write", "--multiple", "64", "--lba", "0", "-i", f.input!, f.img!]);
  expect(world.stats.refused).toBe(2);
  await world.run(["read", "--multiple", "4", "--lba", "0", "--count", "8", f.img!]);
  expect(world.stats.ok).toBe(1);
});

describe("commands on random existing files", () => {
  // The bundled CLI (as `npm run build` makes it, in a private directory): a child per case, so every case
  // starts a process, and a bundle starts in about half the time the TypeScript sources take through tsx.
  let bundle: CliBundle | null = null;
  beforeAll(async () => {
    // cliFixtures(dir) above removes and remakes the directory this process runs in: enter the new one.
    process.chdir(dir);
    bundle = await buildCliBundle();
  }, 120_000);
  afterAll(() => bundle?.dispose());

  const CASES = 80;
  it(`${CASES} random commands: nothing they were not asked to change changes, no stack, exit 0/1/2`, async () => {
    const base = join(dir, "files");
    mkdirSync(base, { recursive: true });
    // A failing case is shrunk for at most a minute (each step is a child process), then the smallest so far.
    const world = new CliFilesWorld(bundle!.path, { base, shrinkBudgetMs: 60_000 });
    const run = await runCliFiles(world, {
      numRuns: CASES,
      seed: ciSeed(),
      ...(process.env.FUZZ_PATH ? { path: process.env.FUZZ_PATH } : {}),
    });
    console.log(`cli-files: ${JSON.stringify(world.stats)}`);
    expect(run.cases).toBe(CASES);
    // Not vacuous: commands succeed, and some of them write what they were asked to.
    expect(world.stats.exit["0"] ?? 0).toBeGreaterThan(CASES / 20);
    expect(world.stats.wrote).toBeGreaterThan(1);
  }, 400_000);

  // Found by the property (shrunk by hand to one flag each). The tree: disk.img (256 KiB), in.bin (1 KiB),
  // out.bin, link.img -> disk.img, null.dev (a null character device), bad.json (a bench result with the right
  // schema and nothing in it), latest.json (one whose lists hold null), and the files every tree has.
  const found: [string, string[]][] = [
    // --trace opened its file with "w" before the image was opened: the image being read was truncated and
    // filled with the trace (identify then exited 0; read said the disk had 0 sectors).
    ["identify --trace over its image", ["identify", "{F}/disk.img", "--trace", "{F}/disk.img"]],
    ["read --trace over its image", ["read", "{F}/disk.img", "--lba", "0", "--trace", "{F}/disk.img"]],
    [
      "read --trace over a link to its image",
      ["read", "{F}/disk.img", "--lba", "0", "--trace", "{F}/link.img"],
    ],
    ["qtest --trace over its disk", ["qtest", "--disk", "{F}/disk.img", "--trace", "{F}/disk.img"]],
    [
      "write --trace over its input",
      ["write", "{F}/disk.img", "--lba", "0", "-i", "{F}/in.bin", "--trace", "{F}/in.bin"],
    ],
    // The trace truncated the image before write opened it: the sectors it was not asked to write were gone.
    [
      "write --trace over its image",
      ["write", "{F}/disk.img", "--lba", "0", "-i", "{F}/in.bin", "--trace", "{F}/disk.img"],
    ],
    // createImage opened FILE with "w", ftruncate failed on a device, and it then removed FILE: run as root,
    // `xenide mkimage /dev/null --size 1M --force` deleted /dev/null. (null.dev is a node of our own for the
    // null device, or a link to /dev/null where mknod is not allowed.)
    ["mkimage --force that fails removes the file", ["mkimage", "{F}/null.dev", "--size", "1M", "--force"]],
    // An input that is a character device: "is empty: nothing to write", then the stream and closeSync both
    // closed the descriptor: an unhandled 'error' event (EBADF) with a stack.
    ["write -i a character device", ["write", "{F}/disk.img", "--lba", "0", "-i", "{F}/null.dev"]],
    // listenUnix unlinked whatever was at the socket path, a regular file included, then listened.
    ["qtest --socket over a file", ["qtest", "--disk", "{F}/disk.img", "--socket", "{F}/out.bin"]],
    // parseBench checked the schema and that the lists were lists; renderReport then read fields of rows,
    // targets, machine that were not there: "internal error: TypeError" with a stack, exit 70.
    ["report of a hollow bench result", ["report", "{F}/bad.json", "--out", "{F}/rep"]],
    ["report of a bench result holding nulls", ["report", "{F}/latest.json", "--out", "{F}/rep"]],
  ];
  it.each(found)("found by the property: %s", async (_name, argv) => {
    const base = join(dir, "found");
    mkdirSync(base, { recursive: true });
    const world = new CliFilesWorld(bundle!.path, { base, survey: true, qtestTimeoutMs: 4000 });
    const has = { "in.bin": 1, "out.bin": 1, "bad.json": 1, "latest.json": 5, "link.img": 1, "null.dev": 1 };
    await world.run({ world: { disk: 262144, fill: 1, notes: 700, has }, argv, stdin: null });
    expect(world.failures.map((f) => f.message)).toEqual([]);
  });
});
