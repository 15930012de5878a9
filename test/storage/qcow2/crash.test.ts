// SIGKILL during a write storm into a qcow2 overlay (a child process writes, discards and flushes until
// killed at a random moment): afterwards `qemu-img check -r all` repairs the image (at most leaked clusters),
// a second check finds it clean, and every sector holds what it held at the last completed flush or what a
// later op wrote to it (nothing flushed is lost, nothing is garbage), as QEMU reads it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, describe, expect, it } from "vitest";

import { sectorBytes, stormOps } from "./crash-ops.ts";
import { fastTempDir, qemuCheck, qemuImg, qemuIo, qemuRaw, requireQemuUtils } from "./qemu.ts";

const ok = requireQemuUtils("the qcow2 SIGKILL test");
const STORM = fileURLToPath(new URL("./fixtures/write-storm.ts", import.meta.url));
const TSX = new URL("../../../node_modules/tsx/dist/loader.mjs", import.meta.url).href;

const SIZE = 8 << 20;
const SECTORS = SIZE / 512;
/** More ops than can run between two flushes (one every 16) and the kill; the check replays this many. */
const AFTER_FLUSH = 64;

/** Run the storm on `image` and SIGKILL it `delayMs` after it starts writing; the last flushed op, or -1. */
function stormAndKill(image: string, seed: number, delayMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", TSX, STORM, image, String(seed)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (timer === undefined && out.startsWith("R\n"))
        timer = setTimeout(() => child.kill("SIGKILL"), delayMs);
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("close", (_code, signal) => {
      if (signal !== "SIGKILL") return reject(new Error(`the storm ended by itself: ${err}`));
      const flushes = [...out.matchAll(/^F (\d+)$/gm)].map((m) => Number(m[1]));
      resolve(flushes.length > 0 ? flushes[flushes.length - 1]! : -1);
    });
  });
}

(ok ? describe : describe.skip)("SIGKILL during a qcow2 write storm", () => {
  const dir = fastTempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const [seed, delay] of [
    [11, 700],
    [12, 1100],
    [13, 1500],
  ] as const) {
    it(`seed ${seed}, killed ${delay} ms in: repaired by qemu-img, nothing flushed lost`, async () => {
      const base = path.join(dir, `base${seed}.raw`);
      fs.writeFileSync(base, Buffer.alloc(SIZE));
      qemuIo("raw", base, ["write -P 0x77 0 8m"]);
      const img = path.join(dir, `top${seed}.qcow2`);
      qemuImg([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        path.basename(base),
        "-F",
        "raw",
        img,
      ]);

      const flushed = await stormAndKill(img, seed, delay);
      expect(flushed).toBeGreaterThan(32);

      const repair = qemuCheck(img, true);
      // Leaks at most: no cluster in use had too low a refcount ("ERROR", "corruptions-fixed").
      expect(repair.out).not.toMatch(/ERROR|corruptions-fixed/);
      expect(repair.status).toBe(0);
      const after = qemuCheck(img);
      expect({ status: after.status, corruptions: after.corruptions, leaks: after.leaks }).toEqual({
        status: 0,
        corruptions: 0,
        leaks: 0,
      });

      // Replay: the state at the last flush, and what later ops may have changed.
      const at = new Int32Array(SECTORS).fill(-2); // -2 the base's bytes, -1 zeroes, else the op that wrote it
      const later = new Map<number, number[]>();
      const ops = stormOps(seed, SECTORS);
      for (let i = 0; i <= flushed + AFTER_FLUSH; i++) {
        const op = ops(i);
        if (op.kind === "flush") continue;
        for (let s = op.sector; s < op.sector + op.count; s++) {
          const v = op.kind === "write" ? i : -1;
          if (i <= flushed) at[s] = v;
          else later.set(s, [...(later.get(s) ?? []), v]);
        }
      }
      const data = qemuRaw(img, dir);
      const baseSector = Buffer.alloc(512, 0x77);
      const zero = Buffer.alloc(512);
      const bytesOf = (v: number, s: number) =>
        v === -2 ? baseSector : v === -1 ? zero : Buffer.from(sectorBytes(v, s));
      let bad = 0;
      for (let s = 0; s < SECTORS; s++) {
        const got = data.subarray(s * 512, (s + 1) * 512);
        const allowed = [at[s]!, ...(later.get(s) ?? [])];
        if (!allowed.some((v) => got.equals(bytesOf(v, s)))) bad++;
      }
      expect(bad).toBe(0);
    }, 30_000);
  }
});
