/**
 * A qtest client: talks the line protocol to a child process (QEMU with `-qtest stdio`, or `xenide qtest`) or
 * to any pair of streams. Replies are matched to requests in order; asynchronous `IRQ raise/lower N` lines are
 * folded into an interrupt-level table and an event log instead.
 */

import { type ChildProcess, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";

export class QtestClientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "QtestClientError";
  }
}

/**
 * One request or one batch waiting for its replies: `want` lines, collected in `lines`. A batch of 256 requests
 * is one waiter and one promise, not 256.
 */
interface Waiter {
  want: number;
  lines: string[];
  resolve: (lines: string[]) => void;
  reject: (e: Error) => void;
}

export class QtestClient {
  /** Current level of every line reported through IRQ messages. */
  readonly irq = new Map<number, 0 | 1>();
  /** IRQ messages in arrival order (tests clear it when they like). */
  irqEvents: string[] = [];
  private buf = "";
  /** Waiters in request order; `head` is the oldest still waiting (slots before it are spent). */
  private readonly waiters: (Waiter | undefined)[] = [];
  private head = 0;
  private closed: Error | null = null;
  /** Everything the peer printed on stderr (child processes only), for failure messages. */
  stderr = "";

  constructor(
    private readonly input: Writable,
    output: Readable,
    readonly child?: ChildProcess,
  ) {
    output.setEncoding("latin1");
    output.on("data", (d: string) => this.onData(d));
    output.on("end", () => this.fail(new QtestClientError("qtest peer closed its output")));
    output.on("error", (e: Error) => this.fail(e));
    input.on("error", (e: Error) => this.fail(e));
  }

  /** Start `cmd args...` and speak qtest on its stdin/stdout. */
  static spawn(
    cmd: string,
    args: string[],
    opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
  ): QtestClient {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ["pipe", "pipe", "pipe"] });
    const c = new QtestClient(child.stdin!, child.stdout!, child);
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => {
      if (c.stderr.length < 64 * 1024) c.stderr += d;
    });
    child.on("error", (e) => c.fail(e));
    child.on("exit", (code, sig) => c.fail(new QtestClientError(`qtest peer exited (${sig ?? code})`)));
    return c;
  }

  /**
   * Split the peer's output into lines and hand them to the waiters in order. The scan runs over the chunk once
   * (no re-slicing of the remainder per line); only an incomplete last line is kept for the next chunk.
   */
  private onData(d: string): void {
    const buf = this.buf.length > 0 ? this.buf + d : d;
    let pos = 0;
    for (;;) {
      const nl = buf.indexOf("\n", pos);
      if (nl < 0) break;
      const line = buf.slice(pos, nl);
      pos = nl + 1;
      // Replies start with "OK", "FAIL" or "ERR": only a line starting with 'I' can be an IRQ message.
      if (line.charCodeAt(0) === 0x49 && this.onIrq(line)) continue;
      const w = this.waiters[this.head];
      if (!w) {
        this.fail(new QtestClientError(`unexpected line from qtest peer: ${line}`));
        continue;
      }
      w.lines.push(line);
      if (w.lines.length === w.want) {
        this.waiters[this.head++] = undefined;
        if (this.head === this.waiters.length) this.waiters.length = this.head = 0;
        w.resolve(w.lines);
      }
    }
    this.buf = pos === 0 ? buf : buf.slice(pos);
  }

  private onIrq(line: string): boolean {
    const m = /^IRQ (raise|lower) (\d+)$/.exec(line);
    if (!m) return false;
    this.irq.set(Number(m[2]), m[1] === "raise" ? 1 : 0);
    this.irqEvents.push(line);
    return true;
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.closed = e;
    const pending = this.waiters.slice(this.head);
    this.waiters.length = this.head = 0;
    for (const w of pending) w?.reject(e);
  }

  private expect(want: number): Promise<string[]> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => this.waiters.push({ want, lines: [], resolve, reject }));
  }

  /** One request, one reply line. */
  cmd(line: string): Promise<string> {
    const p = this.expect(1);
    this.input.write(line + "\n");
    return p.then(firstLine);
  }

  /**
   * Several requests in ONE write. A qtest server runs the lines of one chunk (up to 1024 bytes) back to back,
   * with no asynchronous work in between, so a batch observes transient states.
   */
  batch(lines: readonly string[]): Promise<string[]> {
    if (lines.length === 0) return Promise.resolve([]);
    const p = this.expect(lines.length);
    this.input.write(lines.join("\n") + "\n");
    return p;
  }

  /** `OK <value>` as a number (inb/inw/inl). */
  in(size: "b" | "w" | "l", port: number): Promise<number> {
    return this.cmd(`in${size} 0x${port.toString(16)}`).then(okValue);
  }

  async out(size: "b" | "w" | "l", port: number, value: number): Promise<void> {
    expectOk(await this.cmd(`out${size} 0x${port.toString(16)} 0x${value.toString(16)}`));
  }

  irqLevel(line: number): 0 | 1 {
    return this.irq.get(line) ?? 0;
  }

  /** Close the connection and, for a child, terminate it (QEMU does not exit on EOF). */
  async close(): Promise<void> {
    this.fail(new QtestClientError("closed"));
    this.input.end();
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      await exited;
    }
  }
}

const firstLine = (lines: string[]): string => lines[0]!;

export function expectOk(reply: string): void {
  if (reply !== "OK") throw new QtestClientError(`expected OK, got '${reply}'`);
}

export function okValue(reply: string): number {
  const m = /^OK (0x[0-9a-f]+)$/.exec(reply);
  if (!m) throw new QtestClientError(`expected 'OK 0x...', got '${reply}'`);
  return Number(m[1]);
}
