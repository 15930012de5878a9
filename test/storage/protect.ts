// Making a file or directory unwritable for the test process itself. File modes do that for a user; root
// ignores them, so for root the immutable attribute (chattr +i, e2fsprogs) does it instead: an immutable
// directory takes no new entry, an immutable file opens for reading only, whoever asks.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const root = process.getuid?.() === 0;

function chattr(flag: "+i" | "-i", p: string): string | undefined {
  const r = spawnSync("chattr", [flag, p], { encoding: "utf8" });
  if (r.error) return `chattr not found (${r.error.message}; apt-get install e2fsprogs)`;
  return r.status === 0 ? undefined : `chattr ${flag} failed: ${r.stderr.trim()}`;
}

/** Why `protect` cannot work here (root on a filesystem without the immutable attribute), or undefined. */
export function protectUnavailable(): string | undefined {
  if (!root) return undefined;
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-protect-"));
  try {
    const why = chattr("+i", d);
    if (why) return `running as root, which file modes do not stop, and ${why}`;
    chattr("-i", d);
    return undefined;
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}

/** Make `p` unwritable: no new entries in a directory, no write opens of a file. */
export function protect(p: string): void {
  if (root) {
    const why = chattr("+i", p);
    if (why) throw new Error(why);
  } else fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o555 : 0o444);
}

/** Undo `protect` (before removing `p`). */
export function unprotect(p: string): void {
  if (root) chattr("-i", p);
  else fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o755 : 0o644);
}
