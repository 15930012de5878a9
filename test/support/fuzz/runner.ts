/**
 * One way to run a property for every fuzzed surface: a fixed seed (printed, so a failure can be replayed with
 * `npm run fuzz -- --seed N --surface S`), a number of runs, and on failure the seed, the path and the shrunk
 * counterexample in the error message. Used by the CI tests (short runs) and by scripts/fuzz.ts (long runs).
 */
import fc from "fast-check";

export interface SurfaceRun {
  surface: string;
  seed: number;
  /** Cases tried (properties run `numRuns` cases unless one fails). */
  cases: number;
  ms: number;
}

export interface SurfaceOptions {
  numRuns: number;
  seed: number;
  /** Print the seed and count (CI tests and the long run both do). */
  log?: (line: string) => void;
  /** Replay one failing case (fast-check path from a previous failure message). */
  path?: string;
  /**
   * The first failure as the world saw it. The worlds keep machines across cases, so the case fast-check
   * shrinks to runs against whatever state the failure left behind: the original error says more.
   */
  firstFailure?: () => string | null;
}

/** What a world remembers of the first case that failed in it. */
export class FirstFailure {
  message: string | null = null;

  /** Run `body` for case `c`; remember the first error (with the case) and rethrow it. */
  async guard<T>(c: T, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (e) {
      this.message ??= `${e instanceof Error ? e.message : String(e)}\n  in case ${stringify(c)}`;
      throw e;
    }
  }
}

function stringify(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? Buffer.from(x).toString("hex") : x,
  );
}

/** Run `property` and throw with the seed and shrunk counterexample if it fails. */
export async function runSurface<T>(
  surface: string,
  property: fc.IAsyncPropertyWithHooks<T> | fc.IPropertyWithHooks<T>,
  o: SurfaceOptions,
): Promise<SurfaceRun> {
  const log = o.log ?? ((l: string) => process.stdout.write(l + "\n"));
  log(`fuzz ${surface}: seed ${o.seed}, ${o.numRuns} cases`);
  const t0 = performance.now();
  const params: fc.Parameters<T> = {
    numRuns: o.numRuns,
    seed: o.seed,
    endOnFailure: false,
    ...(o.path ? { path: o.path } : {}),
  };
  const details = await fc.check(property as fc.IAsyncPropertyWithHooks<T>, params);
  const ms = performance.now() - t0;
  if (details.failed) {
    const why =
      details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    const first = o.firstFailure?.();
    const msg =
      `${fc.defaultReportMessage(details) ?? "property failed"}\nError: ${why}` +
      (first ? `\nFirst failure (before shrinking): ${first}` : "");
    throw new Error(
      `fuzz ${surface} FAILED (seed ${o.seed}; replay: npm run fuzz -- --surface ${surface} --seed ${o.seed} --path ${details.counterexamplePath})\n${msg}`,
    );
  }
  log(`fuzz ${surface}: ${details.numRuns} cases passed in ${(ms / 1000).toFixed(1)} s (seed ${o.seed})`);
  return { surface, seed: o.seed, cases: details.numRuns, ms };
}

/** The seed CI uses for every surface unless FUZZ_SEED is set (printed either way). */
export function ciSeed(): number {
  const env = process.env.FUZZ_SEED;
  return env !== undefined && /^-?\d+$/.test(env) ? Number(env) : 0x5eed_1de;
}
