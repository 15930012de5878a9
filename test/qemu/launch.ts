/**
 * Running `xenide-system-x86_64` from the sources as a child process, with its qtest on stdio and a QMP
 * socket, as a QEMU test harness would.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { type Socket, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = join(ROOT, "bin", "xenide-system-x86_64");
/** The launcher's start file, which BIN (a shell script) runs with Node. */
export const START = join(ROOT, "bin", "xenide-system-x86_64.cjs");

/** The newest modification time of the files under `dir`. */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/**
 * Whether the bundle bin/xenide-system-x86_64 runs (dist/, built by `npm ci`) is newer than every source file.
 * Then the tests run the launcher as installed, which starts in a fraction of the time tsx needs to compile the
 * sources; otherwise they run the sources, so that they never test a stale bundle.
 */
export const BUNDLE_FRESH = (() => {
  const bundle = join(ROOT, "dist", "xenide-system-x86_64.cjs");
  return existsSync(bundle) && statSync(bundle).mtimeMs >= newest(join(ROOT, "src"));
})();

/** XENIDE_FROM_SOURCES for the launcher's environment. */
const FROM_SOURCES = BUNDLE_FRESH ? "0" : "1";

/**
 * The launcher as libqtest's QTEST_QEMU_BINARY: bin/xenide-system-x86_64 itself when the bundle is fresh; else an
 * executable of the same name, in a directory of its own, that runs it from the sources.
 */
export function launcherPath(): string {
  if (BUNDLE_FRESH) return BIN;
  const dir = mkdtempSync(join(tmpdir(), "xenide-launcher-"));
  const path = join(dir, "xenide-system-x86_64");
  writeFileSync(path, `#!/bin/sh\nXENIDE_FROM_SOURCES=1 exec "${process.execPath}" "${START}" "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/** A launcher child with its qtest on stdio: request lines in, reply lines out (IRQ lines kept apart). */
export class QtestChild {
  readonly proc: ChildProcess;
  private buf = "";
  private waiters: ((line: string) => void)[] = [];
  private lines: string[] = [];
  readonly irqs: string[] = [];
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: readonly string[]) {
    this.proc = spawn(BIN, ["-qtest", "stdio", "-qtest-log", "none", "-machine", "pc", ...args], {
      env: { ...process.env, XENIDE_FROM_SOURCES: FROM_SOURCES },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.proc.stdout!.setEncoding("latin1");
    this.proc.stdout!.on("data", (d: string) => {
      this.buf += d;
      for (;;) {
        const nl = this.buf.indexOf("\n");
        if (nl < 0) break;
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line.startsWith("IRQ ")) this.irqs.push(line);
        else {
          const w = this.waiters.shift();
          if (w) w(line);
          else this.lines.push(line);
        }
      }
    });
    this.proc.stderr!.setEncoding("utf8");
    this.proc.stderr!.on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => this.proc.on("exit", (code, signal) => resolve({ code, signal })));
  }

  cmd(line: string): Promise<string> {
    this.proc.stdin!.write(line + "\n");
    const ready = this.lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async inb(port: number): Promise<number> {
    const r = await this.cmd(`inb 0x${port.toString(16)}`);
    return Number(r.slice(3));
  }

  /** Poll the status register until BSY clears; returns the settled status. */
  async settled(port = 0x1f7): Promise<number> {
    for (let i = 0; i < 1000; i++) {
      const s = await this.inb(port);
      if (!(s & 0x80)) return s;
    }
    throw new Error("BSY never cleared");
  }
}

/** A QMP client over a unix socket, by literal JSON: every message received, in order. */
export class QmpSocket {
  private buf = "";
  readonly messages: Record<string, unknown>[] = [];
  private wake: (() => void) | null = null;

  private constructor(readonly sock: Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      this.buf += d;
      for (;;) {
        const nl = this.buf.indexOf("\n");
        if (nl < 0) break;
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (line) this.messages.push(JSON.parse(line) as Record<string, unknown>);
        this.wake?.();
      }
    });
  }

  static async connect(path: string): Promise<QmpSocket> {
    for (let i = 0; i < 200; i++) {
      try {
        const s = connect(path);
        await new Promise<void>((resolve, reject) => {
          s.once("connect", resolve);
          s.once("error", reject);
        });
        return new QmpSocket(s);
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    throw new Error(`no QMP socket at ${path}`);
  }

  /** Wait for the first message (from index `from`) that `pred` accepts. */
  async next(pred: (m: Record<string, unknown>) => boolean, from = 0): Promise<Record<string, unknown>> {
    for (;;) {
      const m = this.messages.slice(from).find(pred);
      if (m) return m;
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** Send literal JSON text; resolves with the reply carrying `id`. */
  async send(json: string, id: string): Promise<Record<string, unknown>> {
    this.sock.write(json);
    return this.next((m) => m.id === id && ("return" in m || "error" in m));
  }

  close(): void {
    this.sock.destroy();
  }
}
