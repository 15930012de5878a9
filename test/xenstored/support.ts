/**
 * Running Xen's own xenstore clients (Debian's xenstore-utils, python3-pyxs) against xenide's xenstored: the
 * tools are spawned asynchronously (the server runs on this test's event loop), with XENSTORED_PATH naming
 * the socket. Missing tools skip the tests with a one-line reason, except under CI.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "vitest";

/** Debian's python3 (python3-pyxs is installed for it), not a pyenv python3 earlier on PATH. */
export const PYTHON = "/usr/bin/python3";

export const TOOLS = [
  "xenstore-ls",
  "xenstore-read",
  "xenstore-write",
  "xenstore-rm",
  "xenstore-list",
  "xenstore-exists",
  "xenstore-chmod",
  "xenstore-watch",
] as const;

/** Why the tools cannot run here (undefined when they can). */
export function toolsMissing(needPyxs = true): string | undefined {
  for (const t of TOOLS) {
    const r = spawnSync("sh", ["-c", `command -v ${t}`]);
    if (r.status !== 0) return `${t} not found (apt-get install xenstore-utils)`;
  }
  if (needPyxs && spawnSync(PYTHON, ["-c", "import pyxs"]).status !== 0)
    return `${PYTHON} cannot import pyxs (apt-get install python3-pyxs)`;
  return undefined;
}

/** The skip-unless-CI rule: under CI a missing tool is a failing test. */
export function requireTools(what: string, reason: string | undefined): void {
  if (reason && process.env.CI === "true") {
    it(`${what}: the outside programs are there (required under CI)`, () => {
      throw new Error(reason);
    });
  } else if (reason) {
    console.log(`skipping ${what}: ${reason}`);
  }
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a program with XENSTORED_PATH=socket, asynchronously. */
export function runTool(
  socket: string,
  cmd: string,
  args: string[],
  timeoutMs = 10_000,
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, XENSTORED_PATH: socket } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function tempDir(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), "xenide-xsd-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
