/**
 * Property: any argument vector for the CLI's disk commands (known and unknown commands and flags, missing and
 * repeated values, numbers that are negative, huge, hex, fractional or text, paths that are missing, directories,
 * odd-sized files, locked or valid images) ends with exit code 0, or with a non-zero code and a short message on
 * stderr: no stack trace, no internal error, never an exception out of `runCli`.
 *
 * Commands that serve stdin or run for seconds (qtest, bench, demo, vm, report) are left out here; the second
 * property (./cli-files.ts) runs every command as a child process on a scratch tree of random existing files and
 * checks that nothing it was not asked to change changes. The long run (scripts/fuzz.ts --surface cli-args) mixes
 * one such case into every `filesEvery` argument vectors (default 2,000); the CI test runs the two apart.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import fc from "fast-check";
import { commandModules } from "../../../src/cli/commands/index.ts";
import { runCli } from "../../../src/cli/main.ts";
import {
  type CliBundle,
  CliFilesWorld,
  type FilesCase,
  buildCliBundle,
  cliFilesCaseArb,
} from "./cli-files.ts";

/**
 * Load every command module once and hand the same module objects to each run: `runCli` still builds a fresh
 * program per argv, without a round trip through the module loader for each lazy import.
 */
export async function preloadCommands(): Promise<void> {
  for (const [i, load] of commandModules.entries()) {
    const mod = await load();
    commandModules[i] = () => Promise.resolve(mod);
  }
}

export function cliFixtures(dir: string): Record<string, string> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const f = {
    img: join(dir, "disk.img"),
    small: join(dir, "small.img"),
    odd: join(dir, "odd.img"),
    empty: join(dir, "empty.img"),
    input: join(dir, "in.bin"),
    oddInput: join(dir, "odd.bin"),
    dir: join(dir, "adir"),
    missing: join(dir, "missing.img"),
    out: join(dir, "out.bin"),
    trace: join(dir, "trace.jsonl"),
    fresh: join(dir, "fresh.img"),
    nested: join(dir, "no", "such", "dir.img"),
  };
  writeFileSync(f.img, Buffer.alloc(256 * 1024, 0x5a));
  writeFileSync(f.small, Buffer.alloc(512, 1));
  writeFileSync(f.odd, Buffer.alloc(1000, 2));
  writeFileSync(f.empty, Buffer.alloc(0));
  writeFileSync(f.input, Buffer.alloc(1024, 3));
  writeFileSync(f.oddInput, Buffer.alloc(700, 4));
  mkdirSync(f.dir);
  return f;
}

export function cliArgvArb(f: Record<string, string>): fc.Arbitrary<string[]> {
  const path = fc.constantFrom(
    f.img!,
    f.img!,
    f.small!,
    f.odd!,
    f.empty!,
    f.dir!,
    f.missing!,
    f.nested!,
    "",
    "-",
  );
  const num = fc.oneof(
    fc.integer({ min: 0, max: 600 }).map(String),
    fc.constantFrom(
      "0",
      "1",
      "-1",
      "0x10",
      "0x",
      "1.5",
      "1e3",
      "abc",
      "",
      "9007199254740993",
      "0x1fffffffffffff",
      "511",
      "512",
    ),
    fc.bigInt({ min: -(1n << 70n), max: 1n << 70n }).map(String),
  );
  const size = fc.oneof(
    fc.constantFrom(
      "64K",
      "1M",
      "512",
      "1000",
      "0",
      "-1M",
      "1.5M",
      "2X",
      "",
      "K",
      "1E",
      "9999999T",
      "1m",
      "4k",
    ),
    fc.integer({ min: 0, max: 1 << 20 }).map(String),
  );
  const text = fc.oneof(
    fc.string({ maxLength: 8 }),
    fc.constantFrom("pio", "pio32", "rep", "dma", "pv", "sync", "async", "exit=5", "pioIn=1", "=", "x="),
  );
  const flag = fc.oneof(
    fc
      .tuple(fc.constantFrom("--lba", "--count", "--multiple", "--size", "-s"), fc.oneof(num, size))
      .map(([a, b]) => [a, b]),
    fc.tuple(fc.constantFrom("--via", "--engine", "--cost"), text).map(([a, b]) => [a, b]),
    fc
      .tuple(fc.constantFrom("-i", "--input"), fc.constantFrom(f.input!, f.oddInput!, f.missing!, f.dir!))
      .map(([a, b]) => [a, b]),
    fc
      .tuple(
        fc.constantFrom("-o", "--output", "--trace"),
        fc.constantFrom(f.out!, f.trace!, f.dir!, f.nested!),
      )
      .map(([a, b]) => [a, b]),
    fc.constantFrom(
      "--json",
      "--read-only",
      "--poll",
      "--lba48",
      "--lba28",
      "--pad",
      "--no-flush",
      "-f",
      "--force",
      "--help",
      "-h",
      "--version",
      "--bogus",
      "-x",
      "--",
      "--lba",
      "--count",
    ),
    text.map((t) => [t]),
  );
  const command = fc.oneof(
    { weight: 10, arbitrary: fc.constantFrom("read", "write", "identify", "mkimage") },
    { weight: 1, arbitrary: fc.constantFrom("help", "frobnicate", "", "READ", "-V", "--help") },
  );
  return fc
    .record({
      command,
      target: fc.oneof(
        { weight: 5, arbitrary: path },
        { weight: 1, arbitrary: fc.constantFrom(f.fresh!, f.nested!) },
      ),
      flags: fc.array(flag, { maxLength: 5 }),
      positionalFirst: fc.boolean(),
    })
    .map(({ command, target, flags, positionalFirst }) => {
      const rest = flags.flat();
      const args = positionalFirst ? [target, ...rest] : [...rest, target];
      return command === "" ? args : [command, ...args];
    });
}

