/**
 * The launcher's `-trace`: QEMU 7.2's IDE and Bus Master trace events, option parsing as QEMU's trace/control.c,
 * and the same session traced by QEMU itself and by the launcher, line for line (the pointers QEMU prints are
 * host addresses: each side's are renamed in order of first appearance before the comparison).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { QEMU_IDE_TRACE_EVENTS } from "../../src/ide/qemu-trace.ts";
import { planLaunch } from "../../src/qemu/config.ts";
import { QtestClient } from "../../src/qtest/client.ts";
import { QEMU, qemuStatus, qtestAccelModules } from "../differential/harness.ts";
import { launcherPath, QtestChild } from "./launch.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-trace-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
function file(text: string): string {
  const p = join(dir, `f${++seq}`);
  writeFileSync(p, text);
  return p;
}

describe("-trace options, as QEMU 7.2's trace/control.c takes them", () => {
  const plan = (...args: string[]) => planLaunch(["-machine", "pc", ...args]);
  const on = (...args: string[]) => [...plan(...args).trace.enabled].sort();

  it("patterns are globs applied in order; a leading '-' disables; enable= is the implied key", () => {
    expect(on("-trace", "ide_data_*")).toEqual([
      "ide_data_readl",
      "ide_data_readw",
      "ide_data_writel",
      "ide_data_writew",
    ]);
    expect(on("-trace", "ide_data_read?")).toEqual(["ide_data_readl", "ide_data_readw"]);
    expect(on("-trace", "enable=bmdma_*", "-trace", "-bmdma_addr_*")).toEqual([
      "bmdma_cmd_writeb",
      "bmdma_read",
      "bmdma_write",
    ]);
    expect(on("-trace", "-ide_exec_cmd", "-trace", "ide_exec_cmd")).toEqual(["ide_exec_cmd"]);
    expect(on()).toEqual([]);
  });

  it("events=FILE: one pattern a line, '#' comments and blank lines skipped, fgets' last character cut", () => {
    // A last line without a newline loses its last character in QEMU too: "ide_exec_cmdX" is "ide_exec_cmd".
    const f = file("# IDE\nide_ioport_*\n\n-ide_ioport_read\nide_exec_cmdX");
    expect(on("-trace", `events=${f}`)).toEqual(["ide_exec_cmd", "ide_ioport_write"]);
    expect(() => plan("-trace", `events=${join(dir, "missing")}`)).toThrow(
      `${join(dir, "missing")}: No such file or directory`,
    );
  });

  it("a name that matches nothing is a warning: QEMU's own for an unknown one, another for one not emitted", () => {
    const p = plan("-trace", "nonexist", "-trace", "ide_reset", "-trace", "zzz*");
    expect(p.trace.enabled.size).toBe(0);
    expect(p.warnings).toEqual([
      "-trace nonexist: trace event 'nonexist' does not exist",
      "-trace ide_reset: trace event 'ide_reset' is not emitted by xenide (-trace help lists the ones it emits)",
    ]);
  });

  it("the output goes to the last -trace's file=, else -D's file, else stderr; help lists the events", () => {
    expect(plan("-trace", "ide_*").traceFile).toBeNull();
    expect(plan("-trace", "ide_*", "-D", "/tmp/d.log").traceFile).toBe("/tmp/d.log");
    expect(plan("-D", "/tmp/d.log", "-trace", "ide_*,file=/tmp/t.log").traceFile).toBe("/tmp/t.log");
    // trace_opt_parse replaces the file with each -trace's own, none included.
    expect(plan("-trace", "ide_*,file=/tmp/t.log", "-trace", "bmdma_*").traceFile).toBeNull();
    expect(plan("-trace", "help").info).toBe("trace-help");
    expect(plan("-trace", "enable=?").info).toBe("trace-help");
    expect(() => plan("-trace", "ide_*,bogus=1")).toThrow(/bogus/);
  });

  it("a trace or qtest log file that is an image (or a link to one) is refused before anything is opened", () => {
    const img = file("x".repeat(4096));
    const link = join(dir, "link.img");
    symlinkSync(img, link);
    const drive = ["-drive", `file=${img},if=ide,format=raw`];
    expect(() => plan(...drive, "-trace", `ide_*,file=${link}`)).toThrow(
      `-trace file ${link}: that is the image ${img}; the log would overwrite it`,
    );
    expect(() => plan(...drive, "-D", img)).toThrow(`-D ${img}: that is the image ${img}`);
    expect(() => plan(...drive, "-qtest-log", img)).toThrow(`-qtest-log ${img}: that is the image ${img}`);
    expect(readFileSync(img, "latin1")).toBe("x".repeat(4096));
    // Another file, or one not there yet, is the log's to write.
    expect(plan(...drive, "-D", join(dir, "new.log")).traceFile).toBe(join(dir, "new.log"));
  });

  it("-D FILE takes the trace lines, which then stay off stderr", async () => {
    const log = join(dir, "trace.log");
    const child = new QtestChild(["-accel", "qtest", "-nodefaults", "-trace", "ide_exec_cmd", "-D", log]);
    expect(await child.cmd("outb 0x1f7 0xec")).toBe("OK");
    expect(await child.cmd("outb 0x177 0x90")).toBe("OK");
    child.proc.kill("SIGTERM");
    expect((await child.exited).code).toBe(0);
    expect(readFileSync(log, "latin1")).toBe(
      "ide_exec_cmd IDE exec cmd: bus 0x5a0000; state 0x5a0088; cmd 0xec\n" +
        "ide_exec_cmd IDE exec cmd: bus 0x5a1000; state 0x5a1088; cmd 0x90\n",
    );
    expect(child.stderr).not.toMatch(/ide_exec_cmd/);

    // A trace file that cannot be made is one line and status 1.
    const bad = new QtestChild(["-accel", "qtest", "-trace", "ide_*", "-D", join(dir, "missing", "t.log")]);
    expect((await bad.exited).code).toBe(1);
    if (!bad.proc.stderr!.readableEnded) await new Promise((r) => bad.proc.stderr!.once("end", r));
    expect(bad.stderr).toBe(
      `xenide-system-x86_64: ${join(dir, "missing", "t.log")}: cannot write the trace there (ENOENT)\n`,
    );
  });

  it("-trace help prints the names one per line and exits 0", async () => {
    const child = spawn(launcherPath(), ["-trace", "help"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
    const code = await new Promise((r) => child.on("close", r));
    expect(code).toBe(0);
    expect(out).toBe(QEMU_IDE_TRACE_EVENTS.map((e) => `${e}\n`).join(""));
  });
});

/**
 * A session that reaches every traced handler and its conditions: byte, word and dword accesses to each kind of
 * register; the data port outside and inside a data-in block (IDENTIFY) and a data-out block (WRITE SECTORS);
 * writes ignored while DRQ is set; the empty secondary channel; the Bus Master registers at every width; a READ DMA.
 */
