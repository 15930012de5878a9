// Who may use an image at once, across processes and within one: readers share, a writer excludes readers and
// writers, and a refusal names the holder's pid and how it holds the image. Every rule is checked twice: with
// the kernel lock QEMU uses plus the lock files (the default where perl or python3 is there), and with the
// lock files alone (XENIDE_LOCK_HELPER=none, as on a machine without either program).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { ImageError, ImageLockedError } from "../../src/storage/errors.ts";
import { createImage } from "../../src/storage/image.ts";
import { kernelLockUnavailable, lockHolder } from "../../src/storage/lock.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { pattern, tempDir } from "./helpers.ts";
import { protect, protectUnavailable, unprotect } from "./protect.ts";

const HOLDER = fileURLToPath(new URL("./fixtures/hold-image.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

interface Held {
  child: ChildProcess;
  pid: number;
  /** "kernel" when the holder got the kernel lock, "files" when only the lock files. */
  kind: string;
}

/**
 * Start a child process holding `image` for `mode`; resolves once it holds it, rejects with its error message
 * when the open is refused.
 */
function hold(
  image: string,
  mode: "read" | "write",
  opts: { env?: Record<string, string> } = {},
): Promise<Held> {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, image, mode], {
    cwd: REPO,
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, ...opts.env },
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const ready = /^ready (\w+)$/m.exec(out);
      if (ready) resolve({ child, pid: child.pid!, kind: ready[1]! });
    });
    child.on("exit", (code) => {
      const err = /^error: (.*)$/m.exec(out);
      reject(new Error(err ? err[1] : `holder exited early with ${code}: ${out}`));
    });
  });
}