class Failure extends Error {}

export interface CliWorldOptions {
  /**
   * One case in `filesEvery` also runs a random command as a child process on a scratch tree of random files
   * (./cli-files.ts), the real bench and demo included now and then; 0 never does. Default 2,000.
   */
  filesEvery?: number;
}

export class CliWorld {
  readonly stats: { cases: number; ok: number; refused: number; files?: CliFilesWorld["stats"] } = {
    cases: 0,
    ok: 0,
    refused: 0,
  };
  /** The first failure before shrinking (scripts/fuzz.ts prints it). */
  readonly first = { message: null as string | null };
  readonly filesEvery: number;
  private files: CliFilesWorld | null = null;
  private bundle: CliBundle | null = null;

  constructor(
    readonly fixtures: Record<string, string>,
    o: CliWorldOptions = {},
  ) {
    this.filesEvery = o.filesEvery ?? 2000;
  }

  /**
   * Relative paths in the vectors ("-", "", a mkimage target) land in the fixtures' directory, never in the
   * directory the run was started from: scripts/fuzz.ts starts in the checkout, where `mkimage - --size 4k`
   * left a file named "-".
   */
  private enterScratch(): void {
    const want = dirname(this.fixtures.img!);
    let here: string | undefined;
    try {
      here = process.cwd();
    } catch {
      // The directory we were in was removed (cliFixtures remakes its directory).
    }
    if (here !== want) process.chdir(want);
  }

  /** Run one scratch-tree case through the bundled CLI (built on first use, removed when the process exits). */
  async runFiles(c: FilesCase): Promise<void> {
    if (!this.files) {
      this.bundle = await buildCliBundle();
      const b = this.bundle;
      process.once("exit", () => b.dispose());
      // Shrinking a child-process case costs a second or more per step: ten minutes of it, then the smallest so far.
      this.files = new CliFilesWorld(b.path, { shrinkBudgetMs: 600_000 });
      this.stats.files = this.files.stats;
    }
    try {
      await this.files.run(c);
    } catch (e) {
      this.first.message ??= e instanceof Error ? e.message : String(e);
      throw e;
    }
  }

  async run(argv: string[]): Promise<void> {
    this.stats.cases++;
    this.enterScratch();
    const out: string[] = [];
    const err: string[] = [];
    const so = process.stdout.write.bind(process.stdout);
    const se = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string | Uint8Array) => (
      out.push(String(s)),
      true
    )) as typeof process.stdout.write;
    process.stderr.write = ((s: string | Uint8Array) => (
      err.push(String(s)),
      true
    )) as typeof process.stderr.write;
    let code: number;
    try {
      code = await runCli(argv);
    } catch (e) {
      throw new Failure(
        `argv ${JSON.stringify(argv)}: exception escaped runCli: ${e instanceof Error ? e.stack : String(e)}`,
      );
    } finally {
      process.stdout.write = so;
      process.stderr.write = se;
      // A fresh image made by mkimage would change the next case's meaning.
      rmSync(this.fixtures.fresh!, { force: true });
    }
    const stderr = err.join("");
    if (code === 0) {
      this.stats.ok++;
      return;
    }
    this.stats.refused++;
    const lines = stderr.split("\n").filter((l) => l !== "");
    // `xenide help <unknown>`: commander prints the usage text on stderr instead of a one-line error.
    if (lines[0]?.startsWith("Usage: xenide") && !/\n\s+at /.test(stderr)) return;
    // One message line; commander may add "(Did you mean --x?)" and "(run with --help for usage)" hints.
    const hints = lines
      .slice(1)
      .every((l) => l === "(run with --help for usage)" || /^\(Did you mean .*\?\)$/.test(l));
    if (!hints || /\n\s+at /.test(stderr) || /internal error/.test(stderr)) {
      throw new Failure(
        `argv ${JSON.stringify(argv)}: exit ${code} with stderr ${JSON.stringify(stderr.slice(0, 600))}`,
      );
    }
    if (!/^(xenide: |error: )/.test(lines[0]!)) {
      throw new Failure(
        `argv ${JSON.stringify(argv)}: exit ${code}, stderr does not start with an error: ${JSON.stringify(lines[0])}`,
      );
    }
  }
}

export function cliArgsProperty(world: CliWorld) {
  const files: fc.Arbitrary<FilesCase | null> =
    world.filesEvery > 0
      ? fc.oneof(
          { weight: world.filesEvery - 1, arbitrary: fc.constant(null) },
          { weight: 1, arbitrary: cliFilesCaseArb({ heavy: true }) },
        )
      : fc.constant(null);
  return fc.asyncProperty(cliArgvArb(world.fixtures), files, async (argv, c) => {
    try {
      await world.run(argv);
    } catch (e) {
      world.first.message ??= e instanceof Error ? e.message : String(e);
      throw e;
    }
    if (c) await world.runFiles(c);
  });
}