function session(): string[] {
  const s: string[] = [];
  const rep = (n: number, line: string) => {
    for (let i = 0; i < n; i++) s.push(line);
  };
  s.push("outl 0xcf8 0x80000904", "outw 0xcfc 0x5"); // PIIX3 IDE (00:01.1): I/O and bus mastering on
  s.push("outl 0xcf8 0x80000920", "outl 0xcfc 0xc001"); // BAR4: the Bus Master block at 0xc000
  s.push("outb 0x1f6 0xe0", "inb 0x1f7", "inb 0x3f6", "outb 0x3f6 0x2");
  s.push(
    "inw 0x1f0",
    "inl 0x1f0",
    "inb 0x1f0",
    "outw 0x1f0 0x1234",
    "outl 0x1f0 0x12345678",
    "outb 0x1f0 0x55",
  );
  s.push("outb 0x1f7 0xec", "SLEEP");
  rep(3, "inw 0x1f0");
  rep(2, "inl 0x1f0");
  s.push("inb 0x1f0", "inw 0x1f2", "inw 0x1f6", "outb 0x1f2 0x1", "outw 0x1f4 0x102", "outl 0x1f2 0x1020304");
  s.push("inl 0x1f3", "inb 0x1f1");
  rep(256 - 3 - 4 - 1, "inw 0x1f0"); // the rest of the block: the last word ends it
  s.push("inw 0x1f0", "inl 0x1f0", "inb 0x1f7");
  // WRITE SECTORS, one sector at LBA 8: data words are traced before any check.
  s.push("outb 0x1f2 0x1", "outb 0x1f3 0x8", "outb 0x1f4 0x0", "outb 0x1f5 0x0", "outb 0x1f6 0xe0");
  s.push("outb 0x1f7 0x30", "SLEEP");
  rep(127, "outw 0x1f0 0xa55a");
  rep(64, "outl 0x1f0 0x11223344");
  s.push("SLEEP", "inb 0x1f7", "outw 0x1f0 0x1");
  // The empty secondary channel.
  s.push(
    "outb 0x176 0x10",
    "inb 0x177",
    "inb 0x176",
    "inb 0x376",
    "outb 0x177 0xec",
    "inw 0x170",
    "inl 0x170",
  );
  // Bus Master registers at every width, both channels.
  s.push("inb 0xc000", "inb 0xc001", "inb 0xc002", "inb 0xc003", "inw 0xc000", "inl 0xc000");
  s.push("outb 0xc002 0x6", "outb 0xc001 0x12", "outw 0xc000 0x1", "outb 0xc000 0x8", "outb 0xc000 0x0");
  s.push(
    "outl 0xc004 0x1003",
    "inl 0xc004",
    "inw 0xc006",
    "inb 0xc005",
    "outw 0xc006 0x0",
    "outb 0xc004 0x10",
  );
  s.push("inb 0xc00a", "outb 0xc008 0x0", "inl 0xc00c");
  // READ DMA of one sector into 0x2000 through a one-entry table at 0x1000.
  s.push("writel 0x1000 0x2000", "writel 0x1004 0x80000200", "outl 0xc004 0x1000");
  s.push("outb 0x1f2 0x1", "outb 0x1f3 0x8", "outb 0x1f4 0x0", "outb 0x1f5 0x0", "outb 0x1f6 0xe0");
  s.push("outb 0x1f7 0xc8", "outb 0xc000 0x9", "SLEEP", "inb 0xc002", "inb 0x1f7", "outb 0xc000 0x8");
  s.push("outb 0xc002 0x4", "inb 0xc002");
  return s;
}

