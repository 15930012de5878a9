/**
 * The long fuzzing run: every input surface a guest or user controls, a million cases each by default.
 *
 *   tsx scripts/fuzz.ts [--cases N] [--seed S] [--surface pv-ring|ide-ports|qtest-lines|cli-args] [--path P]
 *
 * Prints the seed and count of each surface (a random seed unless given), a summary table, and on failure the
 * seed, the replay path and the shrunk counterexample; exits 1 on any failure.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CliWorld, cliArgsProperty, cliFixtures, preloadCommands } from "../test/fuzz/cli-args.ts";
import { IdeWorld, idePortsProperty } from "../test/fuzz/ide-ports.ts";
import { PvRingWorld, pvRingProperty } from "../test/fuzz/pv-ring.ts";
import { QtestWorld, qtestLinesProperty } from "../test/fuzz/qtest-lines.ts";
import { type SurfaceRun, runSurface } from "../test/fuzz/runner.ts";

const { values } = parseArgs({
  options: {
    cases: { type: "string", default: "1000000" },
    seed: { type: "string" },
    surface: { type: "string" },
    path: { type: "string" },
  },
});
const cases = Number(values.cases);
if (!Number.isSafeInteger(cases) || cases < 1) throw new Error(`--cases must be a positive integer`);
const seed = values.seed !== undefined ? Number(values.seed) : (Math.random() * 0x7fffffff) | 0;
const dir = mkdtempSync(join(tmpdir(), "xenide-fuzz-"));
const surfaces: Record<string, () => Promise<{ run: SurfaceRun; detail: unknown }>> = {
  "pv-ring": async () => {
    const w = new PvRingWorld();
    const run = await runSurface("pv-ring", pvRingProperty(w), opts());
    return { run, detail: w.stats };
  },
  "ide-ports": async () => {
    const w = new IdeWorld();
    const run = await runSurface("ide-ports", idePortsProperty(w), opts());
    return { run, detail: w.stats };
  },
  "qtest-lines": async () => {
    const w = new QtestWorld();
    const run = await runSurface("qtest-lines", qtestLinesProperty(w), opts());
    return { run, detail: w.stats };
  },
  "cli-args": async () => {
    await preloadCommands();
    const w = new CliWorld(cliFixtures(join(dir, "cli")));
    const run = await runSurface("cli-args", cliArgsProperty(w), opts());
    return { run, detail: w.stats };
  },
};
function opts() {
  return { numRuns: cases, seed, ...(values.path ? { path: values.path } : {}) };
}
const chosen = values.surface ? [values.surface] : Object.keys(surfaces);
for (const s of chosen)
  if (!surfaces[s]) throw new Error(`unknown surface '${s}' (${Object.keys(surfaces).join(", ")})`);

console.log(`xenide fuzz: ${cases} cases per surface, seed ${seed}`);
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
  rmSync(dir, { recursive: true, force: true });
}
console.log("\n| surface | cases | seed | time | result |\n|---|---:|---:|---:|---|\n" + rows.join("\n"));
process.exitCode = failed ? 1 : 0;
