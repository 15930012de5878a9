/**
 * Output locations the CLI checks before a long run: a directory it may create, a file it may write. Each
 * failure is a `UsageError` naming the flag and the path, so the user sees one line before any work is done.
 */
import fs from "node:fs";
import path from "node:path";
import { UsageError } from "./errors.ts";

const reason = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? String(e);

/**
 * Make `dir` (and missing parents) and check that files can be written in it. Each level is made on its own:
 * `mkdirSync(..., { recursive: true })` spins forever where mkdir keeps answering ENOENT (under /proc, say).
 */
export function ensureWritableDir(dir: string, flag: string): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  let at = abs;
  while (!fs.existsSync(at)) {
    missing.unshift(at);
    const up = path.dirname(at);
    if (up === at) break;
    at = up;
  }
  try {
    if (!fs.statSync(at).isDirectory()) throw Object.assign(new Error(), { code: "ENOTDIR" });
    for (const d of missing) fs.mkdirSync(d);
    fs.accessSync(abs, fs.constants.W_OK);
  } catch (e) {
    throw new UsageError(`${flag} ${dir}: cannot write there (${reason(e)})`);
  }
}

/** Check that `file` can be written: an existing writable file, or a new one in a writable directory. */
export function checkWritableFile(file: string, flag: string): void {
  const abs = path.resolve(file);
  try {
    if (fs.existsSync(abs)) {
      if (fs.statSync(abs).isDirectory()) throw Object.assign(new Error(), { code: "EISDIR" });
      fs.accessSync(abs, fs.constants.W_OK);
    } else {
      const dir = path.dirname(abs);
      if (!fs.statSync(dir).isDirectory()) throw Object.assign(new Error(), { code: "ENOTDIR" });
      fs.accessSync(dir, fs.constants.W_OK);
    }
  } catch (e) {
    throw new UsageError(`${flag} ${file}: cannot write it (${reason(e)})`);
  }
}
