// The image lock as the command line meets it: `read` and `identify` share an image with other readers,
// `write` is refused while anyone reads it, everything is refused while someone writes it (one line naming the
// holder and how it holds the image), and a read-only image file reads without --read-only.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, afterEach, describe, expect, it } from "vitest";

import { createImage } from "../../src/storage/image.ts";
import { xenide } from "../cli/run.ts";
import { pattern, tempDir } from "./helpers.ts";
import { protect, protectUnavailable, unprotect } from "./protect.ts";

const HOLDER = fileURLToPath(new URL("./fixtures/hold-image.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../", import.meta.url));

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const protectSkip = protectUnavailable();
if (protectSkip) console.log(`the read-only image file test is skipped: ${protectSkip}`);

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

function newImage(name: string): string {
  const file = path.join(dir, name);
  createImage(file, 64 * 512);
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, pattern(4096, 9), 0, 4096, 0);
  fs.closeSync(fd);
  return file;
}

/** A child process holding `image` for `mode` until its stdin closes. */
function hold(image: string, mode: "read" | "write"): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, image, mode], {
    cwd: REPO,
    stdio: ["pipe", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => (d.toString().startsWith("ready") ? resolve(child) : undefined));
    child.on("exit", (code) => reject(new Error(`holder exited early with ${code}`)));
  });
}

/** One line on stderr, exit 1. */
function expectRefused(r: ReturnType<typeof xenide>, text: string): void {
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toContain(text);
  expect(r.code).toBe(1);
}

describe("the image lock on the command line", () => {
  it("read and identify share the image with another reader", async () => {
    const img = newImage("shared.img");
    await hold(img, "read");
    const id = xenide(["identify", img]);
    expect(id.stderr).toBe("");
    expect(id.code).toBe(0);
    const r = xenide(["read", img, "--lba", "0", "--count", "8", "-o", "-", "--no-progress"]);
    expect(r.stderr).toMatch(/^\ncost of reading 8 sector/); // the report goes to stderr with -o -
    expect(r.code).toBe(0);
    expect(new Uint8Array(r.raw)).toEqual(pattern(4096, 9));
  });

  it("write is refused while another process reads the image, naming it", async () => {
    const img = newImage("read-held.img");
    const input = path.join(dir, "sector.bin");
    fs.writeFileSync(input, new Uint8Array(512).fill(0xee));
    const reader = await hold(img, "read");
    const before = fs.readFileSync(img);
    const w = xenide(["write", img, "--lba", "0", "-i", input, "--no-progress"]);
    expectRefused(w, `${img} is in use: process ${reader.pid} (node) holds it for reading`);
    expect(fs.readFileSync(img)).toEqual(before);
  });

  it("read, identify and write are refused while another process writes the image, naming it", async () => {
    const img = newImage("write-held.img");
    const writer = await hold(img, "write");
    const text = `${img} is in use: process ${writer.pid} (node) holds it for writing`;
    expectRefused(xenide(["identify", img]), text);
    expectRefused(xenide(["read", img, "--lba", "0", "--no-progress"]), text);
    const input = path.join(dir, "sector2.bin");
    fs.writeFileSync(input, new Uint8Array(512));
    expectRefused(xenide(["write", img, "--lba", "0", "-i", input, "--no-progress"]), text);
  });

  (protectSkip ? it.skip : it)("a read-only image file is read and identified without --read-only", () => {
    const img = newImage("readonly.img");
    protect(img);
    try {
      expect(() => fs.openSync(img, "r+")).toThrow(); // not writable, even for root
      const r = xenide(["read", img, "--lba", "0", "--count", "8", "-o", "-", "--no-progress"]);
      expect(r.stderr).toMatch(/^\ncost of reading 8 sector/); // the report goes to stderr with -o -
      expect(r.code).toBe(0);
      expect(new Uint8Array(r.raw)).toEqual(pattern(4096, 9));
      const id = xenide(["identify", img]);
      expect(id.stderr).toBe("");
      expect(id.code).toBe(0);
      expect(fs.readdirSync(dir).filter((n) => n.startsWith("readonly.img."))).toEqual([]);
    } finally {
      unprotect(img);
    }
  });
});
