/**
 * QEMU 7.2's own tests/qtest/ide-test, unchanged, run against xenide's launcher (bin/xenide-system-x86_64) and
 * against Debian's QEMU side by side: every case in its own process, the two programs interleaved case by
 * case (alternating which goes first), so a change in the machine's load falls on both. The figure is the
 * wall time of each case and the sum over the cases both passed.
 *
 * The binary comes from scripts/build-ide-test.sh. Debian's QEMU cannot run it as shipped: the package deletes
 * the accel-qtest module `-accel qtest` loads; scripts/build-qemu-accel-qtest.sh rebuilds it for the installed
 * version, and QEMU finds it through QEMU_MODULE_DIR. Without either, the result says which is missing.
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { median } from "./stats.ts";
import type { IdeTestCase, IdeTestResult } from "./types.ts";

const QEMU = process.env.XENIDE_QEMU ?? "qemu-system-x86_64";
/** Two cases loop forever on a wrong Bus Master status: each case gets this long. */
const CASE_TIMEOUT_MS = 90_000;

/** The repository (or installed package) root: the nearest directory above this module with xenide's package.json. */
export function packageRoot(from = path.dirname(fileURLToPath(import.meta.url))): string | null {
  for (let dir = from; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "xenide") return dir;
    } catch {
      // not here
    }
    if (path.dirname(dir) === dir) return null;
  }
}

export interface IdeTestPaths {
  ideTest: string;
  launcher: string;
  /** The directory holding accel-qtest-x86_64.so for Debian's QEMU. */
  moduleDir: string;
}

export function ideTestPaths(root: string): IdeTestPaths {
  const cache = path.join(root, ".cache", "qemu-ide-test");
  return {
    ideTest: process.env.XENIDE_IDE_TEST ?? path.join(cache, "build", "tests", "qtest", "ide-test"),
    launcher: path.join(root, "bin", "xenide-system-x86_64"),
    moduleDir: process.env.XENIDE_QEMU_MODULE_DIR ?? path.join(cache, "qemu-modules"),
  };
}

/** The case paths `ide-test -l` lists ("/x86_64/ide/identify", ...). */
export function listCases(ideTest: string, launcher: string): string[] {
  const r = spawnSync(ideTest, ["-l"], {
    encoding: "utf8",
    env: { ...process.env, QTEST_QEMU_BINARY: launcher },
  });
  if (r.error || r.status !== 0) throw new Error(`${ideTest} -l: ${r.error?.message ?? `exit ${r.status}`}`);
  return parseCaseList(r.stdout);
}

/** The case lines of glib's `-l` output (comments start with '#'). */
export function parseCaseList(stdout: string): string[] {
  return stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("/"));
}

/** Whether glib's TAP output says the one case ran and passed ("ok N /x86_64/ide/..." with no "not ok"). */
export function casePassed(output: string, name: string, code: number | null): boolean {
  const line = new RegExp(`^ok \\d+ ${name.replace(/[/.]/g, "\\$&")}$`, "m");
  return code === 0 && line.test(output) && !/^not ok/m.test(output);
}

/** One ide-test process's result: its whole output, wall time and verdict. */
export interface IdeTestRun {
  ok: boolean;
  timedOut: boolean;
  seconds: number;
  output: string;
}

/**
 * Run one case of ide-test (`name`, e.g. /x86_64/ide/identify; the cases of `all` under it skipped, so the
 * process runs that case alone) with `binary` as QTEST_QEMU_BINARY, killed with what it started after
 * `timeoutMs` (two cases loop forever on a wrong Bus Master status).
 */
export function runIdeTestCase(
  ideTest: string,
  binary: string,
  name: string,
  all: readonly string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = CASE_TIMEOUT_MS,
): Promise<IdeTestRun> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    // -p runs a path and everything under it: the deeper cases are skipped, so each process runs one case.
    const skip = all.filter((c) => c.startsWith(name + "/"));
    const args = ["-p", name, ...skip.flatMap((c) => ["-s", c])];
    const p = spawn(ideTest, args, {
      env: { ...process.env, ...env, QTEST_QEMU_BINARY: binary },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so a timeout ends the program it started too.
      detached: true,
    });
    let output = "";
    p.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    p.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-p.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    // The case's time ends when the process does; its verdict waits for the end of its output ("close": the
    // pipes can still hold its last lines, the "ok" line among them, when "exit" comes).
    let seconds = 0;
    p.on("exit", () => {
      clearTimeout(timer);
      seconds = (performance.now() - t0) / 1000;
    });
    p.on("close", (code) => {
      resolve({ ok: !timedOut && casePassed(output, name, code), timedOut, seconds, output });
    });
  });
}

/** One case as the bench reports it: pass or fail, seconds, and the reason of a failure in a line. */
async function runCase(
  ideTest: string,
  binary: string,
  name: string,
  all: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<IdeTestCase> {
  const r = await runIdeTestCase(ideTest, binary, name, all, env);
  if (r.ok) return { name, ok: true, seconds: r.seconds };
  const last =
    r.output
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("# "))
      .pop() ?? "";
  const note = r.timedOut ? `timed out after ${CASE_TIMEOUT_MS / 1000} s` : last.slice(0, 300);
  return { name, ok: false, seconds: r.seconds, note };
}

