// Real NBD servers for the tests: nbdkit and qemu-nbd, started in the foreground on a Unix socket (or loopback
// TCP) in a temporary directory, ready when a connection succeeds, killed by pid at the end.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

import { afterAll, afterEach, describe, it } from "vitest";

import { NbdBackend, type NbdOptions } from "../../../src/storage/nbd/index.ts";
import { sleep, tempDir } from "../helpers.ts";

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

/**
 * `describe` for a group of tests that need the NBD servers, or `describe.skip` with a one-line reason when they
 * are missing; under CI a missing server is a failing test instead.
 */
export function describeWithServers(what: string): typeof describe | typeof describe.skip {
  const reason = missingServers();
  if (reason && process.env.CI === "true") {
    it("nbdkit and qemu-utils are there (required under CI)", () => {
      throw new Error(reason);
    });
  } else if (reason) {
    console.log(`skipping ${what}: ${reason}`);
  }
  return reason ? describe.skip : describe;
}

/**
 * Servers and media for the tests of one `describe`: started and opened through it, they are closed and stopped
 * after each test (media first), and its temporary directory is removed after the last.
 */
export function serverScope() {
  const dir = tempDir();
  const servers: Server[] = [];
  const media: NbdBackend[] = [];
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const m of media.splice(0)) m.close();
    for (const s of servers.splice(0)) await s.kill();
    for (const c of cleanups.splice(0)) await c();
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const kept = <T extends Server>(s: T): T => {
    servers.push(s);
    return s;
  };
  return {
    dir,
    /** nbdkit on a Unix socket in `dir`. */
    nbdkit: async (pluginAndArgs: string[], options: string[] = []) =>
      kept(await nbdkit(dir, pluginAndArgs, options)),
    /** qemu-nbd serving `image` on a Unix socket in `dir`. */
    qemuNbd: async (image: string, o: Parameters<typeof qemuNbd>[2]) => kept(await qemuNbd(dir, image, o)),
    /** nbdkit on loopback TCP. */
    nbdkitTcp: async (pluginAndArgs: string[]) => kept(await nbdkitTcp(pluginAndArgs)),
    /** A server started some other way, stopped after the test as the others. */
    keep: kept,
    /** Open a medium, closed after the test. */
    open(url: string, o: NbdOptions = {}): NbdBackend {
      const m = NbdBackend.open(url, o);
      media.push(m);
      return m;
    },
    /** Something else to undo after the test (after the media and servers). */
    onCleanup(fn: () => unknown): void {
      cleanups.push(fn);
    },
  };
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

/**
 * SIGSTOP a server and wait until the kernel shows it stopped (state T in /proc/PID/stat), so that nothing sent
 * after this returns is answered; a thread already running may otherwise still take a request.
 */
export async function stopServer(s: Server): Promise<void> {
  s.proc.kill("SIGSTOP");
  const stat = `/proc/${s.proc.pid}/stat`;
  for (let i = 0; i < 500; i++) {
    const text = fs.existsSync(stat) ? fs.readFileSync(stat, "utf8") : "";
    // The state follows the command name in parentheses (proc(5)).
    if (/\) [Tt] /.test(text) || text === "") return;
    await sleep(2);
  }
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
