/**
 * Memory while streaming a large disk through PV: a sparse image (no data blocks, so the host reads zeroes
 * at memory speed and the guest's path is all that costs), read sequentially in 1 MiB I/Os at depth 4 through
 * blkfront and blkback. Runs in a child process so that the figure is that path's peak resident set, not the
 * benchmark's. The qcow2 form streams an empty qcow2 image of the same size: every read goes through its L1/L2
 * lookups and bounded table caches, which is what must not grow with the bytes moved.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Hypervisor } from "../hypervisor/hypervisor.ts";
import { createImage, createQcow2, makeEngine, openMedium } from "../storage/index.ts";
import { createPvMachine } from "../machine/pv.ts";
import type { RssResult } from "./types.ts";

const MiB = 1 << 20;

export type RssFormat = "raw" | "qcow2";

/** The probe itself (run inside the child): stream `bytes` from a fresh sparse image, report peak RSS. */
export async function streamProbe(
  bytes: number,
  dir = os.tmpdir(),
  format: RssFormat = "raw",
): Promise<RssResult> {
  const tmp = fs.mkdtempSync(path.join(dir, "xenide-rss-"));
  const img = path.join(tmp, format === "raw" ? "sparse.img" : "sparse.qcow2");
  try {
    if (format === "raw") createImage(img, bytes);
    else createQcow2(img, { size: bytes });
    const backend = openMedium(img, { format, readOnly: true, lock: false });
    const engine = makeEngine(backend, "sync");
    const hv = new Hypervisor({ ramSize: 64 * MiB });
    const m = await createPvMachine({ engine, hv, readOnly: true });
    const startRss = process.memoryUsage().rss;
    const t0 = performance.now();
    const io = 1 * MiB;
    const sectors = io / 512;
    let next = 0;
    let moved = 0;
    // Each stream reads into its own buffer, as a guest reads into page-cache pages it already has (its own
    // pages, granted as they are).
    const worker = async (buf: Uint8Array): Promise<void> => {
      while (next < bytes) {
        const at = next;
        next += io;
        await m.front.readInto(at / 512, buf);
        moved += buf.length;
      }
    };
    void sectors;
    await Promise.all([0, 1, 2, 3].map(() => worker(m.front.allocBuffer(io))));
    const seconds = (performance.now() - t0) / 1000;
    await m.close();
    backend.close();
    return {
      status: "ok",
      format,
      bytesStreamed: moved,
      seconds,
      maxRssMiB: process.resourceUsage().maxRSS / 1024,
      startRssMiB: startRss / MiB,
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Run the probe in a fresh process of the same CLI (`<cli> bench --rss-probe <bytes>`), which prints the
 * result as JSON on its last line.
 */
export function runRssProbe(
  bytes: number,
  cli: string | undefined,
  format: RssFormat = "raw",
): Promise<RssResult> {
  const fail = (note: string): RssResult => ({
    status: "error",
    format,
    note,
    bytesStreamed: 0,
    seconds: 0,
    maxRssMiB: NaN,
    startRssMiB: NaN,
  });
  if (!cli) return Promise.resolve(fail("the CLI's entry point is unknown, so no child process can run it"));
  return new Promise((resolve) => {
    const args = [cli, "bench", "--rss-probe", String(bytes), "--rss-format", format];
    const child = spawn(process.execPath, [...process.execArgv, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.on("error", (e) => resolve(fail(e.message)));
    child.on("close", (code) => {
      const last = out.trim().split("\n").pop() ?? "";
      try {
        const r = JSON.parse(last) as RssResult;
        resolve(r);
      } catch {
        resolve(fail(`probe exited with ${code}: ${(err || out).trim().split("\n").slice(-3).join(" / ")}`));
      }
    });
  });
}
