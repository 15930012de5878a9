/**
 * The exclusive writer lock of an image: a lock file `IMG.lock` beside the image holding the writer's pid.
 *
 * Node has no flock(2), so the lock is a file created atomically: the pid is written to a private temporary
 * file which is then hard-linked to `IMG.lock` (link(2) fails with EEXIST if the lock exists), so a lock file
 * is never seen half-written. A lock whose pid is no longer running (a writer that was killed) is stale and
 * is taken over: it is first renamed to a private name, and only removed if it still holds the dead pid, so two
 * processes taking over the same stale lock cannot both win.
 *
 * Policy: a writer takes the lock; a read-only open does not take it but is refused while a live writer holds
 * it (its reads could see the image change underneath, sector by sector). Pass `lock: false` to skip both,
 * for example to inspect an image whose writer is stopped in a debugger. The lock is released on close and
 * when the process exits normally; after a crash or a fatal signal the stale lock is taken over by the next
 * writer.
 */
import fs from "node:fs";
import path from "node:path";

import { ImageError, ImageLockedError } from "./errors.ts";

export function lockPathOf(imagePath: string): string {
  return `${imagePath}.lock`;
}

/** True when a process with this pid exists (EPERM: it exists but belongs to someone else). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readLockPid(lockPath: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(lockPath, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const pid = Number.parseInt(text.trim(), 10);
  // An unparsable lock file cannot come from us (we never expose a partial one): treat it as held by pid 0,
  // which is never a live user process, so it is taken over as stale.
  return Number.isSafeInteger(pid) && pid > 0 ? pid : 0;
}

/** The pid of a live process holding the image for writing, if any. */
export function lockHolder(imagePath: string): number | undefined {
  const pid = readLockPid(lockPathOf(imagePath));
  return pid !== undefined && pid > 0 && pidAlive(pid) ? pid : undefined;
}

const held = new Set<string>();
let exitHookInstalled = false;

function releaseAllOnExit(): void {
  for (const p of held) {
    try {
      fs.unlinkSync(p);
    } catch {
      // already gone: nothing to release
    }
  }
  held.clear();
}

export class ImageLock {
  private released = false;

  private constructor(readonly lockPath: string) {}

  /** Take the writer lock of `imagePath` or throw `ImageLockedError` naming the live holder. */
  static acquire(imagePath: string): ImageLock {
    const lockPath = lockPathOf(imagePath);
    const dir = path.dirname(lockPath);
    const tmp = path.join(
      dir,
      `.${path.basename(lockPath)}.${process.pid}.${Math.random().toString(36).slice(2)}`,
    );
    try {
      fs.writeFileSync(tmp, `${process.pid}\n`, { flag: "wx", mode: 0o644 });
    } catch (e) {
      throw new ImageError(
        "EOPEN",
        `cannot create the lock file ${lockPath} (${(e as Error).message}); open without locking only if no other process writes the image`,
        imagePath,
      );
    }
    try {
      for (let attempt = 0; attempt < 8; attempt++) {
        try {
          fs.linkSync(tmp, lockPath);
          return ImageLock.hold(lockPath);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        }
        const pid = readLockPid(lockPath);
        if (pid === undefined) continue; // released meanwhile: try again
        if (pid > 0 && pidAlive(pid)) throw new ImageLockedError(imagePath, pid, lockPath);
        ImageLock.takeOverStale(lockPath, pid);
      }
      const pid = readLockPid(lockPath) ?? 0;
      throw new ImageLockedError(imagePath, pid, lockPath);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  private static takeOverStale(lockPath: string, stalePid: number): void {
    const aside = `${lockPath}.stale.${process.pid}.${Math.random().toString(36).slice(2)}`;
    try {
      fs.renameSync(lockPath, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return; // someone else moved it: retry
      throw e;
    }
    if (readLockPid(aside) === stalePid) {
      fs.rmSync(aside, { force: true });
      return;
    }
    // Between our read and our rename a live writer replaced the stale lock: put its lock back.
    try {
      fs.linkSync(aside, lockPath);
    } catch {
      // a third process has linked its own lock meanwhile; the next attempt reports it
    }
    fs.rmSync(aside, { force: true });
  }

  private static hold(lockPath: string): ImageLock {
    held.add(lockPath);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on("exit", releaseAllOnExit);
    }
    return new ImageLock(lockPath);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    held.delete(this.lockPath);
    // Only remove the lock if it is still ours (nobody should have taken it, but do not delete another's).
    if (readLockPid(this.lockPath) === process.pid) fs.rmSync(this.lockPath, { force: true });
  }
}
