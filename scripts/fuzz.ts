/**
 * The long fuzzing run: every input surface a guest or user controls, a million cases each by default.
 *
 *   tsx scripts/fuzz.ts [--cases N] [--seed S] [--surface pv-ring|ide-ports|qtest-lines|cli-args] [--path P]
 *                       [--progress SECONDS] [--no-bundle]
 *
 * Prints the seed and count of each surface (a random seed unless given), a progress line every --progress
 * seconds (default 60), a summary table, and on failure the seed, the replay path, the shrunk counterexample
 * and the first failing case as the harness saw it; exits 1 on any failure.
 *
 * Started from TypeScript (tsx), it first bundles itself with esbuild into node_modules/.cache/xenide-fuzz and
 * runs that bundle with plain node: tsx turns every imported binding into a getter call, which costs the
 * emulator's hot paths about half their speed over a million cases. --no-bundle runs in place.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { SurfaceRun } from "../test/support/fuzz/runner.ts";

const { values } = parseArgs({
  options: {
    cases: { type: "string", default: "1000000" },
    seed: { type: "string" },
    surface: { type: "string" },
    path: { type: "string" },
    progress: { type: "string", default: "60" },
    "no-bundle": { type: "boolean", default: false },
  },
});

if (import.meta.url.endsWith(".ts") && !values["no-bundle"]) process.exit(await runBundled());

/** Bundle this script (with the harnesses and the emulator, packages left external) and run it with node. */
async function runBundled(): Promise<number> {
  const { build } = await import("esbuild");
  const self = fileURLToPath(import.meta.url);
  const root = fileURLToPath(new URL("..", import.meta.url));
  // Inside the project, so the bundle resolves fast-check and the other packages from node_modules.
  const out = join(root, "node_modules", ".cache", "xenide-fuzz");
  mkdirSync(out, { recursive: true });
  // One bundle per run: two runs at once must not rewrite each other's file.
  const bundle = join(out, `fuzz-${process.pid}.mjs`);
  const entry = join(out, `run-${process.pid}.mjs`);
  await build({
    entryPoints: [self],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    logLevel: "warning",
  });
  // Entered through a second file: the CLI module inside the bundle starts the CLI when the bundle itself is
  // the program being run (its import.meta.url equals argv[1]).
  writeFileSync(entry, `await import(${JSON.stringify(pathToFileURL(bundle).href)});\n`);
  try {
    const r = spawnSync(process.execPath, [entry, ...process.argv.slice(2)], { stdio: "inherit" });
    if (r.error) throw r.error;
    return r.status ?? 1;
  } finally {
    rmSync(bundle, { force: true });
    rmSync(entry, { force: true });
  }
}

const cases = Number(values.cases);
if (!Number.isSafeInteger(cases) || cases < 1) throw new Error(`--cases must be a positive integer`);
const seed = values.seed !== undefined ? Number(values.seed) : (Math.random() * 0x7fffffff) | 0;
const progressS = Number(values.progress);
const dir = mkdtempSync(join(tmpdir(), "xenide-fuzz-"));

interface Surface {
  run: SurfaceRun;
  detail: unknown;
}
/** Each surface's world counts its cases in `stats.cases`: the progress line reads it. */
let current: { name: string; stats: { cases: number }; t0: number } | null = null;

const surfaces: Record<string, () => Promise<Surface>> = {
  "pv-ring": async () => {
    const { PvRingWorld, pvRingProperty } = await import("../test/support/fuzz/pv-ring.ts");
    const w = new PvRingWorld();
    return surface("pv-ring", w, pvRingProperty(w));
  },
  "ide-ports": async () => {
    const { IdeWorld, idePortsProperty } = await import("../test/support/fuzz/ide-ports.ts");
    const w = new IdeWorld();
    return surface("ide-ports", w, idePortsProperty(w));
  },
  "qtest-lines": async () => {
    const { QtestWorld, qtestLinesProperty } = await import("../test/support/fuzz/qtest-lines.ts");
    const w = new QtestWorld();
    return surface("qtest-lines", w, qtestLinesProperty(w));
  },
  "cli-args": async () => {
    const { CliWorld, cliArgsProperty, cliFixtures, preloadCommands } =
      await import("../test/support/fuzz/cli-args.ts");
    await preloadCommands();
    const w = new CliWorld(cliFixtures(join(dir, "cli")));
    return surface("cli-args", w, cliArgsProperty(w));
  },
};

async function surface(
  name: string,
  w: { stats: { cases: number }; first?: { message: string | null } },
  property: Parameters<typeof import("../test/support/fuzz/runner.ts").runSurface>[1],
): Promise<Surface> {
  const { runSurface } = await import("../test/support/fuzz/runner.ts");
  current = { name, stats: w.stats, t0: performance.now() };
  try {
    const run = await runSurface(name, property, {
      numRuns: cases,
      seed,
      ...(values.path ? { path: values.path } : {}),
      ...(w.first ? { firstFailure: () => w.first!.message } : {}),
    });
    return { run, detail: w.stats };
  } finally {
    current = null;
  }
}

const chosen = values.surface ? [values.surface] : Object.keys(surfaces);
for (const s of chosen)
  if (!surfaces[s]) throw new Error(`unknown surface '${s}' (${Object.keys(surfaces).join(", ")})`);

console.log(`xenide fuzz: ${cases} cases per surface, seed ${seed}`);
const progress =
  progressS > 0
    ? setInterval(() => {
        if (!current) return;
        const s = (performance.now() - current.t0) / 1000;
        const n = current.stats.cases;
        console.log(
          `  ${current.name}: ${n.toLocaleString("en-US")} cases after ${s.toFixed(0)} s (${(n / s).toFixed(0)}/s)`,
        );
      }, progressS * 1000)
    : null;
progress?.unref();
const rows: string[] = [];
let failed = false;
try {
  for (const s of chosen) {
    try {
      const { run, detail } = await surfaces[s]!();
      console.log(`  ${s}: ${JSON.stringify(detail)}`);
      rows.push(
        `| ${s} | ${run.cases.toLocaleString("en-US")} | ${run.seed} | ${(run.ms / 1000).toFixed(0)} s | passed |`,
      );
    } catch (e) {
      failed = true;
      console.error(e instanceof Error ? e.message : String(e));
      rows.push(`| ${s} | - | ${seed} | - | FAILED |`);
    }
  }
} finally {
  if (progress) clearInterval(progress);
  rmSync(dir, { recursive: true, force: true });
}
console.log("\n| surface | cases | seed | time | result |\n|---|---:|---:|---:|---|\n" + rows.join("\n"));
process.exitCode = failed ? 1 : 0;