function qemuVersion(): string | null {
  const r = spawnSync(QEMU, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return null;
  return (r.stdout.split("\n")[0] ?? "").trim();
}

/** Sum of the seconds of the cases both programs passed. */
function bothPassed(a: IdeTestCase[], b: IdeTestCase[]): { a: number; b: number; n: number } {
  let sa = 0;
  let sb = 0;
  let n = 0;
  for (const c of a) {
    const d = b.find((x) => x.name === c.name);
    if (!c.ok || !d?.ok) continue;
    sa += c.seconds;
    sb += d.seconds;
    n++;
  }
  return { a: sa, b: sb, n };
}

/**
 * `prog` as a path: libqtest runs QTEST_QEMU_BINARY through `sh -c exec`, and a name it finds on PATH is
 * resolved here once, so both programs are named the same way.
 */
function onPath(prog: string): string {
  if (prog.includes("/")) return prog;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    const p = path.join(dir || ".", prog);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  return prog;
}

/** Why QEMU cannot be measured, or null when it can. */
function qemuMissing(paths: IdeTestPaths): string | null {
  if (!qemuVersion()) return `${QEMU} not installed (apt-get install qemu-system-x86)`;
  if (!fs.existsSync(path.join(paths.moduleDir, "accel-qtest-x86_64.so")))
    return (
      `Debian's QEMU has no accel-qtest module (its package deletes it); ` +
      `scripts/build-qemu-accel-qtest.sh builds it into ${paths.moduleDir}`
    );
  return null;
}

/** A case over several rounds: passed only if every round passed; its time is the median round's. */
export function combineRounds(runs: readonly IdeTestCase[]): IdeTestCase {
  const failed = runs.find((r) => !r.ok);
  const seconds = median(runs.map((r) => r.seconds));
  return {
    name: runs[0]!.name,
    ok: !failed,
    seconds,
    ...(runs.length > 1 ? { rounds: runs.map((r) => r.seconds) } : {}),
    ...(failed?.note !== undefined ? { note: failed.note } : {}),
  };
}

/**
 * Run every case `rounds` times against each program (a case's time is its median round), or only against
 * the launcher when QEMU cannot run it.
 */
export async function measureIdeTest(
  rounds = 1,
  root: string | null = packageRoot(),
  progress?: (what: string) => void,
): Promise<IdeTestResult> {
  const base: IdeTestResult = {
    status: "unavailable",
    cases: 0,
    rounds,
    launcher: { passed: 0, seconds: 0, cases: [] },
    qemu: null,
    compared: 0,
    ratio: null,
  };
  if (!root) return { ...base, note: "ide-test not built: the package root is unknown" };
  const paths = ideTestPaths(root);
  if (!fs.existsSync(paths.ideTest))
    return { ...base, note: "ide-test not built (scripts/build-ide-test.sh builds it into .cache/)" };
  if (!fs.existsSync(paths.launcher)) return { ...base, note: `${paths.launcher} not found` };
  try {
    const cases = listCases(paths.ideTest, paths.launcher);
    const qemuNote = qemuMissing(paths);
    const qemuBin = qemuNote ? null : onPath(QEMU);
    const qemuEnv = { QEMU_MODULE_DIR: paths.moduleDir };
    const runsX: IdeTestCase[][] = [];
    const runsQ: IdeTestCase[][] = [];
    for (let round = 0; round < rounds; round++) {
      for (const [i, name] of cases.entries()) {
        progress?.(name);
        // Alternate which program goes first, so neither always runs on the cache the other warmed.
        const runX = async () =>
          (runsX[i] ??= []).push(await runCase(paths.ideTest, paths.launcher, name, cases, {}));
        const runQ = async () => {
          if (qemuBin) (runsQ[i] ??= []).push(await runCase(paths.ideTest, qemuBin, name, cases, qemuEnv));
        };
        if ((i + round) % 2 === 0) {
          await runX();
          await runQ();
        } else {
          await runQ();
          await runX();
        }
      }
    }
    const xs = runsX.map(combineRounds);
    const qs = runsQ.map(combineRounds);
    const sum = (cs: IdeTestCase[]) => cs.reduce((s, c) => s + c.seconds, 0);
    const launcher = { passed: xs.filter((c) => c.ok).length, seconds: sum(xs), cases: xs };
    if (!qemuBin) return { ...base, status: "ok", cases: cases.length, launcher, qemuNote: qemuNote! };
    const qPassed = qs.filter((c) => c.ok).length;
    if (qPassed === 0) {
      return {
        ...base,
        status: "ok",
        cases: cases.length,
        launcher,
        qemuNote: `QEMU passed no case with the rebuilt module: ${qs[0]?.note ?? "no output"}`,
      };
    }
    const both = bothPassed(xs, qs);
    return {
      ...base,
      status: "ok",
      cases: cases.length,
      launcher,
      qemu: { version: qemuVersion()!, passed: qPassed, seconds: sum(qs), cases: qs },
      compared: both.n,
      ratio: both.n > 0 && both.b > 0 ? both.a / both.b : null,
    };
  } catch (e) {
    return { ...base, status: "error", note: (e as Error).message };
  }
}
