// The exclusive writer lock across processes: a second xenide process must not open an image being written.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, afterEach, describe, expect, it } from "vitest";

import { ImageError, ImageLockedError } from "../../src/storage/errors.ts";
import { createImage } from "../../src/storage/image.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { pattern, tempDir } from "./helpers.ts";

const HOLDER = fileURLToPath(new URL("./fixtures/hold-image.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

/** Start a child xenide process holding `image` for writing; resolves once it holds the lock. */
function holdInChild(image: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, image], {
    cwd: REPO,
    stdio: ["pipe", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("ready")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`holder exited early with ${code}`)));
  });
}

function digest(file: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

function newImage(name: string): string {
  const file = path.join(dir, name);
  createImage(file, 64 * 512);
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, pattern(4096, 77), 0, 4096, 0);
  fs.closeSync(fd);
  return file;
}

describe("image writer lock", () => {
  it("refuses a second writer in another process, naming its pid, and touches nothing", async () => {
    const img = newImage("held.img");
    const child = await holdInChild(img);
    const before = digest(img);
    const mtime = fs.statSync(img).mtimeMs;
    let err: unknown;
    try {
      RawImageBackend.open(img);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ImageLockedError);
    expect((err as ImageLockedError).code).toBe("ELOCKED");
    expect((err as ImageLockedError).pid).toBe(child.pid);
    expect((err as Error).message).toContain(String(child.pid));
    expect(digest(img)).toBe(before);
    expect(fs.statSync(img).mtimeMs).toBe(mtime);
    expect(fs.readFileSync(`${img}.lock`, "utf8").trim()).toBe(String(child.pid));

    // A read-only open is refused too while a writer is live, unless locking is turned off.
    expect(() => RawImageBackend.open(img, { readOnly: true })).toThrow(ImageLockedError);
    const ro = RawImageBackend.open(img, { readOnly: true, lock: false });
    const buf = new Uint8Array(4096);
    ro.read(0, [buf]);
    expect(buf).toEqual(pattern(4096, 77));
    ro.close();

    // Once the holder closes, the lock file is gone and we can open for writing.
    child.stdin!.end();
    await new Promise((r) => child.once("exit", r));
    expect(fs.existsSync(`${img}.lock`)).toBe(false);
    const rw = RawImageBackend.open(img);
    expect(fs.readFileSync(`${img}.lock`, "utf8").trim()).toBe(String(process.pid));
    rw.close();
    expect(fs.existsSync(`${img}.lock`)).toBe(false);
  });

  it("refuses a second writer in the same process", () => {
    const img = newImage("twice.img");
    const first = RawImageBackend.open(img);
    try {
      expect(() => RawImageBackend.open(img)).toThrow(new RegExp(`process ${process.pid}`));
    } finally {
      first.close();
    }
    RawImageBackend.open(img).close(); // released by close
  });

  it("takes over the stale lock of a dead process", () => {
    const img = newImage("stale.img");
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    });
    const deadPid = Number(dead.stdout);
    expect(deadPid).toBeGreaterThan(0);
    fs.writeFileSync(`${img}.lock`, `${deadPid}\n`);
    const b = RawImageBackend.open(img);
    expect(fs.readFileSync(`${img}.lock`, "utf8").trim()).toBe(String(process.pid));
    b.close();
    expect(fs.existsSync(`${img}.lock`)).toBe(false);
    // No temporary files left beside the image.
    expect(fs.readdirSync(dir).filter((f) => f.startsWith(".stale") || f.includes("stale.img.lock"))).toEqual(
      [],
    );
  });

  it("takes over a garbage lock file", () => {
    const img = newImage("garbage.img");
    fs.writeFileSync(`${img}.lock`, "not a pid");
    RawImageBackend.open(img).close();
    expect(fs.existsSync(`${img}.lock`)).toBe(false);
  });

  it("releases the lock when the holder exits without closing", () => {
    const img = newImage("exit.img");
    const code = `import { RawImageBackend } from ${JSON.stringify(path.join(REPO, "src/storage/raw.ts"))};
RawImageBackend.open(${JSON.stringify(img)}); process.exit(0);`;
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
      cwd: REPO,
      encoding: "utf8",
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(fs.existsSync(`${img}.lock`)).toBe(false);
  });

  it("a failed open (bad size) leaves no lock behind", () => {
    const img = path.join(dir, "odd.img");
    fs.writeFileSync(img, new Uint8Array(1000));
    expect(() => RawImageBackend.open(img)).toThrow(ImageError);
    expect(fs.existsSync(`${img}.lock`)).toBe(false);
  });
});
