/**
 * Differential harness: the same qtest lines go to QEMU 7.2 (`-machine pc -accel tcg -S -qtest stdio`, the
 * oracle) and to `xenide qtest`, each on its own copy of the same raw image(s); after every step both are
 * polled until the device is no longer busy and their settled states are compared.
 */

import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PassThrough } from "node:stream";
import { QtestClient } from "../../src/qtest/client.ts";
import { openQtestSession } from "../../src/qtest/session.ts";
import { serveStream } from "../../src/qtest/transport.ts";
import { type CompatProfile, DEFAULT_COMPAT } from "../../src/ide/compat.ts";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const QEMU = process.env.XENIDE_QEMU ?? "qemu-system-x86_64";

/** Where QEMU is, or why the suite cannot run. */
export function qemuStatus(): { ok: true; version: string } | { ok: false; reason: string } {
  const r = spawnSync(QEMU, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0)
    return { ok: false, reason: `${QEMU} not found (apt-get install qemu-system-x86)` };
  const first = r.stdout.split("\n")[0] ?? "";
  return { ok: true, version: first };
}

/** Drives on the PC's IDE channels, by QEMU `index=` (0 primary master, 1 primary slave, 2, 3 secondary). */
export type DriveSlots = (string | undefined)[];

/**
 * QEMU's IDENTIFY strings. The serial is "QM%05d" of a counter that ide_init1 advances for every device
 * position the PIIX creates, attached or not: the drive at `index=N` is QM0000(N+1).
 */
export const QEMU_MODEL = "QEMU HARDDISK";
export const QEMU_FIRMWARE = "2.5+";

/** QEMU 7.2 as the oracle: the PC paused (-S) under TCG, qtest on stdio, no default devices. */
export const QEMU_ORACLE_ARGS: readonly string[] = [
  "-machine",
  "pc",
  "-accel",
  "tcg",
  "-S",
  "-qtest",
  "stdio",
  "-qtest-log",
  "none",
  "-display",
  "none",
  "-nodefaults",
  "-no-reboot",
  "-m",
  "128M",
];

/**
 * Where the qtest accelerator module for the installed QEMU is (Debian's package deletes it;
 * scripts/build-qemu-accel-qtest.sh builds it into the cache), or null when it is not built. Under that
 * accelerator QEMU's virtual clock moves with `clock_step`; under the oracle's paused TCG it stands still.
 */
export function qtestAccelModules(): string | null {
  const dir = process.env.XENIDE_QEMU_MODULE_DIR ?? join(ROOT, ".cache/qemu-ide-test/qemu-modules");
  return existsSync(join(dir, "accel-qtest-x86_64.so")) ? dir : null;
}

/** QEMU as the oracle; with `accelQtest` (a module directory) under the qtest accelerator instead of TCG. */
export function startQemu(images: DriveSlots, opts: { accelQtest?: string } = {}): QtestClient {
  // Under the qtest accelerator the machine runs (no -S, as libqtest starts it): a stopped machine's clock
  // still moves with clock_step, but its timers do not fire.
  const args = opts.accelQtest
    ? QEMU_ORACLE_ARGS.filter((a) => a !== "-S").map((a) => (a === "tcg" ? "qtest" : a))
    : [...QEMU_ORACLE_ARGS];
  images.forEach((img, index) => {
    if (img) args.push("-drive", `file=${img},format=raw,if=ide,index=${index},cache=writeback`);
  });
  const env = opts.accelQtest ? { ...process.env, QEMU_MODULE_DIR: opts.accelQtest } : undefined;
  return QtestClient.spawn(QEMU, args, env ? { env } : {});
}

export function startXenide(images: DriveSlots, extra: string[] = []): QtestClient {
  const flags = ["--disk", "--slave", "--secondary", "--secondary-slave"];
  const args = ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "qtest", "--ram", "128M"];
  args.push("--model", QEMU_MODEL, "--firmware", QEMU_FIRMWARE);
  images.forEach((img, i) => {
    if (img) args.push(flags[i]!, img, "--serial", `QM${String(i + 1).padStart(5, "0")}`);
  });
  args.push(...extra);
  return QtestClient.spawn(process.execPath, args, { cwd: ROOT });
}

/**
 * The same xenide qtest machine inside this process (no tsx start-up per instance): for replaying and
 * shrinking failing sequences, where many short sessions are started.
 */
export function startXenideInProcess(
  images: DriveSlots,
  compat: CompatProfile = DEFAULT_COMPAT,
  engine: "sync" | "async" = "sync",
): { client: QtestClient; done: Promise<void> } {
  const serials: string[] = [];
  images.forEach((img, i) => {
    if (img) serials.push(`QM${String(i + 1).padStart(5, "0")}`);
  });
  const m = openQtestSession({ images, model: QEMU_MODEL, firmware: QEMU_FIRMWARE, serials, compat, engine });
  const toServer = new PassThrough();
  const fromServer = new PassThrough();
  const done = serveStream(m.server, toServer, fromServer).finally(() => {
    fromServer.end();
    return m.close();
  });
  return { client: new QtestClient(toServer, fromServer), done };
}

/** A scratch directory with `n` identical image files for each side. */
export class ImageSet {
  readonly dir = mkdtempSync(join(tmpdir(), "xenide-diff-"));
  readonly qemu: DriveSlots = [];
  readonly xen: DriveSlots = [];
  constructor(readonly contents: (Uint8Array | undefined)[]) {
    contents.forEach((c, i) => {
      if (!c) {
        this.qemu.push(undefined);
        this.xen.push(undefined);
        return;
      }
      const q = join(this.dir, `qemu-${i}.img`);
      const x = join(this.dir, `xen-${i}.img`);
      writeFileSync(q, c);
      copyFileSync(q, x);
      this.qemu.push(q);
      this.xen.push(x);
    });
  }
  read(side: "qemu" | "xen", i: number): Buffer {
    const p = (side === "qemu" ? this.qemu : this.xen)[i];
    if (!p) throw new Error(`no image ${i}`);
    return readFileSync(p);
  }
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Image content with recognisable sectors: each starts with its LBA, the rest from a seeded generator. */
export function patternImage(sectors: number, seed: number): Uint8Array {
  const img = new Uint8Array(sectors * 512);
  const rnd = prng(seed);
  for (let s = 0; s < sectors; s++) {
    const o = s * 512;
    new DataView(img.buffer).setUint32(o, s, true);
    for (let i = 4; i < 512; i++) img[o + i] = rnd() & 0xff;
  }
  return img;
}

/** sfc32: small, fast, seedable; good enough to drive test generation reproducibly. */
export function prng(seed: number): () => number {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88 ^ Math.imul(seed, 0x85ebca6b);
  let c = 0xb7e15162;
  let d = 1;
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

export function hasCmd(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
