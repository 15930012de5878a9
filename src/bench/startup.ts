/**
 * Start-up: a fresh Node process that imports the package's entry point as a user's program does, builds a
 * machine with a PV disk on the bench image, connects blkfront and reads 64 KiB sequentially. It reports the
 * time from process start to the first completed request, the rate over the first second after it, and the
 * steady rate over a later second (a fresh process runs cold: V8 has not compiled the path yet).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import type { StartupResult } from "./types.ts";

/** The program the child runs (ESM, given with -e): only the public API of the entry point. */
function childScript(entry: string, image: string, bytes: number): string {
  return `
const t0 = performance.now();
const x = await import(${JSON.stringify(pathToFileURL(entry).href)});
const tImport = performance.now();
const m = x.buildMachine({ pc: false, pv: [{ medium: { image: ${JSON.stringify(image)}, readOnly: true, lock: false } }] });
const p = await x.openPvPath(m);
const buf = p.front.allocBuffer(65536);
const blocks = ${Math.floor(bytes / 65536)};
let lba = 0, n = 0, first = 0, firstSecond = 0, steadyStart = 0, steadyN = 0;
await new Promise((resolve, reject) => {
  const done = (e) => {
    if (e) return reject(e);
    n++;
    const t = performance.now();
    if (first === 0) first = t;
    else if (firstSecond === 0 && t >= first + 1000) firstSecond = n - 1;
    else if (steadyStart === 0 && t >= first + 2000) { steadyStart = t; steadyN = n; }
    else if (steadyStart > 0 && t >= steadyStart + 1000) {
      return resolve(((n - steadyN) * 1000) / (t - steadyStart));
    }
    lba = (lba + 128) % (blocks * 128);
    p.front.submitRead(lba, buf, done);
  };
  p.front.submitRead(lba, buf, done);
}).then((steady) => {
  console.log(JSON.stringify({ status: "ok", importMs: tImport - t0, startMs: t0, firstRequestMs: first,
    firstSecondPerSec: firstSecond, steadyPerSec: steady }));
});
await p.close();
await m.close();
`;
}

/** The entry point a user would import, beside the CLI's entry (dist/index.mjs, or src/index.ts from source). */
export function entryBeside(cli: string | undefined): string | null {
  if (!cli) return null;
  const dir = path.dirname(path.resolve(cli));
  for (const p of [path.join(dir, "index.mjs"), path.join(dir, "..", "index.ts")])
    if (fs.existsSync(p)) return p;
  return null;
}

export function runStartupProbe(
  cli: string | undefined,
  image: string,
  bytes: number,
): Promise<StartupResult> {
  const fail = (note: string): StartupResult => ({
    status: "error",
    note,
    entry: null,
    firstRequestMs: NaN,
    firstSecondPerSec: NaN,
    steadyPerSec: NaN,
  });
  const entry = entryBeside(cli);
  if (!entry) return Promise.resolve(fail("the package's entry point was not found beside the CLI"));
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [...process.execArgv, "--input-type=module", "-e", childScript(entry, image, bytes)],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.on("error", (e) => resolve(fail(e.message)));
    child.on("close", (code) => {
      try {
        const r = JSON.parse(out.trim().split("\n").pop() ?? "") as StartupResult;
        resolve({ ...r, entry: path.relative(process.cwd(), entry) || entry });
      } catch {
        resolve(fail(`exited with ${code}: ${(err || out).trim().split("\n").slice(-2).join(" / ")}`));
      }
    });
  });
}
