import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { xenide } from "./run.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-cli-"));

describe("xenide mkimage", () => {
  it("creates a sparse image of the requested size", () => {
    const img = join(dir, "a.img");
    const r = xenide(["mkimage", img, "--size", "64M"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/67108864 bytes/);
    const st = statSync(img);
    expect(st.size).toBe(64 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(1024 * 1024); // sparse: next to nothing allocated
  });

  it("refuses to overwrite without --force and leaves the file alone", () => {
    const img = join(dir, "b.img");
    writeFileSync(img, Buffer.alloc(1024, 0x5a));
    const r = xenide(["mkimage", img, "--size", "1M"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/already exists.*--force/);
    expect(readFileSync(img).equals(Buffer.alloc(1024, 0x5a))).toBe(true);
    expect(xenide(["mkimage", img, "--size", "1M", "--force"]).code).toBe(0);
    expect(statSync(img).size).toBe(1024 * 1024);
  });

  it.each([
    [["mkimage", "x.img", "--size", "1000"], /whole number of 512-byte sectors/],
    [["mkimage", "x.img", "--size", "12Q"], /invalid size/],
    [["mkimage", "x.img"], /required option/],
    [["mkimage"], /required option|missing required argument/],
    [["nosuchcommand"], /unknown command|too many arguments/],
  ])("gives one clear line and a non-zero exit for %j", (args, msg) => {
    const r = xenide(args as string[], { cwd: dir });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("has help for the program and the command", () => {
    expect(xenide(["--help"]).stdout).toMatch(/mkimage/);
    expect(xenide(["mkimage", "--help"]).stdout).toMatch(/Examples:/);
  });
});