interface Traced {
  replies: string[];
  trace: string[];
}

/** Run the session on a qtest peer whose stderr carries the trace; the trace lines once the peer has exited. */
async function run(child: ChildProcess): Promise<Traced> {
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
  const closed = new Promise((r) => child.on("close", r));
  const c = new QtestClient(child.stdin!, child.stdout!, child);
  const replies: string[] = [];
  for (const line of session()) {
    // Storage work ends in QEMU's main loop after the request that started it: both get time to finish it.
    if (line === "SLEEP") await new Promise((r) => setTimeout(r, 100));
    else replies.push(await c.cmd(line));
  }
  await c.close();
  await closed;
  const trace = err.split("\n").filter((l) => /^(ide_|bmdma_)/.test(l));
  return { replies, trace: renamePointers(trace) };
}

/** Host pointers (`bus 0x...`, `IDEState 0x...`, `state 0x...`) renamed P1, P2, ... in order of first use. */
function renamePointers(lines: string[]): string[] {
  const names = new Map<string, string>();
  return lines.map((l) =>
    l.replace(/(bus|IDEState|state) (0x[0-9a-f]+)/g, (_, k: string, p: string) => {
      if (!names.has(p)) names.set(p, `P${names.size + 1}`);
      return `${k} ${names.get(p)}`;
    }),
  );
}

const status = qemuStatus();
const accel = qtestAccelModules();
const skipReason = !status.ok ? status.reason : null;
const requireQemu = process.env.CI === "true";

describe("the same session traced by QEMU 7.2 and by the launcher", () => {
  it.skipIf(skipReason !== null && !requireQemu)(
    `gives the same trace lines${skipReason ? ` (skipped: ${skipReason})` : ""}`,
    async () => {
      if (skipReason) throw new Error(`${skipReason} (required under CI)`);
      const img = join(dir, "disk.img");
      writeFileSync(img, Buffer.alloc(1 << 20, 0x5a));
      const qemuImg = join(dir, "qemu.img");
      writeFileSync(qemuImg, readFileSync(img));
      const events = file(QEMU_IDE_TRACE_EVENTS.join("\n") + "\n");
      const common = ["-display", "none", "-nodefaults", "-trace", `events=${events}`];
      const drive = (p: string) => ["-drive", `file=${p},if=ide,format=raw,cache=writeback`];
      const qemuArgs = [
        "-machine",
        "pc",
        "-qtest",
        "stdio",
        "-qtest-log",
        "none",
        ...common,
        ...drive(qemuImg),
      ];
      const qemu = spawn(
        QEMU,
        accel ? [...qemuArgs, "-accel", "qtest"] : [...qemuArgs, "-accel", "tcg", "-S"],
        {
          stdio: ["pipe", "pipe", "pipe"],
          env: accel ? { ...process.env, QEMU_MODULE_DIR: accel } : process.env,
        },
      );
      const ours = new QtestChild(["-accel", "qtest", ...common, ...drive(img)]);
      const [q, x] = [await run(qemu), await run(ours.proc)];
      expect(x.replies).toEqual(q.replies);
      // Every handler the session reaches is in the trace, the IDENTIFY data words among them.
      for (const ev of QEMU_IDE_TRACE_EVENTS) expect(q.trace.some((l) => l.startsWith(`${ev} `))).toBe(true);
      expect(q.trace.length).toBeGreaterThan(500);
      expect(x.trace).toEqual(q.trace);
    },
    60_000,
  );
});
