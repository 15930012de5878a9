// Deferred kernel locks (LockDeferral, what the QEMU launcher's start-up uses): an open returns before the lock
// helper's verdict, and the deferral's end gives the same outcome a waiting open gives: the kernel lock and the
// lock file taken, or the same refusal naming the holder; an image closed before its verdict leaves nothing.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { ImageLockedError } from "../../src/storage/errors.ts";
import { createImage } from "../../src/storage/image.ts";
import { kernelLockUnavailable, LockDeferral } from "../../src/storage/lock.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { tempDir } from "./helpers.ts";

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
function newImage(): string {
  const f = path.join(dir, `d${n++}.img`);
  createImage(f, 64 * 512);
  return f;
}

/** The lock files beside `image`. */
function lockFiles(image: string): string[] {
  const base = path.basename(image);
  return fs.readdirSync(path.dirname(image)).filter((f) => f.startsWith(`${base}.lock`));
}

const kernelReason = kernelLockUnavailable();
if (kernelReason && process.env.CI === "true") {
  it("the kernel lock is available (perl from perl-base; required under CI)", () => {
    throw new Error(kernelReason);
  });
}

(kernelReason ? describe.skip : describe)("deferred kernel locks", () => {
  it("an open returns before the verdict; the deferral's end takes the kernel lock and the lock file", async () => {
    const img = newImage();
    const d = LockDeferral.begin();
    const b = RawImageBackend.open(img);
    try {
      expect(b.lock?.kernelUnavailable).toBe("the lock helper's verdict is pending");
      expect(lockFiles(img)).toEqual([]); // the lock file comes with the verdict
      await d.end();
      expect(b.lock?.kernel).toBe(true);
      expect(b.lock?.kernelUnavailable).toBeUndefined();
      expect(fs.readFileSync(`${img}.lock`, "utf8")).toMatch(new RegExp(`^${process.pid} write kernel `));
      // Held as a waiting open holds it: a second writer is refused.
      expect(() => RawImageBackend.open(img)).toThrow(ImageLockedError);
    } finally {
      b.close();
    }
    expect(lockFiles(img)).toEqual([]);
  });

  it("refuses a held image through the deferral's end, naming the holder, and leaves its lock alone", async () => {
    const img = newImage();
    const holder = RawImageBackend.open(img);
    const text = fs.readFileSync(`${img}.lock`, "utf8");
    try {
      const d = LockDeferral.begin();
      const b = RawImageBackend.open(img); // no throw: the verdict is not in yet
      const err = await d.end().then(
        () => null,
        (e: unknown) => e,
      );
      b.close();
      expect(err).toBeInstanceOf(ImageLockedError);
      expect((err as Error).message).toBe(
        `${img} is in use: process ${process.pid} (node) holds it for writing`,
      );
      expect(fs.readFileSync(`${img}.lock`, "utf8")).toBe(text);
      expect(lockFiles(img)).toEqual([path.basename(img) + ".lock"]);
    } finally {
      holder.close();
    }
  });

  it("an image closed before its verdict leaves no lock behind", async () => {
    const img = newImage();
    const d = LockDeferral.begin();
    RawImageBackend.open(img).close();
    await d.end();
    expect(lockFiles(img)).toEqual([]);
    // Nothing holds it: a writer takes it at once.
    RawImageBackend.open(img).close();
  });

  // A deferred verdict comes from the helper's exit status alone when it set the locks (no pipes), else from a
  // second run whose output is read: each kind of helper must end where a waiting open ends.
  async function deferredOpen(helper: string): Promise<{ kernel: boolean; why: string | undefined }> {
    const saved = process.env.XENIDE_LOCK_HELPER;
    process.env.XENIDE_LOCK_HELPER = helper;
    const img = newImage();
    try {
      const d = LockDeferral.begin();
      const b = RawImageBackend.open(img);
      try {
        await d.end();
        return { kernel: b.lock!.kernel, why: b.lock!.kernelUnavailable };
      } finally {
        b.close();
      }
    } finally {
      if (saved === undefined) delete process.env.XENIDE_LOCK_HELPER;
      else process.env.XENIDE_LOCK_HELPER = saved;
    }
  }

  it("a program that exits 0 without locking is not taken for the helper; the next program is tried", async () => {
    // `true` ignores its arguments and exits 0: only the helpers' own status after "ok" (42) means locked.
    expect(await deferredOpen("true")).toEqual({
      kernel: false,
      why: "the lock helper true failed (exit status 0)",
    });
    expect(await deferredOpen("no-such-lock-helper,true,perl")).toEqual({ kernel: true, why: undefined });
  });

  it("python3's helper gives the same verdict as perl's", async () => {
    const python = spawnSync("python3", ["-c", "import fcntl; print(fcntl.F_OFD_SETLK)"], {
      encoding: "utf8",
    });
    if (python.stdout?.trim() !== "37") return; // python3 without F_OFD_SETLK: perl's case above stands
    expect(await deferredOpen("python3")).toEqual({ kernel: true, why: undefined });
  });

  it("opens wait for their helper again once the deferral has ended", async () => {
    const d = LockDeferral.begin();
    await d.end();
    const img = newImage();
    const b = RawImageBackend.open(img);
    try {
      expect(b.lock?.kernel).toBe(true);
      expect(lockFiles(img)).toEqual([path.basename(img) + ".lock"]);
    } finally {
      b.close();
    }
  });
});
