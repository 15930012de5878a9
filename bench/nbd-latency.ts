/**
 * NBD client latency probe: 4 KiB random reads through the NBD medium on the async engine at QD1 and QD32,
 * next to `qemu-img bench` on the same qemu-nbd export (the ratio `npm run bench` reports), and optionally next
 * to another copy of the medium (a source tree given with --against DIR, e.g. an older checkout), the two
 * measured interleaved in one run so machine load falls on both.
 *
 *   npx tsx bench/nbd-latency.ts [--ms 1500] [--repeats 3] [--qd 1,32] [--against /path/to/other/xenide]
 *                                [--server nbdkit] [--pattern rand|seq] [--worker]
 *
 * Many short repeats (--ms 300 --repeats 15) are steadier than a few long ones on a shared host.
 * --server nbdkit serves `nbdkit memory` instead of qemu-nbd (no disk, so the client's own cost stands out).
 * --pattern seq reads as `qemu-img bench` does (sequentially from offset 0), the like-for-like comparison; the
 * default is 4 KiB random reads. --worker also measures this tree with every request on the worker's connection
 * (the medium's `eventLoopConnection: false`), interleaved with the rest, to compare the two paths of one tree.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { runMedium } from "../src/bench/formats.ts";
import type { BlockBackend } from "../src/storage/types.ts";
import { NbdBackend } from "../src/storage/nbd/index.ts";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const ms = Number(opt("ms", "1500"));
const repeats = Number(opt("repeats", "3"));
const against = opt("against", "");
const server = opt("server", "qemu-nbd");
const depths = opt("qd", "1,32").split(",").map(Number);
const pattern = opt("pattern", "rand") as "rand" | "seq";
const withWorker = args.includes("--worker");
const IMAGE_BYTES = 256 * 1024 * 1024;

async function waitSocket(p: ChildProcess, socket: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (p.exitCode !== null) throw new Error(`${server} exited`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socket);
      s.on("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${server} did not listen`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function qemuImgBench(url: string, qd: number, count: number): number {
  const r = spawnSync(
    "qemu-img",
    ["bench", "-f", "raw", "-t", "none", "-d", String(qd), "-s", "4K", "-c", String(count), url],
    { encoding: "utf8" },
  );
  const m = /Run completed in ([0-9.]+) seconds/.exec(r.stdout);
  if (!m) throw new Error(`qemu-img bench: ${r.stdout}${r.stderr}`);
  return count / Number(m[1]);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-latency-"));
  const image = path.join(tmp, "disk.raw");
  const socket = path.join(tmp, "nbd.sock");
  let p: ChildProcess;
  if (server === "nbdkit") {
    p = spawn("nbdkit", ["-f", "-U", socket, "memory", String(IMAGE_BYTES)], { stdio: "ignore" });
  } else {
    const fd = fs.openSync(image, "w");
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < IMAGE_BYTES >> 20; i++) {
      chunk.fill(i & 0xff);
      fs.writeSync(fd, chunk);
    }
    fs.closeSync(fd);
    p = spawn(
      "qemu-nbd",
      ["-r", "-f", "raw", "-x", "bench", "-k", socket, "--persistent", "--shared=4", "--cache=none", image],
      { stdio: "ignore" },
    );
  }
  try {
    await waitSocket(p, socket);
    const url = `nbd+unix:///${server === "nbdkit" ? "" : "bench"}?socket=${socket}`;
    const media: { name: string; open: () => BlockBackend }[] = [
      { name: "this tree", open: () => NbdBackend.open(url, { readOnly: true }) },
    ];
    if (withWorker)
      media.push({
        name: "this tree, worker's connection",
        open: () => NbdBackend.open(url, { readOnly: true, eventLoopConnection: false }),
      });
    if (against) {
      const mod = (await import(path.resolve(against, "src/storage/nbd/index.ts"))) as {
        NbdBackend: typeof NbdBackend;
      };
      media.push({ name: `--against`, open: () => mod.NbdBackend.open(url, { readOnly: true }) });
    }
    for (const qd of depths) {
      const res = new Map<string, number[]>();
      for (let r = 0; r < repeats; r++) {
        let count = 0;
        for (const m of media) {
          const b = m.open();
          try {
            const cpu0 = process.cpuUsage();
            const a = await runMedium(b, qd, pattern, IMAGE_BYTES, ms);
            const path = "asyncPath" in b ? ` via ${String(b.asyncPath)}` : "";
            const cpu = process.cpuUsage(cpu0);
            const iops = a.ops / a.seconds;
            count = Math.max(count, a.ops);
            (res.get(m.name) ?? res.set(m.name, []).get(m.name)!).push(iops);
            const cpuUs = (cpu.user + cpu.system) / a.ops;
            console.log(
              `qd${qd} r${r} ${m.name}${path}: ${iops.toFixed(0)} IOPS, ${cpuUs.toFixed(1)} us CPU/IO (process)`,
            );
          } finally {
            b.close();
          }
        }
        const q = qemuImgBench(url, qd, Math.max(qd * 16, count));
        (res.get("qemu-img") ?? res.set("qemu-img", []).get("qemu-img")!).push(q);
        console.log(`qd${qd} r${r} qemu-img bench: ${q.toFixed(0)} IOPS`);
      }
      const qm = median(res.get("qemu-img")!);
      for (const [name, xs] of res)
        console.log(
          `QD${qd} ${name}: median ${median(xs).toFixed(0)} IOPS, ratio ${(median(xs) / qm).toFixed(2)}x`,
        );
    }
  } finally {
    p.kill("SIGTERM");
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
