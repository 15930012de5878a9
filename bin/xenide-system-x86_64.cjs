// The start path of xenide-system-x86_64 (bin/xenide-system-x86_64 runs it). Runs the launcher's bundle
// (dist/xenide-system-x86_64.cjs, built by `npm ci` through the prepare script) when it is there, otherwise (or
// with XENIDE_FROM_SOURCES=1, as the tests run it) the TypeScript sources through tsx.
//
// A libqtest test starts a machine per test case, so the start path is kept short: CommonJS (no ESM loader), and
// the bundle is one CommonJS file compiled through vm.Script with the V8 code cache scripts/build-launcher.mjs made
// at build time (dist/xenide-system-x86_64.cache). The cache file holds a copy of the bundle it was made from: a
// cache whose copy differs from the bundle (stale), one from another Node (V8 would reject it), a damaged one or
// none at all only means the bundle is compiled from its text, as without a cache. XENIDE_CODE_CACHE_DEBUG=1 says
// on stderr which it was; XENIDE_CODE_CACHE_WRITE=PATH (the build's warm-up run) writes the cache when the
// launcher exits.
"use strict";
const { isAscii } = require("node:buffer");
const { existsSync, readFileSync, renameSync, writeFileSync } = require("node:fs");
const { join } = require("node:path");
const { Script } = require("node:vm");

const PROGRAM = "xenide-system-x86_64";
const distDir = join(__dirname, "..", "dist");
const bundle = join(distDir, "xenide-system-x86_64.cjs");
const cacheFile = join(distDir, "xenide-system-x86_64.cache");
// The cache file: this line, the bundle's bytes, then V8's code cache for them.
const MAGIC = `xenide-code-cache 1 ${process.version} ${process.arch}`;

/** The cached data for `source`, or why there is none. */
function cachedDataFor(source) {
  let file;
  try {
    file = readFileSync(cacheFile);
  } catch {
    return { why: "missing" };
  }
  const nl = file.indexOf(10);
  const header = nl < 0 ? "" : file.toString("latin1", 0, nl);
  const m = /^(.*) (\d+)$/.exec(header);
  if (!m || m[1] !== MAGIC) return { why: "stale (another format or Node)" };
  const length = Number(m[2]);
  const start = nl + 1;
  if (length !== source.length || file.length < start + length) return { why: "stale (another bundle)" };
  if (!file.subarray(start, start + length).equals(source)) return { why: "stale (another bundle)" };
  return { data: file.subarray(start + length) };
}

/** Load the bundle through vm.Script with its code cache; returns its exports. */
function loadBundle() {
  const source = readFileSync(bundle);
  const cache = cachedDataFor(source);
  // The bundle is Node's CommonJS wrapper function around the module (see scripts/build-launcher.mjs), so it sees
  // exactly what a require()d module sees. ASCII, as built, is Latin-1 text: one copy into V8, no decoding.
  const text = isAscii(source) ? source.toString("latin1") : source.toString("utf8");
  const script = new Script(text, { filename: bundle, cachedData: cache.data });
  if (process.env.XENIDE_CODE_CACHE_DEBUG === "1") {
    const used = cache.data ? (script.cachedDataRejected ? "rejected by V8" : "used") : cache.why;
    process.stderr.write(`${PROGRAM}: code cache ${used}\n`);
  }
  const mod = { exports: {} };
  const bundleRequire = require("node:module").createRequire(bundle);
  script.runInThisContext()(mod.exports, bundleRequire, mod, bundle, distDir);
  const target = process.env.XENIDE_CODE_CACHE_WRITE;
  if (target) {
    // After the run, so the functions the start and the first requests compiled are in the cache too.
    process.on("exit", () => {
      const tmp = `${target}.${process.pid}.tmp`;
      writeFileSync(
        tmp,
        Buffer.concat([
          Buffer.from(`${MAGIC} ${source.length}\n`, "latin1"),
          source,
          script.createCachedData(),
        ]),
      );
      renameSync(tmp, target);
    });
  }
  return mod.exports;
}

async function main() {
  let runSystem;
  if (existsSync(bundle) && process.env.XENIDE_FROM_SOURCES !== "1") {
    ({ runSystem } = loadBundle());
  } else {
    const { register } = await import("tsx/esm/api");
    register();
    ({ runSystem } = await import("../src/qemu/main.ts"));
  }
  // Exit as soon as the machine has stopped: a socket or timer left behind must not keep the process alive.
  process.exit(await runSystem(process.argv.slice(2)));
}

main().catch((e) => {
  process.stderr.write(
    `${PROGRAM}: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
  );
  process.exit(70);
});
