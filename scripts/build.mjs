// Bundles the CLI into dist/xenide.mjs. Running the bundle rather than the TypeScript sources through a loader
// matters for measurements: per-module transpilation turns every imported constant into a getter call, which
// made the port-exit path about three times slower.
import { build } from "esbuild";

await build({
  entryPoints: { xenide: "src/cli/main.ts" },
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
