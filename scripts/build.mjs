// Builds dist/: the CLI (dist/xenide.mjs) and the library entry point (dist/index.mjs) as one esbuild bundle
// with shared chunks, and the library's type declarations (dist/types). Running the bundle rather than the
// TypeScript sources through a loader matters for measurements: per-module transpilation turns every imported
// constant into a getter call, which made the port-exit path about three times slower.
//
// The QEMU drop-in launcher has a start path of its own (scripts/build-launcher.mjs): one CommonJS file and a
// V8 code cache made by a warm-up run, since a libqtest test starts a machine per test case.
//
//   node scripts/build.mjs            bundle + declarations (npm ci runs this through `prepare`)
//   node scripts/build.mjs --no-types bundle only (what `npm start` and `npm run bench` need)
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { buildLauncher } from "./build-launcher.mjs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
// Chunk names change with their contents: remove the old bundle files so no stale chunk lingers.
const dist = join(root, "dist");
mkdirSync(dist, { recursive: true });
for (const f of readdirSync(dist)) if (/\.mjs(\.map)?$/.test(f)) rmSync(join(dist, f));

await build({
  absWorkingDir: root,
  entryPoints: {
    xenide: "src/cli/main.ts",
    index: "src/index.ts",
  },
  outdir: "dist",
  outExtension: { ".js": ".mjs" },
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: true,
  logLevel: "warning",
  banner: { js: "// Built by scripts/build.mjs from src/; do not edit." },
});

// The launcher, on its own, so it loads no more than the machine it runs (and its code cache).
await buildLauncher(dist);

if (!process.argv.includes("--no-types")) {
  const types = join(root, "dist", "types");
  rmSync(types, { recursive: true, force: true });
  const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], {
    stdio: "inherit",
    cwd: root,
  });
  // The sources import each other as ".ts" (run directly by Node's loaders and tsx); a published declaration
  // names the ".js" module it describes, which TypeScript resolves to the ".d.ts" beside it.
  const rewrite = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) rewrite(p);
      else if (e.name.endsWith(".d.ts")) {
        const text = readFileSync(p, "utf8");
        const out = text.replace(/((?:from|import)\s*\(?\s*["'])(\.{1,2}\/[^"']+)\.ts(["'])/g, "$1$2.js$3");
        if (out !== text) writeFileSync(p, out);
      }
    }
  };
  rewrite(types);
}
