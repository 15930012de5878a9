// xenide's kernel lock against QEMU's own (block/file-posix.c, OFD locks on bytes 100+ and 200+ of the image):
// Debian's qemu-io, qemu-img and qemu-system-x86_64 refuse an image xenide writes, xenide refuses one they
// write, and each names the other. Needs qemu-utils and qemu-system-x86 (skipped with a one-line reason when
// missing, except under CI) and the kernel lock (perl or python3).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, afterEach, describe, expect, it } from "vitest";

import { ImageLockedError } from "../../src/storage/errors.ts";
import { createImage } from "../../src/storage/image.ts";
import { kernelLockUnavailable } from "../../src/storage/lock.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { pattern, sleep, tempDir } from "./helpers.ts";

const HOLDER = fileURLToPath(new URL("./fixtures/hold-image.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const QEMU = process.env.XENIDE_QEMU ?? "qemu-system-x86_64";

function missing(): string | undefined {
  for (const [program, pkg] of [
    ["qemu-io", "qemu-utils"],
    ["qemu-img", "qemu-utils"],
    [QEMU, "qemu-system-x86"],
  ] as const) {
    if (spawnSync(program, ["--version"]).status !== 0)
      return `${program} not found (apt-get install ${pkg})`;
  }
  const k = kernelLockUnavailable();
  return k ? `no kernel lock: ${k}` : undefined;
}

const reason = missing();
if (reason && process.env.CI === "true") {
  it("qemu-utils, qemu-system-x86 and the kernel lock are there (required under CI)", () => {
    throw new Error(reason);
  });
} else if (reason) {
  console.log(`skipping the QEMU lock interop tests: ${reason}`);
}

const LOCK_WRITE = 'Failed to get "write" lock';
const LOCK_SHARED_WRITE = 'Failed to get shared "write" lock';

(reason ? describe.skip : describe)("the image lock against QEMU's", () => {
  const dir = tempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill("SIGKILL");
  });

  let n = 0;
  function newImage(): string {
    const file = path.join(dir, `img${n++}.img`);
    createImage(file, 64 * 512);
    const fd = fs.openSync(file, "r+");
    fs.writeSync(fd, pattern(4096, 5), 0, 4096, 0);
    fs.closeSync(fd);
    return file;
  }

  function digest(file: string): string {
    return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
  }

  function qemuIo(args: string[]) {
    const r = spawnSync("qemu-io", ["-f", "raw", ...args], { encoding: "utf8", timeout: 30_000 });
    return { status: r.status, out: r.stdout + r.stderr };
  }

  function qemuImgConvert(img: string) {
    const out = `${img}.copy`;
    const r = spawnSync("qemu-img", ["convert", "-f", "raw", "-O", "raw", img, out], {
      encoding: "utf8",
      timeout: 30_000,
    });
    fs.rmSync(out, { force: true });
    return { status: r.status, out: r.stdout + r.stderr };
  }

  function qemuArgs(img: string, drive = ""): string[] {
    return [
      "-M",
      "pc",
      "-nodefaults",
      "-display",
      "none",
      "-S",
      "-drive",
      `file=${img},format=raw,if=ide${drive}`,
    ];
  }

  /**
   * Wait until process `pid` holds locks on all of `bytes` of `img`. QEMU takes its locks in steps while it
   * starts (byte 100 alone first, then its final set), so wait for the final set.
   */
  async function lockedBy(pid: number, img: string, bytes: number[]): Promise<void> {
    const ino = fs.statSync(img).ino;
    const line = new RegExp(`^lock:.*:${ino} (\\d+) (\\d+|EOF)$`, "gm");
    for (let i = 0; i < 300; i++) {
      let fds: string[] = [];
      try {
        fds = fs.readdirSync(`/proc/${pid}/fdinfo`);
      } catch {
        throw new Error(`process ${pid} is gone: ${stderrOf.get(pid) ?? ""}`);
      }
      const held = new Set<number>();
      for (const fd of fds) {
        let info = "";
        try {
          info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8");
        } catch {
          continue;
        }
        for (const m of info.matchAll(line)) {
          const end = m[2] === "EOF" ? 1000 : Number(m[2]);
          for (let b = Number(m[1]); b <= end && b < 1000; b++) held.add(b);
        }
      }
      if (bytes.every((b) => held.has(b))) return;
      await sleep(50);
    }
    throw new Error(
      `process ${pid} never locked bytes ${bytes.join(",")} of ${img}: ${stderrOf.get(pid) ?? ""}`,
    );
  }

  const stderrOf = new Map<number, string>();
  function start(cmd: string, args: string[]): ChildProcess {
    const child = spawn(cmd, args, { stdio: ["pipe", "ignore", "pipe"] });
    children.push(child);
    stderrOf.set(child.pid!, "");
    child.stderr!.on("data", (d: Buffer) =>
      stderrOf.set(child.pid!, stderrOf.get(child.pid!) + d.toString()),
    );
    return child;
  }

  async function stop(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }

  function refusedBy(img: string, readOnly: boolean): ImageLockedError {
    try {
      RawImageBackend.open(img, { readOnly }).close();
    } catch (e) {
      expect(e).toBeInstanceOf(ImageLockedError);
      return e as ImageLockedError;
    }
    throw new Error(`${readOnly ? "read-only" : "read-write"} open of ${img} was not refused`);
  }

  it("xenide writing: qemu-io cannot write, qemu-img cannot read, and both can once xenide closes", () => {
    const img = newImage();
    const before = digest(img);
    const b = RawImageBackend.open(img);
    expect(b.lock?.kernel).toBe(true);
    const w = qemuIo(["-c", "write -P 0xab 0 512", img]);
    expect(w.status).not.toBe(0);
    expect(w.out).toContain(LOCK_WRITE);
    const c = qemuImgConvert(img);
    expect(c.status).not.toBe(0);
    expect(c.out).toContain(LOCK_SHARED_WRITE);
    expect(digest(img)).toBe(before);
    b.close();

    expect(qemuImgConvert(img).status).toBe(0);
    const again = qemuIo(["-c", "write -P 0xab 0 512", img]);
    expect(again.out).not.toContain("lock");
    expect(again.status).toBe(0);
    expect(fs.readFileSync(img).subarray(0, 512)).toEqual(Buffer.alloc(512, 0xab));
  });

  it("xenide reading: qemu-io and qemu-system-x86_64 cannot write; qemu-img reads alongside", () => {
    const img = newImage();
    const before = digest(img);
    const r1 = RawImageBackend.open(img, { readOnly: true });
    const r2 = RawImageBackend.open(img, { readOnly: true });
    const w = qemuIo(["-c", "write -P 0xab 0 512", img]);
    expect(w.status).not.toBe(0);
    expect(w.out).toContain(LOCK_WRITE);
    const q = spawnSync(QEMU, qemuArgs(img), { encoding: "utf8", timeout: 30_000 });
    expect(q.status).toBe(1);
    expect(q.stderr).toContain(LOCK_WRITE);
    expect(qemuImgConvert(img).status).toBe(0);
    expect(digest(img)).toBe(before);
    r1.close();
    r2.close();
  });

  it("qemu-io writing: xenide refuses to write or read, naming qemu-io", async () => {
    const img = newImage();
    const q = start("qemu-io", ["-f", "raw", img]); // interactive: holds the image until its stdin closes
    await lockedBy(q.pid!, img, [100, 101]); // qemu-io uses write and shares everything
    for (const readOnly of [false, true]) {
      const e = refusedBy(img, readOnly);
      expect(e.pid).toBe(q.pid);
      expect(e.program).toBe("qemu-io");
      expect(e.message).toBe(`${img} is in use: process ${q.pid} (qemu-io) holds it for writing`);
    }
    const exited = new Promise((r) => q.once("exit", r));
    q.stdin!.end();
    await exited;
    RawImageBackend.open(img).close();
  });

  it("qemu-system-x86_64 with the image as an IDE disk: each refuses the other", async () => {
    const img = newImage();
    const q = start(QEMU, qemuArgs(img));
    await lockedBy(q.pid!, img, [100, 101, 201]);
    for (const readOnly of [false, true]) {
      const e = refusedBy(img, readOnly);
      expect(e.pid).toBe(q.pid);
      expect(e.message).toMatch(/process \d+ \(qemu-system-x86\) holds it for writing$/);
    }
    await stop(q);

    const b = RawImageBackend.open(img);
    const r = spawnSync(QEMU, qemuArgs(img), { encoding: "utf8", timeout: 30_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(LOCK_WRITE);
    b.close();
  });

  it("a read-only QEMU drive (an IDE CD-ROM): xenide may read alongside but not write", async () => {
    const img = newImage();
    const q = start(QEMU, qemuArgs(img, ",media=cdrom"));
    await lockedBy(q.pid!, img, [100, 201]);
    const e = refusedBy(img, false);
    expect(e.message).toMatch(/process \d+ \(qemu-system-x86\) holds it for reading$/);
    RawImageBackend.open(img, { readOnly: true }).close();
    await stop(q);
  });

  it("a xenide writer killed with SIGKILL leaves no lock that stops QEMU", async () => {
    const img = newImage();
    const child = spawn(process.execPath, ["--import", "tsx", HOLDER, img, "write"], {
      cwd: REPO,
      stdio: ["pipe", "pipe", "inherit"],
    });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (d: Buffer) =>
        d.toString().includes("ready kernel") ? resolve() : undefined,
      );
      child.on("exit", (code) => reject(new Error(`holder exited with ${code}`)));
    });
    expect(qemuIo(["-c", "write 0 512", img]).out).toContain(LOCK_WRITE);
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    const w = qemuIo(["-c", "write 0 512", img]);
    expect(w.out).not.toContain("lock");
    expect(w.status).toBe(0);
  });
});
