/**
 * One qtest client, two servers: QEMU (`-qtest stdio`, its IDE on a PC machine) and `xenide qtest`, each on
 * its own copy of the same image. The client reads sectors the way a PIO driver does (task file, poll the
 * alternate status, 256 data-register reads, status) and checks the bytes; the figure is the client's wall
 * time for the whole sequence, startup excluded.
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

async function timeServer(
  start: () => QtestClient,
  repeats: number,
): Promise<{ s: number[]; commands: number }> {
  const s: number[] = [];
  let commands = 0;
  for (let r = 0; r < repeats + 1; r++) {
    const c = start();
    try {
      await c.cmd("inb 0x3f6"); // the server is up and answering
      const t0 = performance.now();
      commands = await readSectors(c);
      const dt = (performance.now() - t0) / 1000;
      if (r > 0) s.push(dt); // the first run warms the page cache and the JIT
    } finally {
      await c.close();
    }
  }
  return { s, commands };
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
    const x = await timeServer(
      () =>
        QtestClient.spawn(process.execPath, [
          ...process.execArgv,
          cli,
          "qtest",
          "--disk",
          xi,
          "--ram",
          "128M",
        ]),
      repeats,
    );
    const res: QtestResult = {
      ...base,
      commands: x.commands,
      xenideSeconds: spread(x.s),
      qemuVersion: version,
    };
    if (!version) return { ...res, note: `${QEMU} not installed (apt-get install qemu-system-x86)` };
    const args = ["-machine", "pc", "-accel", "tcg", "-S", "-qtest", "stdio", "-qtest-log", "none"];
    args.push("-display", "none", "-nodefaults", "-no-reboot", "-m", "128M");
    args.push("-drive", `file=${qi},format=raw,if=ide,index=0,cache=writeback`);
    const q = await timeServer(() => QtestClient.spawn(QEMU, args), repeats);
    const xs = spread(x.s);
    const qs = spread(q.s);
    return { ...res, status: "ok", qemuSeconds: qs, speedup: qs.median / xs.median };
  } catch (e) {
    return { ...base, status: "error", note: (e as Error).message };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
