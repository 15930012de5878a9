/**
 * One qtest client, two servers: QEMU (`-qtest stdio`, its IDE on a PC machine) and `xenide qtest`, each on
 * its own copy of the same image. The client reads sectors the way a PIO driver does (task file, poll the
 * alternate status, 256 data-register reads, status) and checks the bytes; the figure is the client's wall
 * time for the whole sequence, startup excluded.
 *
 * Both servers run side by side. Each first serves WARMUP_PASSES untimed passes (page cache; for the Node side,
 * V8 compiles the exit path with its optimizing tier only after some 10^5 calls, and on a loaded machine that
 * background compilation lags further); then timed passes alternate between the two, so a change in the
 * machine's load falls on both. A figure is the median pass.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { QtestClient } from "../qtest/client.ts";
import { fillPattern } from "./offsets.ts";
import { spread } from "./stats.ts";
import type { QtestResult } from "./types.ts";

const QEMU = process.env.XENIDE_QEMU ?? "qemu-system-x86_64";
const SECTORS = 32;
/** Untimed passes per server before the timed ones. */
const WARMUP_PASSES = 20;
/** Timed passes per server and repeat. */
const PASSES = 7;

function qemuVersion(): string | null {
  const r = spawnSync(QEMU, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return null;
  return (r.stdout.split("\n")[0] ?? "").trim();
}

async function readSectors(c: QtestClient): Promise<number> {
  let commands = 0;
  for (let lba = 0; lba < SECTORS; lba++) {
    const setup = [
      "outb 0x3f6 0x00",
      "outb 0x1f6 0xe0",
      "outb 0x1f2 0x01",
      `outb 0x1f3 0x${(lba & 0xff).toString(16)}`,
      "outb 0x1f4 0x00",
      "outb 0x1f5 0x00",
      "outb 0x1f7 0x20",
    ];
    await c.batch(setup);
    commands += setup.length;
    for (;;) {
      const st = await c.in("b", 0x3f6);
      commands++;
      if (!(st & 0x80)) {
        if (!(st & 0x08)) throw new Error(`READ SECTORS at ${lba}: no DRQ (status 0x${st.toString(16)})`);
        break;
      }
    }
    const words = await c.batch(Array.from({ length: 256 }, () => "inw 0x1f0"));
    commands += 256;
    const first = Number(/^OK (0x[0-9a-f]+)$/.exec(words[0] ?? "")?.[1] ?? NaN);
    if (first !== (lba & 0xffff)) throw new Error(`sector ${lba}: first word 0x${first.toString(16)}`);
    await c.in("b", 0x1f7);
    commands++;
  }
  return commands;
}

/** Start a server and wait until it answers. */
async function started(start: () => QtestClient): Promise<QtestClient> {
  const c = start();
  try {
    await c.cmd("inb 0x3f6");
  } catch (e) {
    await c.close();
    throw e;
  }
  return c;
}

/** One timed pass, in seconds. */
async function timedPass(c: QtestClient): Promise<number> {
  const t0 = performance.now();
  await readSectors(c);
  return (performance.now() - t0) / 1000;
}

export async function measureQtest(cli: string | undefined, repeats: number): Promise<QtestResult> {
  const workload = `${SECTORS} x READ SECTORS by 16-bit PIO (task file, status poll, 256 x inw, status)`;
  const base: QtestResult = {
    status: "unavailable",
    workload,
    commands: 0,
    xenideSeconds: null,
    qemuSeconds: null,
    qemuVersion: null,
    speedup: null,
  };
  if (!cli) return { ...base, note: "the CLI's entry point is unknown" };
  const version = qemuVersion();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-qtest-bench-"));
  try {
    const data = fillPattern(new Uint8Array(1 << 20), 0, 0x77);
    const xi = path.join(tmp, "xenide.img");
    const qi = path.join(tmp, "qemu.img");
    fs.writeFileSync(xi, data);
    fs.writeFileSync(qi, data);
    const xenide = (): QtestClient =>
      QtestClient.spawn(process.execPath, [...process.execArgv, cli, "qtest", "--disk", xi, "--ram", "128M"]);
    const args = ["-machine", "pc", "-accel", "tcg", "-S", "-qtest", "stdio", "-qtest-log", "none"];
    args.push("-display", "none", "-nodefaults", "-no-reboot", "-m", "128M");
    args.push("-drive", `file=${qi},format=raw,if=ide,index=0,cache=writeback`);
    const qemu = (): QtestClient => QtestClient.spawn(QEMU, args);
    const passes = PASSES * Math.max(1, repeats);
    const xs: number[] = [];
    const qs: number[] = [];
    let commands = 0;
    let firstX = NaN;
    let firstQ: number | null = null;
    const clients: QtestClient[] = [];
    try {
      const x = await started(xenide);
      clients.push(x);
      const q = version ? await started(qemu) : null;
      if (q) clients.push(q);
      // The first pass of each is timed too: what a test suite that starts a fresh server per test sees.
      firstX = await timedPass(x);
      firstQ = q ? await timedPass(q) : null;
      for (let p = 1; p < WARMUP_PASSES; p++) {
        commands = await readSectors(x);
        if (q) await readSectors(q);
      }
      for (let p = 0; p < passes; p++) {
        xs.push(await timedPass(x));
        if (q) qs.push(await timedPass(q));
      }
    } finally {
      for (const c of clients) await c.close();
    }
    const res: QtestResult = {
      ...base,
      workload: `${workload}; median of ${passes} passes, alternating, after ${WARMUP_PASSES} warm-up passes`,
      commands,
      xenideSeconds: spread(xs),
      qemuVersion: version,
      firstPass: { xenide: firstX, qemu: firstQ },
    };
    if (!version) return { ...res, note: `${QEMU} not installed (apt-get install qemu-system-x86)` };
    const x = spread(xs);
    const q = spread(qs);
    return { ...res, status: "ok", qemuSeconds: q, speedup: q.median / x.median };
  } catch (e) {
    return { ...base, status: "error", note: (e as Error).message };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
