#!/usr/bin/env node
// Runs the bundled CLI (dist/, built by `npm ci` through the prepare script) when it is there, otherwise the
// TypeScript sources through tsx, so a checkout works before and after a build.
import { existsSync } from "node:fs";

const bundle = new URL("../dist/xenide.mjs", import.meta.url);
let runCli;
if (existsSync(bundle)) {
  ({ runCli } = await import(bundle.href));
} else {
  const { register } = await import("tsx/esm/api");
  register();
  ({ runCli } = await import("../src/cli/main.ts"));
}
try {
  process.exitCode = await runCli(process.argv.slice(2));
} catch (e) {
  // What the CLI did not expect is a bug: say so, with the stack, and a status no user mistake gives.
  process.stderr.write(
    `xenide: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
  );
  process.exitCode = 70;
}
