// Real NBD servers for the tests: nbdkit and qemu-nbd, started in the foreground on a Unix socket (or loopback
// TCP) in a temporary directory, ready when a connection succeeds, killed by pid at the end.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

import { sleep } from "../helpers.ts";

/** Why the NBD interop tests cannot run here, or undefined. */
export function missingServers(): string | undefined {
  for (const [program, pkg] of [
    ["nbdkit", "nbdkit"],
    ["qemu-nbd", "qemu-utils"],
    ["qemu-img", "qemu-utils"],
  ] as const) {
    if (spawnSync(program, ["--version"]).status !== 0)
      return `${program} not found (apt-get install ${pkg})`;
  }
  return undefined;
}

export interface Server {
  /** nbd+unix:///EXPORT?socket=PATH (or nbd://127.0.0.1:PORT/EXPORT) for the default export. */
  readonly url: string;
  readonly socket: string;
  readonly proc: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  log(): string;
  /** Stop it (SIGKILL by default) and wait for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

let n = 0;

async function started(
  program: string,
  args: string[],
  socket: string,
  url: string,
  connect: () => net.Socket,
): Promise<Server> {
  const proc = spawn(program, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const server: Server = {
    url,
    socket,
    proc,
    log: () => stderr,
    async kill(signal = "SIGKILL") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${program} ${args.join(" ")} exited: ${stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect();
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return server;
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(`${program} did not start listening: ${stderr}`);
    }
    await sleep(20);
  }
}

/** nbdkit in the foreground on a Unix socket: `nbdkit [options] PLUGIN [args]`. */
export function nbdkit(dir: string, pluginAndArgs: string[], options: string[] = []): Promise<Server> {
  const socket = path.join(dir, `nbdkit${n++}.sock`);
  return started(
    "nbdkit",
    ["-f", "-U", socket, ...options, ...pluginAndArgs],
    socket,
    `nbd+unix:///?socket=${socket}`,
    () => net.connect(socket),
  );
}

/** qemu-nbd in the foreground on a Unix socket, serving `image` (persistent: several connections one after another). */
export function qemuNbd(
  dir: string,
  image: string,
  o: { format: "raw" | "qcow2"; readOnly?: boolean; exportName?: string; extra?: string[] },
): Promise<Server> {
  const socket = path.join(dir, `qemu-nbd${n++}.sock`);
  const name = o.exportName ?? "";
  const args = ["-k", socket, "-f", o.format, "-t", "-e", "2", ...(o.extra ?? [])];
  if (o.readOnly) args.push("-r");
  if (name) args.push("-x", name);
  args.push(image);
  return started("qemu-nbd", args, socket, `nbd+unix:///${name}?socket=${socket}`, () => net.connect(socket));
}

/** A free loopback TCP port (bound and released; good enough for a test that starts its server right away). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** nbdkit on loopback TCP. */
export async function nbdkitTcp(pluginAndArgs: string[]): Promise<Server & { port: number }> {
  const port = await freePort();
  const s = await started(
    "nbdkit",
    ["-f", "-i", "127.0.0.1", "-p", String(port), ...pluginAndArgs],
    "",
    `nbd://127.0.0.1:${port}/`,
    () => net.connect(port, "127.0.0.1"),
  );
  return Object.assign(s, { port });
}

/** Raw bytes of an image as qemu-img sees them (`qemu-img convert -O raw`). */
export function qemuImgRaw(image: string, format: "raw" | "qcow2", dir: string): Uint8Array {
  const out = path.join(dir, `convert${n++}.raw`);
  const r = spawnSync("qemu-img", ["convert", "-U", "-f", format, "-O", "raw", image, out], {
    encoding: "utf8",
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`qemu-img convert failed: ${r.stderr}`);
  const bytes = fs.readFileSync(out);
  fs.rmSync(out);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** `qemu-img create -f FORMAT IMAGE SIZE [options]`. */
export function qemuImgCreate(
  image: string,
  format: "raw" | "qcow2",
  size: string,
  opts: string[] = [],
): void {
  const r = spawnSync("qemu-img", ["create", "-q", "-f", format, ...opts, image, size], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`qemu-img create failed: ${r.stderr}`);
}

/** `qemu-img check` output and status. */
export function qemuImgCheck(image: string): { status: number | null; out: string } {
  const r = spawnSync("qemu-img", ["check", "-U", "-f", "qcow2", image], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}
