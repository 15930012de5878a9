/**
 * What the CLI reports is what the image is, not how it was named or opened: the default drive serial comes
 * from the file itself, and pv-keys shows the xenstore keys a toolstack would write for the disk.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { xenide } from "./run.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-honest-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const img = path.join(dir, "disk.img");
fs.writeFileSync(img, new Uint8Array(2048 * 512));

const serial = (r: { stdout: string }) => /^serial\s+(\S+)/m.exec(r.stdout)?.[1];

describe("honest output", () => {
  it("the default serial is the same however the path is written, and differs for another file", () => {
    const a = serial(xenide(["identify", "disk.img"], { cwd: dir }));
    const b = serial(xenide(["identify", "./disk.img"], { cwd: dir }));
    const c = serial(xenide(["identify", img]));
    const d = serial(
      xenide(["identify", path.join(dir, "..", path.basename(dir), "disk.img"), "--engine", "async"]),
    );
    expect(a).toMatch(/^XI[0-9A-F]+$/);
    expect([b, c, d]).toEqual([a, a, a]);
    const copy = path.join(dir, "copy.img");
    fs.copyFileSync(img, copy);
    expect(serial(xenide(["identify", copy]))).not.toBe(a);
  });

  it("pv-keys gives a writable image as a toolstack would (mode w, info 0, params the path) and writes nothing", () => {
    const before = { data: fs.readFileSync(img), mtimeMs: fs.statSync(img).mtimeMs };
    const r = xenide(["pv-keys", img, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const keys = (JSON.parse(r.stdout) as { keys: Record<string, string> }).keys;
    const be = "/local/domain/0/backend/vbd/1/51712";
    expect([keys[`${be}/mode`], keys[`${be}/info`], keys[`${be}/params`]]).toEqual(["w", "0", img]);
    const ro = JSON.parse(xenide(["pv-keys", img, "--json", "--read-only"]).stdout) as {
      keys: Record<string, string>;
    };
    expect([ro.keys[`${be}/mode`], ro.keys[`${be}/info`]]).toEqual(["r", "4"]); // VDISK_READONLY (io/blkif.h)
    expect(fs.readFileSync(img).equals(before.data)).toBe(true);
    expect(fs.statSync(img).mtimeMs).toBe(before.mtimeMs);
  });
});

describe("--trace", () => {
  it("marks where set-up ends; the exits between the marks are the ones the cost report counts", () => {
    const trace = path.join(dir, "t.jsonl");
    const r = xenide([
      "read",
      img,
      "--lba",
      "8",
      "--count",
      "16",
      "--via",
      "dma",
      "--json",
      "--trace",
      trace,
      "-o",
      path.join(dir, "o.bin"),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const cost = (
      JSON.parse(r.stdout) as {
        cost: { exits: number };
      }
    ).cost;
    const events = fs
      .readFileSync(trace, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { ev: string; phase?: string; portHex?: string; port?: number });
    const at = (p: string) => events.findIndex((e) => e.ev === "phase" && e.phase === p);
    expect(at("transfer")).toBeGreaterThan(0); // PCI scan, probe and IDENTIFY come first
    const between = events.slice(at("transfer") + 1, at("done"));
    expect(between.filter((e) => e.ev === "ioreq" || e.ev === "bufioreq").length).toBe(cost.exits);
    const io = between.find((e) => e.ev === "ioreq")!;
    expect(io.portHex).toBe(`0x${io.port!.toString(16)}`);
  });
});
