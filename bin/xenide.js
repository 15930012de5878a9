#!/usr/bin/env node
// Runs the bundled CLI (dist/, built by `npm ci` through the prepare script) when it is there, otherwise the
// TypeScript sources through tsx, so a checkout works before and after a build.
import { existsSync } from "node:fs";

const bundle = new URL("../dist/xenide.mjs", import.meta.url);
if (existsSync(bundle)) {
  const { runCli } = await import(bundle.href);
  process.exitCode = await runCli(process.argv.slice(2));
} else {
  const { register } = await import("tsx/esm/api");
  register();
  const { runCli } = await import("../src/cli/main.ts");
  process.exitCode = await runCli(process.argv.slice(2));
}
