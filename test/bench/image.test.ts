/**
 * The demo and the benchmark make their own image and never touch a file they did not make: a stamp sector
 * after the data marks an image as theirs; anything else that exists is refused unless `--force`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ImageExistsError, prepareImage } from "../../src/bench/image.ts";
import { xenide } from "../cli/run.ts";

const MiB = 1 << 20;
let dir = "";
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = "";
});
const tmp = () => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-bench-image-")));

/** A user's file: random bytes, with its size and modification time. */
function userFile(p: string, bytes: number) {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 65536)
    data.set(crypto.getRandomValues(new Uint8Array(Math.min(65536, bytes - i))), i);
  fs.writeFileSync(p, data);
  fs.utimesSync(p, new Date(2020, 0, 1), new Date(2020, 0, 1));
  return { data, mtimeMs: fs.statSync(p).mtimeMs };
}

describe("the bench and demo image", () => {
  it("is made once, then reused as it is; the data the workloads touch end before the stamp", () => {
    const p = path.join(tmp(), "bench.img");
    prepareImage(p, 2 * MiB);
    expect(fs.statSync(p).size).toBe(2 * MiB + 512);
    const fd = fs.openSync(p, "r+");
    fs.writeSync(fd, new Uint8Array(512).fill(0xee), 0, 512, 4096); // what a workload leaves behind
    fs.closeSync(fd);
    prepareImage(p, 2 * MiB);
    expect(
      fs
        .readFileSync(p)
        .subarray(4096, 4608)
        .every((b) => b === 0xee),
    ).toBe(true);
  });

  it("refuses an existing file it did not make, even one of the same size, and leaves it as it was", () => {
    const d = tmp();
    for (const bytes of [2 * MiB, 2 * MiB + 512, 4096]) {
      const p = path.join(d, `user-${bytes}.img`);
      const before = userFile(p, bytes);
      expect(() => prepareImage(p, 2 * MiB)).toThrow(ImageExistsError);
      expect(Buffer.from(fs.readFileSync(p)).equals(Buffer.from(before.data))).toBe(true);
      expect(fs.statSync(p).mtimeMs).toBe(before.mtimeMs);
    }
  });

  it("overwrites a file it did not make only when forced", () => {
    const p = path.join(tmp(), "user.img");
    userFile(p, 8192);
    prepareImage(p, MiB, { force: true });
    expect(fs.statSync(p).size).toBe(MiB + 512);
    prepareImage(p, MiB); // now it is the bench's own
  });
});

describe("xenide demo and bench leave other files alone", () => {
  it("demo --image on a user's file: one line, exit 1, the file unchanged", () => {
    const p = path.join(tmp(), "mine.img");
    const before = userFile(p, 64 * 1024);
    const r = xenide(["demo", "--image", p]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/exists and is not an image xenide made.*--force/);
    expect(Buffer.from(fs.readFileSync(p)).equals(Buffer.from(before.data))).toBe(true);
    expect(fs.statSync(p).mtimeMs).toBe(before.mtimeMs);
  });

  it("bench --image on a user's file: one line, exit 1, the file unchanged", () => {
    const p = path.join(tmp(), "mine.img");
    const before = userFile(p, 64 * 1024);
    const r = xenide(["bench", "--quick", "--image", p, "--no-rss", "--no-qtest", "--threadpool", "4"], {
      env: { UV_THREADPOOL_SIZE: "4" },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/exists and is not an image xenide made/);
    expect(Buffer.from(fs.readFileSync(p)).equals(Buffer.from(before.data))).toBe(true);
  });

  it("bench writes no file unless --out or --json names one", () => {
    const cwd = tmp();
    const r = xenide(
      [
        "bench",
        "--quick",
        "--no-rss",
        "--no-qtest",
        "--only",
        "ide-dma",
        "--repeats",
        "1",
        "--budget",
        "10",
        "--threadpool",
        "4",
      ],
      { cwd, env: { UV_THREADPOOL_SIZE: "4" } },
    );
    expect(r.code).toBe(0);
    expect(fs.readdirSync(cwd)).toEqual([]);
  });

  it("bench refuses an --out or --json it cannot write before running anything", () => {
    const d = tmp();
    fs.mkdirSync(path.join(d, "adir"));
    for (const args of [
      ["--json", path.join(d, "missing", "x.json")],
      ["--json", path.join(d, "adir")],
      ["--out", "/proc/xenide-bench"],
    ]) {
      const r = xenide(["bench", "--quick", "--threadpool", "4", ...args], {
        env: { UV_THREADPOOL_SIZE: "4" },
      });
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/cannot write/);
    }
  });
});
