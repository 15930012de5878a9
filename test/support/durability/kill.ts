/**
 * One durability trial: start the writer child on a fresh image, let it run, SIGKILL it at a random point, then
 * check the image sector by sector against what the child reported:
 * - every sector holds a whole write of ours (or zeroes if never written): nothing torn, nothing foreign;
 * - a sector never holds a write older than the newest one made durable: with the write cache on, durable means
 *   acknowledged before a completed flush; with it off (SET FEATURES 82h), acknowledged at all.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { sectorGen } from "./sectors.ts";

const tsxLoader = new URL("../../../node_modules/tsx/dist/loader.mjs", import.meta.url).href;
const writerPath = new URL("./writer.ts", import.meta.url).pathname;

export type WriterMode = "ide" | "ide-nocache" | "pv";

export interface TrialResult {
  mode: WriterMode;
  acked: number;
  flushes: number;
  /** Sectors whose newest durable write was checked. */
  durableSectors: number;
  killedAfterMs: number;
}

export async function killTrial(
  image: string,
  mode: WriterMode,
  seed: number,
  killAfterMs: number,
): Promise<TrialResult> {
  const sectors = 4096;
  rmSync(image, { force: true });
  const fd = openSync(image, "w");
  writeSync(fd, Buffer.alloc(1), 0, 1, sectors * 512 - 1); // sparse image, all zeroes
  closeSync(fd);
  const writes = new Map<number, { lba: number; count: number }>();
  const durable = new Int32Array(sectors); // newest durable generation per sector
  let acked = 0;
  let flushes = 0;
  let ready = false;
  const child = spawn(process.execPath, ["--import", tsxLoader, writerPath, image, mode, String(seed)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  let pending = "";
  const onLine = (line: string) => {
    const [k, a, b, c] = line.split(" ");
    if (k === "READY") ready = true;
    else if (k === "A") {
      const gen = Number(a);
      const w = { lba: Number(b), count: Number(c) };
      writes.set(gen, w);
      acked++;
      if (mode === "ide-nocache") mark(gen, w);
    } else if (k === "F") {
      flushes++;
      const upTo = Number(a);
      for (const [gen, w] of writes) {
        if (gen > upTo) continue;
        mark(gen, w);
        writes.delete(gen);
      }
    }
  };
  const mark = (gen: number, w: { lba: number; count: number }) => {
    for (let s = w.lba; s < w.lba + w.count; s++) if (gen > durable[s]!) durable[s] = gen;
  };
  child.stdout.on("data", (d: Buffer) => {
    pending += d.toString();
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      onLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  // Start the clock when the disk is up and a first flush has completed (so there is something to lose).
  const t0 = Date.now();
  while (!ready || flushes === 0) {
    if (child.exitCode !== null) throw new Error(`writer exited early (${child.exitCode}): ${stderr}`);
    if (Date.now() - t0 > 30_000) throw new Error(`writer made no flush in 30 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, killAfterMs));
  child.kill("SIGKILL");
  await exited;
  // Lines the child wrote before it died are still in the pipe: they count (it acknowledged them).
  if (pending) onLine(pending);
  const img = readFileSync(image);
  let durableSectors = 0;
  for (let s = 0; s < sectors; s++) {
    const gen = sectorGen(img.subarray(s * 512, s * 512 + 512), s);
    if (gen < 0) throw new Error(`${mode} seed ${seed}: sector ${s} is torn or foreign after the kill`);
    if (gen < durable[s]!) {
      throw new Error(
        `${mode} seed ${seed}: sector ${s} holds write ${gen}, but write ${durable[s]} to it was durable (lost after SIGKILL)`,
      );
    }
    if (durable[s]! > 0) durableSectors++;
  }
  rmSync(image, { force: true });
  rmSync(image + ".lock", { force: true });
  return { mode, acked, flushes, durableSectors, killedAfterMs: killAfterMs };
}
