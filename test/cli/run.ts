import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
// tsx's loader by absolute URL, so the child can run from any working directory.
const tsxLoader = new URL("../../node_modules/tsx/dist/loader.mjs", import.meta.url).href;

/** Run the CLI from the TypeScript sources in a child process, as a user would. */
export function xenide(
  args: string[],
  opts: { input?: string | Buffer; cwd?: string; env?: Record<string, string> } = {},
) {
  const r = spawnSync(process.execPath, ["--import", tsxLoader, `${root}src/cli/main.ts`, ...args], {
    cwd: opts.cwd ?? root,
    input: opts.input,
    encoding: "buffer",
    env: { ...process.env, NO_COLOR: "1", ...opts.env },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString(), raw: r.stdout };
}
