/**
 * One exit status convention for every command (README "Exit status", and every command's --help): 0 success,
 * 1 the operation failed, 2 a usage error; each failure is one line on stderr with no stack.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { xenide } from "./run.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-exit-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const img = path.join(dir, "disk.img");
fs.writeFileSync(img, new Uint8Array(64 * 512));
const input = path.join(dir, "in.bin");
fs.writeFileSync(input, new Uint8Array(512));
const missing = path.join(dir, "missing.img");

const usage: string[][] = [
  ["mkimage", path.join(dir, "new.img"), "--size", "abc"],
  ["mkimage", path.join(dir, "new.img"), "--size", "1000"],
  ["read", img, "--lba", "abc"],
  ["read", img, "--lba", "0", "--engine", "warp"],
  ["write", img, "--lba", "abc", "-i", input],
  ["identify", img, "--via", "dma"],
  ["qtest", "--ram", "abc"],
  ["qtest", "--ram", "5G"],
  ["pv-keys", img, "--queues", "9"],
  ["bench", "--repeats", "0"],
  ["vm", img, "--timeout", "abc"],
  ["nosuchcommand"],
  ["read", img, "--no-such-flag"],
  ["read", "nbd://host:99999/x", "--lba", "0"], // a malformed NBD URL is a malformed value
  ["info", "nbd://host:99999/x"],
];

const failed: string[][] = [
  ["read", missing, "--lba", "0"],
  ["identify", missing],
  ["pv-keys", missing],
  ["qtest", "--disk", missing],
  ["write", missing, "--lba", "0", "-i", input],
  ["mkimage", img, "--size", "1M"], // exists: refused without --force
];

describe("exit status", () => {
  it.each(usage)("usage error → 2: %j", (...args) => {
    const r = xenide(args, { cwd: dir });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  });

  it.each(failed)("operation failed → 1: %j", (...args) => {
    const r = xenide(args, { cwd: dir, input: "" });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  });

  // An empty file name is a usage error naming the option, before anything is opened or run (`bench --out ""`
  // used to run the whole benchmark; `read ""` printed a raw ENOENT).
  it.each([
    [["read", "", "--lba", "0"], "<image>"],
    [["mkimage", "", "--size", "1M"], "<file>"],
    [["read", img, "--lba", "0", "--trace", ""], "--trace"],
    [["qtest", "--disk", ""], "--disk"],
    [["bench", "--out", ""], "--out"],
    [["demo", "--image", ""], "--image"],
    [["report", ""], "<json>"],
  ])("an empty file name → 2, one line: %j", (args, name) => {
    const r = xenide(args, { cwd: dir });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual([
      `xenide: ${name}: a file name is needed, not an empty string`,
    ]);
  });

  it("bench with a bad value: one line (not a second from the process it re-runs in), no --out directory made", () => {
    const out = path.join(dir, "bench-out", "new");
    const r = xenide(["bench", "--out", out, "--repeats", "0"], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual([
      "xenide: --repeats must be a positive whole number, got '0'",
    ]);
    expect(fs.existsSync(path.join(dir, "bench-out"))).toBe(false);
  });

  it("every command's --help states it", () => {
    for (const c of [
      [],
      ["mkimage"],
      ["identify"],
      ["read"],
      ["write"],
      ["qtest"],
      ["pv-keys"],
      ["vm"],
      ["bench"],
      ["report"],
      ["demo"],
    ]) {
      const r = xenide([...c, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout, c.join(" ")).toMatch(
        /Exit status: 0 success, 1 the operation failed.*\n.*2 a usage error/,
      );
    }
  });
});

describe("--trace", () => {
  it.each([
    ["read", img, "--lba", "0", "--trace", "/proc/version"],
    ["qtest", "--trace", "/proc/version"],
    ["read", img, "--lba", "0", "--trace", path.join(dir, "no-such-dir", "t.jsonl")],
    ["read", img, "--lba", "0", "--trace", "-"],
  ])("a file that cannot take the trace is refused before anything runs: %j", (...args) => {
    const r = xenide(args, { input: "" });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(/^xenide: --trace .*: (cannot write it \(E[A-Z]+\)|give a file name.*)$/),
    ]);
    expect(r.stdout).toBe(""); // no dump, no "wrote": the transfer never started
  });
});

describe("--help lists what an option takes", () => {
  it("--cost names every kind, --indirect and --multiple their values, defaults as numbers", () => {
    const read = xenide(["read", "--help"]).stdout.replace(/\s+/g, " ");
    for (const k of ["pioIn", "pioOut", "stringIo", "mmio", "bufferedWrite", "hypercall", "irqInject"])
      expect(read).toContain(k);
    expect(read).toMatch(/1, 2, 4, 8 or 16/);
    expect(xenide(["qtest", "--help"]).stdout.replace(/\s+/g, " ")).toContain("evtchnNotify");
    const pv = xenide(["pv-keys", "--help"]).stdout.replace(/\s+/g, " ");
    expect(pv).toContain("0 (none), 32, 64, 128 or 256 (default: 32)");
    expect(xenide(["bench", "--help"]).stdout.replace(/\s+/g, " ")).toMatch(/default: 3\b.*default: 150/);
  });
});

describe("report", () => {
  it("an --out it cannot make is one line, exit 2, at once (no endless mkdir under /proc)", () => {
    const bench = path.join(dir, "..", "bench-latest.json");
    fs.copyFileSync(new URL("../../bench/latest.json", import.meta.url), bench);
    try {
      const r = xenide(["report", bench, "--out", "/proc/xenide-report"]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(/--out \/proc\/xenide-report: cannot write there/),
      ]);
    } finally {
      fs.rmSync(bench, { force: true });
    }
  });
});
