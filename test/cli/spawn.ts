/**
 * The CLI as a child process for the transfer tests, asynchronously: standard input from a buffer, a
 * generator or a file descriptor, standard output collected, hashed or sent to a file descriptor, and the
 * child's peak RSS when asked (test/cli/maxrss-hook.mjs, preloaded).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const tsxLoader = new URL("../../node_modules/tsx/dist/loader.mjs", import.meta.url).href;
const rssHook = new URL("./maxrss-hook.mjs", import.meta.url).href;

export interface RunOptions {
  /** Standard input: bytes, chunks written with backpressure, or a file descriptor to inherit. */
  input?: Buffer | Iterable<Uint8Array> | number;
  /** Standard output: collected ("collect", default), hashed with SHA-256 ("hash"), or a file descriptor. */
  stdout?: "collect" | "hash" | number;
  /** Record the child's peak RSS. */
  maxRss?: boolean;
  /** Called with the child once it is running. */
  onSpawn?: (child: ChildProcess) => void;
  timeoutMs?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  sha256: string;
  stderr: string;
  /** Peak RSS of the child in bytes (maxRss only). */
  maxRss: number;
}

export function runXenide(args: string[], o: RunOptions = {}): Promise<RunResult> {
  const rssDir = o.maxRss ? mkdtempSync(join(tmpdir(), "xenide-rss-")) : null;
  const rssFile = rssDir ? join(rssDir, "maxrss") : "";
  const node = ["--import", tsxLoader, ...(rssDir ? ["--import", rssHook] : [])];
  const child = spawn(process.execPath, [...node, `${root}src/cli/main.ts`, ...args], {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1", XENIDE_MAXRSS_FILE: rssFile },
    stdio: [
      typeof o.input === "number" ? o.input : "pipe",
      typeof o.stdout === "number" ? o.stdout : "pipe",
      "pipe",
    ],
  });
  o.onSpawn?.(child);
  const out: Buffer[] = [];
  const hash = createHash("sha256");
  const mode = o.stdout ?? "collect";
  child.stdout?.on("data", (d: Buffer) => (mode === "hash" ? hash.update(d) : out.push(d)));
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  if (child.stdin) {
    child.stdin.on("error", () => {}); // the child may stop reading early (a refused input)
    void feed(child.stdin, o.input as Buffer | Iterable<Uint8Array> | undefined);
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 60_000);
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      let maxRss = 0;
      if (rssDir) {
        try {
          maxRss = Number(readFileSync(rssFile, "utf8")) * 1024;
        } catch {
          maxRss = NaN;
        }
        rmSync(rssDir, { recursive: true, force: true });
      }
      const stdout = Buffer.concat(out);
      resolve({
        code,
        signal,
        stdout,
        sha256: mode === "hash" ? hash.digest("hex") : createHash("sha256").update(stdout).digest("hex"),
        stderr,
        maxRss,
      });
    });
  });
}

async function feed(
  stdin: NodeJS.WritableStream,
  input: Buffer | Iterable<Uint8Array> | undefined,
): Promise<void> {
  if (input === undefined) return void stdin.end();
  if (Buffer.isBuffer(input)) return void stdin.end(input);
  for (const chunk of input) {
    if (!stdin.write(chunk)) {
      const more = await new Promise<boolean>((resolve) => {
        const drain = (): void => {
          stdin.off("close", close);
          resolve(true);
        };
        const close = (): void => {
          stdin.off("drain", drain);
          resolve(false);
        };
        stdin.once("drain", drain);
        stdin.once("close", close);
      });
      if (!more) return;
    }
  }
  stdin.end();
}