/** What `hold` was refused with. */
async function refusal(image: string, mode: "read" | "write", opts: Parameters<typeof hold>[2] = {}) {
  try {
    const h = await hold(image, mode, opts);
    h.child.kill("SIGKILL");
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${mode} open of ${image} was not refused`);
}

async function release(h: Held): Promise<void> {
  if (h.child.exitCode !== null) return;
  const exited = new Promise((r) => h.child.once("exit", r));
  h.child.stdin!.end();
  await exited;
}

function openError(image: string, readOnly: boolean): unknown {
  try {
    RawImageBackend.open(image, { readOnly }).close();
  } catch (e) {
    return e;
  }
  return undefined;
}

function digest(file: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

function newImage(name: string, where = dir): string {
  const file = path.join(where, name);
  createImage(file, 64 * 512);
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, pattern(4096, 77), 0, 4096, 0);
  fs.closeSync(fd);
  return file;
}

/** The lock files beside `image`. */
function records(image: string): string[] {
  const base = path.basename(image);
  return fs
    .readdirSync(path.dirname(image))
    .filter((n) => n.startsWith(`${base}.lock`) || n.startsWith(`.${base}.lock`));
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
    encoding: "utf8",
  });
  return Number(r.stdout);
}

const kernelReason = kernelLockUnavailable();
if (kernelReason && process.env.CI === "true") {
  it("the kernel lock is available (perl from perl-base; required under CI)", () => {
    throw new Error(kernelReason);
  });
} else if (kernelReason) {
  console.log(`the kernel-lock half of the lock tests is skipped: ${kernelReason}`);
}

const LOCKS = [
  { name: "kernel lock and lock files", kernel: true, helper: undefined },
  { name: "lock files alone", kernel: false, helper: "none" },
] as const;

for (const locks of LOCKS) {
  const run = locks.kernel && kernelReason ? describe.skip : describe;
  run(`image lock (${locks.name})`, () => {
    const saved = process.env.XENIDE_LOCK_HELPER;
    beforeAll(() => {
      if (locks.helper === undefined) delete process.env.XENIDE_LOCK_HELPER;
      else process.env.XENIDE_LOCK_HELPER = locks.helper;
    });
    afterAll(() => {
      if (saved === undefined) delete process.env.XENIDE_LOCK_HELPER;
      else process.env.XENIDE_LOCK_HELPER = saved;
    });
    const kind = locks.kernel ? "kernel" : "files";
    const tag = locks.kernel ? "k" : "f";

    it("readers share: two reader processes and a reader in this one", async () => {
      const img = newImage(`share-${tag}.img`);
      const a = await hold(img, "read");
      const b = await hold(img, "read");
      expect([a.kind, b.kind]).toEqual([kind, kind]);
      const ro = RawImageBackend.open(img, { readOnly: true });
      expect(ro.lock?.kernel).toBe(locks.kernel);
      const buf = new Uint8Array(4096);
      ro.read(0, [buf]);
      expect(buf).toEqual(pattern(4096, 77));
      expect(records(img).filter((n) => n.includes(".lock.reader.")).length).toBe(3);
      ro.close();
      await release(a);
      await release(b);
      expect(records(img)).toEqual([]);
    });

    it("a writer is refused while a reader holds the image, naming the reader, and touches nothing", async () => {
      const img = newImage(`reader-first-${tag}.img`);
      const reader = await hold(img, "read");
      const before = digest(img);
      const mtime = fs.statSync(img).mtimeMs;

      const err = openError(img, false);
      expect(err).toBeInstanceOf(ImageLockedError);
      const locked = err as ImageLockedError;
      expect(locked.code).toBe("ELOCKED");
      expect(locked.pid).toBe(reader.pid);
      expect(locked.mode).toBe("read");
      expect(locked.message).toContain(`process ${reader.pid}`);
      expect(locked.message).toContain("holds it for reading");
      expect(digest(img)).toBe(before);
      expect(fs.statSync(img).mtimeMs).toBe(mtime);
      expect(fs.existsSync(`${img}.lock`)).toBe(false);

      await release(reader);
      RawImageBackend.open(img).close();
      expect(records(img)).toEqual([]);
    });

    it("a reader and a second writer are refused while a writer holds the image, naming the writer", async () => {
      const img = newImage(`writer-first-${tag}.img`);
      const writer = await hold(img, "write");
      expect(writer.kind).toBe(kind);
      expect(fs.readFileSync(`${img}.lock`, "utf8")).toMatch(
        new RegExp(`^${writer.pid} write${locks.kernel ? " kernel" : ""} \\w+\\n$`),
      );
      const before = digest(img);

      for (const readOnly of [true, false]) {
        const err = openError(img, readOnly) as ImageLockedError;
        expect(err).toBeInstanceOf(ImageLockedError);
        expect(err.pid).toBe(writer.pid);
        expect(err.mode).toBe("write");
        expect(err.message).toContain(`process ${writer.pid}`);
        expect(err.message).toContain("holds it for writing");
      }
      // No lock taken, none checked: the way to look at an image whose writer is stopped in a debugger.
      const ro = RawImageBackend.open(img, { readOnly: true, lock: false });
      const buf = new Uint8Array(4096);
      ro.read(0, [buf]);
      expect(buf).toEqual(pattern(4096, 77));
      ro.close();
      expect(digest(img)).toBe(before);

      await release(writer);
      expect(records(img)).toEqual([]);
      const rw = RawImageBackend.open(img);
      expect(fs.readFileSync(`${img}.lock`, "utf8")).toMatch(new RegExp(`^${process.pid} write`));
      rw.close();
      expect(records(img)).toEqual([]);
    });

    it("in one process: a second writer and a reader are refused while a writer holds the image", () => {
      const img = newImage(`twice-${tag}.img`);
      const first = RawImageBackend.open(img);
      try {
        expect(() => RawImageBackend.open(img)).toThrow(
          new RegExp(`process ${process.pid}\\b.* for writing`),
        );
        expect(() => RawImageBackend.open(img, { readOnly: true })).toThrow(ImageLockedError);
      } finally {
        first.close();
      }
      const r1 = RawImageBackend.open(img, { readOnly: true });
      const r2 = RawImageBackend.open(img, { readOnly: true });
      expect(() => RawImageBackend.open(img)).toThrow(new RegExp(`process ${process.pid}\\b.* for reading`));
      r1.close();
      expect(() => RawImageBackend.open(img)).toThrow(ImageLockedError);
      r2.close();
      RawImageBackend.open(img).close(); // released by close
      expect(records(img)).toEqual([]);
    });

    it("takes over the lock file of a dead writer (old and new formats)", () => {
      for (const text of [`${deadPid()}\n`, `${deadPid()} write kernel abc\n`, `${deadPid()} write xyz\n`]) {
        const img = newImage(`stale-${tag}-${text.length}.img`);
        fs.writeFileSync(`${img}.lock`, text);
        // A reader is not stopped by it either.
        RawImageBackend.open(img, { readOnly: true }).close();
        const b = RawImageBackend.open(img);
        expect(fs.readFileSync(`${img}.lock`, "utf8")).toMatch(new RegExp(`^${process.pid} write`));
        b.close();
        expect(records(img)).toEqual([]);
      }
    });

    it("a dead reader's lock file does not stop a writer, which removes it", () => {
      const img = newImage(`stale-reader-${tag}.img`);
      const pid = deadPid();
      fs.writeFileSync(`${img}.lock.reader.${pid}.abc`, `${pid} read abc\n`);
      const b = RawImageBackend.open(img);
      expect(records(img)).toEqual([`${path.basename(img)}.lock`]);
      b.close();
      expect(records(img)).toEqual([]);
    });

    it("takes over a garbage lock file", () => {
      const img = newImage(`garbage-${tag}.img`);
      fs.writeFileSync(`${img}.lock`, "not a pid");
      RawImageBackend.open(img).close();
      expect(fs.existsSync(`${img}.lock`)).toBe(false);
    });

    it("a live process's lock file that claims the kernel lock is stale when that lock is free", () => {
      // A pid reused by an unrelated program: the kernel lock tells the truth; the lock files alone cannot.
      const img = newImage(`reused-${tag}.img`);
      const other = spawn("sleep", ["30"]);
      children.push(other);
      fs.writeFileSync(`${img}.lock`, `${other.pid} write kernel abc\n`);
      if (locks.kernel) {
        RawImageBackend.open(img).close();
        expect(records(img)).toEqual([]);
      } else {
        expect(() => RawImageBackend.open(img)).toThrow(
          new RegExp(`process ${other.pid} holds it for writing`),
        );
        fs.rmSync(`${img}.lock`);
      }
    });

    it("releases the lock when the holder exits without closing", () => {
      for (const readOnly of [false, true]) {
        const img = newImage(`exit-${tag}-${readOnly}.img`);
        const code = `import { RawImageBackend } from ${JSON.stringify(path.join(REPO, "src/storage/raw.ts"))};
RawImageBackend.open(${JSON.stringify(img)}, { readOnly: ${readOnly} }); process.exit(0);`;
        const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
          cwd: REPO,
          encoding: "utf8",
        });
        expect(r.stderr).toBe("");
        expect(r.status).toBe(0);
        expect(records(img)).toEqual([]);
      }
    });

    it("a holder killed with SIGKILL does not keep the image", async () => {
      const img = newImage(`killed-${tag}.img`);
      const h = await hold(img, "write");
      const exited = new Promise((r) => h.child.once("exit", r));
      h.child.kill("SIGKILL");
      await exited;
      expect(fs.existsSync(`${img}.lock`)).toBe(true); // its record stays behind, stale
      RawImageBackend.open(img).close();
      expect(records(img)).toEqual([]);
    });

    it("a failed open (bad size) leaves no lock behind", () => {
      const img = path.join(dir, `odd-${tag}.img`);
      fs.writeFileSync(img, new Uint8Array(1000));
      expect(() => RawImageBackend.open(img)).toThrow(ImageError);
      expect(records(img)).toEqual([]);
    });

    it("lockHolder names a live writer only", async () => {
      const img = newImage(`holder-${tag}.img`);
      expect(lockHolder(img)).toBeUndefined();
      const r = await hold(img, "read");
      expect(lockHolder(img)).toBeUndefined();
      await release(r);
      const w = await hold(img, "write");
      expect(lockHolder(img)).toBe(w.pid);
      fs.rmSync(`${img}.lock`); // the kernel lock alone still names it
      expect(lockHolder(img)).toBe(locks.kernel ? w.pid : undefined);
      await release(w);
      expect(lockHolder(path.join(dir, "no-such.img"))).toBeUndefined();
    });
  });
}

// ---- permissions: read-only image files and read-only directories ----

const permsSkip = protectUnavailable();
if (permsSkip && process.env.CI === "true") {
  it("a directory or file can be made unwritable for the permission tests (required under CI)", () => {
    throw new Error(permsSkip);
  });
} else if (permsSkip) {
  console.log(`the permission lock tests are skipped: ${permsSkip}`);
}

(permsSkip ? describe.skip : describe)("image lock and permissions", () => {
  // A directory this process cannot add entries to, holding an image it may write and one it may only read.
  let roDir: string;
  let rwImage: string;
  let roImage: string;
  beforeAll(() => {
    roDir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-lock-ro-"));
    rwImage = newImage("writable.img", roDir);
    roImage = newImage("readonly.img", roDir);
    protect(roImage);
    protect(roDir);
  });
  afterAll(() => {
    unprotect(roDir);
    unprotect(roImage);
    fs.rmSync(roDir, { recursive: true, force: true });
  });

  (kernelReason ? it.skip : it)(
    "a writable image in a read-only directory opens for writing under the kernel lock alone",
    async () => {
      expect(() => fs.writeFileSync(path.join(roDir, "probe"), "")).toThrow(); // the directory is read-only
      const w = await hold(rwImage, "write");
      expect(w.kind).toBe("kernel");
      expect(records(rwImage)).toEqual([]); // no lock file could be made
      // The kernel lock alone keeps readers and writers out, and /proc names the holder.
      for (const readOnly of [false, true]) {
        const err = openError(rwImage, readOnly) as ImageLockedError;
        expect(err).toBeInstanceOf(ImageLockedError);
        expect(err.message).toBe(`${rwImage} is in use: process ${w.pid} (node) holds it for writing`);
      }
      await release(w);
      // Readers too, two at once, and then a writer again.
      const a = await hold(rwImage, "read");
      const b = await hold(rwImage, "read");
      expect((openError(rwImage, false) as Error).message).toContain("holds it for reading");
      await release(a);
      await release(b);
      const again = RawImageBackend.open(rwImage);
      expect(again.lock?.record).toBeNull();
      again.close();
    },
  );

  it("without the kernel lock, a writer in a read-only directory is refused with what to do", async () => {
    const env = { XENIDE_LOCK_HELPER: "none" };
    const msg = await refusal(rwImage, "write", { env });
    expect(msg).toMatch(
      new RegExp(
        `^cannot lock ${rwImage} for writing: the lock file ${rwImage}\\.lock cannot be created \\((EACCES|EPERM)\\)`,
      ),
    );
    expect(msg).toContain("there is no kernel lock (turned off by XENIDE_LOCK_HELPER=none)");
    expect(msg).toContain("make the directory writable, or install perl or python3");
    expect(msg).not.toMatch(/--|option/); // no command-line option to suggest
    // A reader needs no lock file of its own there.
    const r = await hold(rwImage, "read", { env });
    expect(r.kind).toBe("files");
    await release(r);
  });

  it("a read-only image file opens read-only, and a write open says why it cannot", async () => {
    for (const helper of kernelReason ? ["none"] : ["perl,python3", "none"]) {
      const env = { XENIDE_LOCK_HELPER: helper };
      const a = await hold(roImage, "read", { env });
      const b = await hold(roImage, "read", { env });
      await release(a);
      await release(b);
      const msg = await refusal(roImage, "write", { env });
      expect(msg).toMatch(
        /^cannot open image .*readonly\.img: (EACCES: permission denied|EPERM: operation not permitted)/,
      );
    }
  });
});

// ---- the helpers: python3 takes the same locks as perl ----

const python = spawnSync("python3", ["-c", "import fcntl; print(fcntl.F_OFD_SETLK)"], { encoding: "utf8" });
const pythonSkip =
  kernelReason ??
  (python.status === 0 && python.stdout.trim() === "37" ? undefined : "python3 with F_OFD_SETLK not found");
(pythonSkip ? describe.skip : describe)("kernel lock helpers", () => {
  it("a holder locked by python3 and one locked by perl exclude each other", async () => {
    const img = newImage("python.img");
    const w = await hold(img, "write", { env: { XENIDE_LOCK_HELPER: "python3" } });
    expect(w.kind).toBe("kernel");
    fs.rmSync(`${img}.lock`); // only the kernel lock is left to refuse us
    expect((openError(img, true) as Error).message).toContain(`process ${w.pid} (node) holds it for writing`);
    await release(w);
    const r = await hold(img, "read"); // perl
    const msg = await refusal(img, "write", { env: { XENIDE_LOCK_HELPER: "python3" } });
    expect(msg).toContain(`process ${r.pid}`);
    await release(r);
  });
});

describe("kernel lock fallback", () => {
  it("a missing helper falls back to the lock files and says why", () => {
    const saved = process.env.XENIDE_LOCK_HELPER;
    process.env.XENIDE_LOCK_HELPER = "no-such-lock-helper";
    try {
      const img = newImage("no-helper.img");
      const b = RawImageBackend.open(img);
      expect(b.lock?.kernel).toBe(false);
      expect(b.lock?.kernelUnavailable).toBe("no lock helper: no-such-lock-helper is not on PATH");
      expect(fs.existsSync(`${img}.lock`)).toBe(true);
      b.close();
    } finally {
      if (saved === undefined) delete process.env.XENIDE_LOCK_HELPER;
      else process.env.XENIDE_LOCK_HELPER = saved;
    }
  });
});
