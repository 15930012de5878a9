/**
 * The launcher as a process: QMP by literal JSON over its socket (greeting, negotiation, query-status,
 * stop/cont with STOP/RESUME, CommandNotFound, qemu-io breakpoints), QEMU's rerror/werror policy on a flush that
 * a blkdebug rule fails (stop + cont retries as ide_restart_cb; report; ignore), and the exit on SIGTERM with the
 * acknowledged writes on the image.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { xenide } from "../cli/run.ts";
import { QmpSocket, QtestChild } from "./launch.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-launcher-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const children: QtestChild[] = [];

function image(): string {
  const p = join(dir, `disk${++seq}.img`);
  writeFileSync(p, Buffer.alloc(1024 * 1024));
  return p;
}

/** libqos's prepare_blkdebug_script: EIO on the first flush_to_disk in state 1, then state 2. */
function flushEioRules(): string {
  const p = join(dir, `rules${++seq}.ini`);
  writeFileSync(
    p,
    '[inject-error]\nevent = "flush_to_disk"\nerrno = "5"\nstate = "1"\nimmediately = "off"\nonce = "on"\n\n' +
      '[set-state]\nevent = "flush_to_disk"\nnew_state = "2"\n',
  );
  return p;
}

function launch(args: string[]): { child: QtestChild; qmpPath: string } {
  const qmpPath = join(dir, `qmp${++seq}.sock`);
  const child = new QtestChild([...args, "-qmp", `unix:${qmpPath},server=on,wait=off`]);
  children.push(child);
  return { child, qmpPath };
}

async function negotiated(qmpPath: string): Promise<QmpSocket> {
  const q = await QmpSocket.connect(qmpPath);
  await q.next((m) => "QMP" in m);
  expect(await q.send('{"execute":"qmp_capabilities","id":"cap"}', "cap")).toEqual({ return: {}, id: "cap" });
  return q;
}

/** WRITE SECTORS (30h) of one sector at LBA 1 by PIO, so the medium is dirty (a flush then reaches the disk). */
async function pioWrite(c: QtestChild, lba = 1): Promise<void> {
  await c.cmd("outb 0x1f6 0xe0");
  await c.cmd("outb 0x1f2 0x01");
  await c.cmd(`outb 0x1f3 0x${lba.toString(16)}`);
  await c.cmd("outb 0x1f4 0x00");
  await c.cmd("outb 0x1f5 0x00");
  await c.cmd("outb 0x1f7 0x30");
  for (let i = 0; i < 256; i++) await c.cmd(`outw 0x1f0 0x${(0xa500 + i).toString(16)}`);
  expect(await c.settled()).toBe(0x50);
}

afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
    await c.exited;
  }
});

describe("QMP", () => {
  it("server=on with wait=on (its default) serves nothing until the first QMP client connects, as QEMU", async () => {
    const qmpPath = join(dir, `qmp${++seq}.sock`);
    const child = new QtestChild(["-drive", `file=${image()},if=ide`, "-qmp", `unix:${qmpPath},server=on`]);
    children.push(child);
    // QEMU 7.2 says so on stderr, led by the option, and scripts wait for that line.
    for (let i = 0; i < 400 && !child.stderr.includes("waiting"); i++)
      await new Promise((r) => setTimeout(r, 25));
    expect(child.stderr).toBe(
      `xenide-system-x86_64: -qmp unix:${qmpPath},server=on: info: QEMU waiting for connection on: ` +
        `disconnected:unix:${qmpPath},server=on\n`,
    );
    // The qtest channel is not served meanwhile (QEMU connects its qtest chardev after the monitors').
    let answered = false;
    const reply = child.cmd("endianness").then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    const q = await QmpSocket.connect(qmpPath);
    expect(await q.next((m) => "QMP" in m)).toMatchObject({ QMP: { version: { qemu: { major: 7 } } } });
    expect(await reply).toBe("OK little");
    q.sock.destroy();
  });

  it("greets, refuses commands before negotiation, and answers as QEMU shapes replies", async () => {
    const { child, qmpPath } = launch(["-drive", `file=${image()},if=ide`]);
    const q = await QmpSocket.connect(qmpPath);
    const greeting = await q.next((m) => "QMP" in m);
    expect(greeting).toMatchObject({
      QMP: { version: { qemu: { major: 7, minor: 2 } }, capabilities: ["oob"] },
    });
    expect(await q.send('{"execute":"query-status","id":1}', 1 as unknown as string)).toEqual({
      error: { class: "CommandNotFound", desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
      id: 1,
    });
    // Single-quoted strings, as QEMU's parser takes them (libqtest writes its requests that way).
    expect(await q.send("{'execute':'qmp_capabilities','id':'c'}", "c")).toEqual({ return: {}, id: "c" });
    expect(await q.send('{"execute":"query-status","id":"s"}', "s")).toEqual({
      return: { status: "running", singlestep: false, running: true },
      id: "s",
    });
    expect(await q.send('{"execute":"no-such-thing","id":"n"}', "n")).toEqual({
      error: { class: "CommandNotFound", desc: "The command no-such-thing has not been found" },
      id: "n",
    });
    const from = q.messages.length;
    expect(await q.send('{"execute":"stop","id":"p"}', "p")).toEqual({ return: {}, id: "p" });
    await q.next((m) => m.event === "STOP", from);
    expect((await q.send('{"execute":"query-status","id":"s2"}', "s2")).return).toMatchObject({
      status: "paused",
      running: false,
    });
    expect(await q.send('{"execute":"cont","id":"r"}', "r")).toEqual({ return: {}, id: "r" });
    await q.next((m) => m.event === "RESUME", from);
    const blocks = (await q.send('{"execute":"query-block","id":"b"}', "b")).return as Record<
      string,
      unknown
    >[];
    // Without -nodefaults QEMU 7.2 has its default CD-ROM drive too, after the -drive ones; the board's drives are
    // /machine/unattached/device[23] and on (observed: ide0-hd0 [23], ide1-cd0 [24]; QEMU also lists floppy0
    // and sd0, devices xenide's PC does not have).
    expect(blocks).toHaveLength(2);
    expect(blocks[0]).toMatchObject({
      device: "ide0-hd0",
      qdev: "/machine/unattached/device[23]",
      inserted: { ro: false, image: { "virtual-size": 1048576 } },
    });
    expect(blocks[1]).toEqual({
      device: "ide1-cd0",
      qdev: "/machine/unattached/device[24]",
      locked: false,
      removable: true,
      type: "unknown",
      tray_open: false,
      "io-status": "ok",
    });
    // The qtest side kept working meanwhile.
    expect(await child.cmd("endianness")).toBe("OK little");
    q.close();
  });

  it("holds a flush at a blkdebug breakpoint until qemu-io resumes it (ide-test /ide/flush)", async () => {
    const { child, qmpPath } = launch(["-drive", `file=blkdebug::${image()},if=ide,format=raw`]);
    const q = await negotiated(qmpPath);
    await pioWrite(child);
    const hmp = (line: string, id: string) =>
      q.send(
        JSON.stringify({ execute: "human-monitor-command", arguments: { "command-line": line }, id }),
        id,
      );
    expect(await hmp('qemu-io ide0-hd0 "break flush_to_os A"', "h1")).toEqual({ return: "", id: "h1" });
    await child.cmd("outb 0x1f7 0xe7");
    // Held in flight: BSY|DRDY, and it stays so however long we look (ATA STATUS 0xC0, as QEMU's ide-test wants).
    for (let i = 0; i < 5; i++) expect((await child.inb(0x1f7)) & 0xc9).toBe(0xc0);
    expect(await hmp('qemu-io ide0-hd0 "resume B"', "h2")).toEqual({
      return: "Could not resume request: No such file or directory\r\n",
      id: "h2",
    });
    expect(await hmp('qemu-io ide0-hd0 "resume A"', "h3")).toEqual({ return: "", id: "h3" });
    expect(await child.settled()).toBe(0x50);
    expect(await hmp('qemu-io ide0-hd0 "remove_break A"', "h4")).toEqual({
      return: "Could not remove breakpoint A: No such file or directory\r\n",
      id: "h4",
    });
    q.close();
  });
});

describe("machine reset", () => {
  it("system_reset: the RESET event, then the reply, as QEMU 7.2 sends them; the PC is reset; 0xCF9 resets too", async () => {
    const { child, qmpPath } = launch(["-S", "-drive", `file=${image()},if=ide,index=0`]);
    const q = await negotiated(qmpPath);
    // BAR4 assigned and decoded, device 1 selected, Reset Control bit 1 set: all undone by a reset.
    await child.cmd("outl 0xcf8 0x80000920");
    await child.cmd("outl 0xcfc 0xc001");
    await child.cmd("outl 0xcf8 0x80000904");
    await child.cmd("outw 0xcfc 0x5");
    await child.cmd("outb 0xc004 0x40");
    await child.cmd("outb 0x1f6 0xb0");
    await child.cmd("outb 0xcf9 0x02");
    expect(await child.inb(0xc004)).toBe(0x40);
    const from = q.messages.length;
    const reply = await q.send('{"execute":"system_reset","id":"r"}', "r");
    expect(reply).toEqual({ return: {}, id: "r" });
    // QEMU 7.2 (observed over QMP): {"event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}
    // arrives before the command's reply.
    const sent = q.messages.slice(from);
    const reset = sent.findIndex((m) => m.event === "RESET");
    expect(reset).toBeGreaterThanOrEqual(0);
    expect(reset).toBeLessThan(sent.indexOf(reply));
    expect(sent[reset]!.data).toEqual({ guest: false, reason: "host-qmp-system-reset" });
    expect(sent[reset]!.timestamp).toMatchObject({
      seconds: expect.any(Number),
      microseconds: expect.any(Number),
    });
    expect((await q.send('{"execute":"query-status","id":"s"}', "s")).return).toMatchObject({
      status: "prelaunch",
    });
    // Reset state: BAR4 unassigned (00000001h) and not decoded, device 0 selected with its signature, RCR 0.
    await child.cmd("outl 0xcf8 0x80000920");
    expect(await child.cmd("inl 0xcfc")).toBe("OK 0x0001");
    expect(await child.inb(0xc004)).toBe(0xff);
    expect(await child.inb(0x1f6)).toBe(0xa0);
    expect([await child.inb(0x1f2), await child.inb(0x1f3), await child.inb(0x1f7)]).toEqual([1, 1, 0x50]);
    expect(await child.inb(0xcf9)).toBe(0);
    // The guest's reset through PIIX3's Reset Control register: RESET with guest true, reason guest-reset.
    const from2 = q.messages.length;
    await child.cmd("outb 0xcf9 0x06");
    const guest = await q.next((m) => m.event === "RESET", from2);
    expect(guest.data).toEqual({ guest: true, reason: "guest-reset" });
    q.close();
  });
});

describe("QMP media change (ATAPI)", () => {
  it("ejects and changes a CD's medium, with DEVICE_TRAY_MOVED; a hard disk is not removable", async () => {
    const cd1 = join(dir, `cd${++seq}.iso`);
    const cd2 = join(dir, `cd${++seq}.iso`);
    writeFileSync(cd1, Buffer.alloc(2048 * 16));
    writeFileSync(cd2, Buffer.alloc(2048 * 32));
    const { qmpPath } = launch([
      "-drive",
      `file=${image()},if=ide,index=0`,
      "-drive",
      `if=none,file=${cd1},media=cdrom,format=raw,id=sr0`,
      "-device",
      "ide-cd,drive=sr0,bus=ide.1,id=cd0",
    ]);
    const q = await negotiated(qmpPath);
    const from = q.messages.length;
    expect(await q.send('{"execute":"eject","arguments":{"device":"ide0-hd0"},"id":"e0"}', "e0")).toEqual({
      error: { class: "GenericError", desc: "Device 'ide0-hd0' is not removable" },
      id: "e0",
    });
    expect(await q.send('{"execute":"eject","arguments":{"id":"cd0"},"id":"e1"}', "e1")).toEqual({
      return: {},
      id: "e1",
    });
    const moved = await q.next((m) => m.event === "DEVICE_TRAY_MOVED", from);
    expect(moved.data).toEqual({ device: "sr0", id: "cd0", "tray-open": true });
    let blocks = (await q.send('{"execute":"query-block","id":"b1"}', "b1")).return as Record<
      string,
      unknown
    >[];
    // A -device ide-cd turns QEMU's default CD-ROM drive off: the two -drive options, in their order.
    expect(blocks.map((b) => [b.device, b.qdev])).toEqual([
      ["ide0-hd0", "/machine/unattached/device[23]"],
      ["sr0", "cd0"],
    ]);
    expect(blocks[1]).toMatchObject({ device: "sr0", removable: true, tray_open: true });
    expect(blocks[1]).not.toHaveProperty("inserted");
    const change = JSON.stringify({
      execute: "blockdev-change-medium",
      arguments: { id: "cd0", filename: cd2, format: "raw" },
      id: "c",
    });
    expect(await q.send(change, "c")).toEqual({ return: {}, id: "c" });
    await q.next(
      (m) => m.event === "DEVICE_TRAY_MOVED" && (m.data as { "tray-open": boolean })["tray-open"] === false,
      from,
    );
    blocks = (await q.send('{"execute":"query-block","id":"b2"}', "b2")).return as Record<string, unknown>[];
    expect(blocks[1]).toMatchObject({
      tray_open: false,
      inserted: { ro: true, image: { filename: cd2, "virtual-size": 2048 * 32 } },
    });
    q.close();
  });
});

describe("-qtest-log", () => {
  it("records requests, replies and IRQ lines in QEMU's format", async () => {
    const log = join(dir, `qtest${++seq}.log`);
    const child = new QtestChild(["-qtest-log", log, "-drive", `file=${image()},if=ide`]);
    children.push(child);
    expect(await child.cmd("endianness")).toBe("OK little");
    expect(await child.cmd("irq_intercept_in ioapic")).toBe("OK");
    await child.cmd("outb 0x1f7 0xec"); // IDENTIFY: raises IRQ 14
    child.proc.stdin!.end();
    expect(await child.exited).toEqual({ code: 0, signal: null });
    const lines = readFileSync(log, "utf8").trimEnd().split("\n");
    const t = String.raw`\d+\.\d{6}`;
    expect(lines[0]).toMatch(new RegExp(`^\\[I ${t}\\] OPENED$`));
    expect(lines[1]).toMatch(new RegExp(`^\\[R \\+${t}\\] endianness$`));
    expect(lines[2]).toMatch(new RegExp(`^\\[S \\+${t}\\] OK little$`));
    expect(lines.slice(5, 8).map((l) => l.replace(/ \+[0-9.]+\]/, "]"))).toEqual([
      "[R] outb 0x1f7 0xec",
      "[S] IRQ raise 14",
      "[S] OK",
    ]);
    expect(lines[lines.length - 1]).toMatch(new RegExp(`^\\[I \\+${t}\\] CLOSED$`));
  });
});

describe("error policy (rerror/werror)", () => {
  it("werror=stop: BLOCK_IO_ERROR then STOP, the flush stays BSY, cont retries it (ide-test /ide/flush/retry_pci)", async () => {
    const { child, qmpPath } = launch([
      "-drive",
      `file=blkdebug:${flushEioRules()}:${image()},if=ide,cache=writeback,format=raw,rerror=stop,werror=stop`,
    ]);
    const q = await negotiated(qmpPath);
    await pioWrite(child);
    const from = q.messages.length;
    await child.cmd("outb 0x1f7 0xe7");
    const err = await q.next((m) => m.event === "BLOCK_IO_ERROR", from);
    expect(err.data).toEqual({
      device: "ide0-hd0",
      "node-name": expect.any(String),
      operation: "write",
      action: "stop",
      nospace: false,
      reason: "Input/output error",
    });
    const stop = await q.next((m) => m.event === "STOP", from);
    expect(q.messages.indexOf(stop)).toBeGreaterThan(q.messages.indexOf(err));
    expect((await child.inb(0x1f7)) & 0xc9).toBe(0xc0);
    expect((await q.send('{"execute":"query-status","id":"s"}', "s")).return).toMatchObject({
      status: "io-error",
    });
    expect(await q.send('{"execute":"cont","id":"c"}', "c")).toEqual({ return: {}, id: "c" });
    await q.next((m) => m.event === "RESUME", from);
    // The retried flush passes flush_to_disk in state 2: no error this time.
    expect(await child.settled()).toBe(0x50);
    expect(await child.inb(0x1f1)).toBe(0x00);
    q.close();
  });

  it("werror=report: the flush fails with DF|ERR and ABRT; the event says report", async () => {
    const { child, qmpPath } = launch([
      "-drive",
      `file=blkdebug:${flushEioRules()}:${image()},if=ide,werror=report`,
    ]);
    const q = await negotiated(qmpPath);
    await pioWrite(child);
    const from = q.messages.length;
    await child.cmd("outb 0x1f7 0xe7");
    // ERR and ABRT (DF too in the xenide profile, ATA-6 §8.62; QEMU's ide_flush_cb reports ABRT alone).
    expect((await child.settled()) & 0xc9).toBe(0x41);
    expect(await child.inb(0x1f1)).toBe(0x04);
    const err = await q.next((m) => m.event === "BLOCK_IO_ERROR", from);
    expect(err.data).toMatchObject({ operation: "write", action: "report", reason: "Input/output error" });
    expect(err.data).not.toHaveProperty("nospace"); // iostatus is off when no action can stop
    expect((await q.send('{"execute":"query-status","id":"s"}', "s")).return).toMatchObject({
      status: "running",
    });
    q.close();
  });

  it("cache=unsafe: a guest's flush stops at the OS (flush_to_disk never fires), the writes still reach the image", async () => {
    const img = image();
    const { child, qmpPath } = launch([
      "-drive",
      `file=blkdebug:${flushEioRules()}:${img},if=ide,werror=report,cache=unsafe`,
    ]);
    const q = await negotiated(qmpPath);
    await pioWrite(child);
    const from = q.messages.length;
    await child.cmd("outb 0x1f7 0xe7");
    // QEMU's bdrv_co_flush skips flush_to_disk with BDRV_O_NO_FLUSH: the rule that fails it never arms.
    expect(await child.settled()).toBe(0x50);
    expect((await q.send('{"execute":"query-status","id":"s"}', "s")).return).toMatchObject({
      status: "running",
    });
    expect(q.messages.slice(from).some((m) => m.event === "BLOCK_IO_ERROR")).toBe(false);
    q.close();
    child.proc.kill("SIGTERM");
    expect((await child.exited).code).toBe(0);
    // The sector written by PIO (words 0xa500, 0xa501, ...) is on the image after an orderly exit.
    expect([...readFileSync(img).subarray(512, 516)]).toEqual([0x00, 0xa5, 0x01, 0xa5]);
  });

  it("werror=ignore: the flush completes as if it had worked; the event says ignore", async () => {
    const { child, qmpPath } = launch([
      "-drive",
      `file=blkdebug:${flushEioRules()}:${image()},if=ide,werror=ignore`,
    ]);
    const q = await negotiated(qmpPath);
    await pioWrite(child);
    const from = q.messages.length;
    await child.cmd("outb 0x1f7 0xe7");
    expect(await child.settled()).toBe(0x50);
    const err = await q.next((m) => m.event === "BLOCK_IO_ERROR", from);
    expect(err.data).toMatchObject({ action: "ignore" });
    q.close();
  });
});

/** qemu-img and qemu-io from Debian's qemu-utils: required under CI, else the qcow2 case says why it skips. */
const qemuImg = ((): string | null => {
  try {
    execFileSync("qemu-img", ["--version"], { stdio: "ignore" });
    execFileSync("qemu-io", ["--version"], { stdio: "ignore" });
    return null;
  } catch {
    return "qemu-img/qemu-io (Debian qemu-utils) not found";
  }
})();
const qcow2It = qemuImg && process.env.CI !== "true" ? it.skip : it;

describe("ACPI soft-off", () => {
  it("SLP_EN with sleep type 0 in PM1a_CNT: SHUTDOWN (guest, guest-shutdown) and exit 0, as QEMU 7.2", async () => {
    const { child, qmpPath } = launch(["-drive", `file=${image()},if=ide,format=raw`]);
    const q = await negotiated(qmpPath);
    // PMBA = 600h with PMREGMISC bit 0 (PIIX4 00:01.3 config 40h and 80h), then PM1a_CNT (PMBA + 4) :=
    // SLP_EN (bit 13) | SLP_TYP 0 (ACPI 6.0 §4.8.3.2.1; QEMU's DSDT gives _S5 type 0).
    for (const l of ["outl 0xcf8 0x80000b40", "outl 0xcfc 0x601", "outl 0xcf8 0x80000b80", "outb 0xcfc 0x1"])
      expect(await child.cmd(l)).toBe("OK");
    expect(await child.cmd("outw 0x604 0x2000")).toBe("OK");
    const ev = await q.next((m) => m.event === "SHUTDOWN");
    expect(ev.data).toEqual({ guest: true, reason: "guest-shutdown" });
    expect(await child.exited).toEqual({ code: 0, signal: null });
    q.close();
  });
});

/** query-status, each query with its own id (QmpSocket.send finds the first reply with the id). */
function statusQuery(q: QmpSocket): () => Promise<Record<string, unknown>> {
  let n = 0;
  return async () => {
    const id = `s${++n}`;
    return (await q.send(`{"execute":"query-status","id":"${id}"}`, id)).return as Record<string, unknown>;
  };
}

/** PM enabled as for soft-off (PMBA 600h, PMREGMISC bit 0). */
const PM_ENABLE = ["outl 0xcf8 0x80000b40", "outl 0xcfc 0x601", "outl 0xcf8 0x80000b80", "outb 0xcfc 0x1"];

describe("ACPI S3", () => {
  it("SLP_EN with sleep type 1: SUSPEND, suspended until system_wakeup (a reset, then WAKEUP), as QEMU 7.2", async () => {
    const { child, qmpPath } = launch(["-drive", `file=${image()},if=ide,format=raw`]);
    const q = await negotiated(qmpPath);
    const status = statusQuery(q);
    // A task file register to see the devices keep their state while suspended, and lose it on wakeup.
    expect(await child.cmd("outb 0x1f2 0x55")).toBe("OK");
    expect((await q.send('{"execute":"system_wakeup","id":"w0"}', "w0")).error).toEqual({
      class: "GenericError",
      desc: "Unable to wake up: guest is not in suspended state",
    });
    // PM enabled, then PM1a_CNT := SLP_EN | SLP_TYP 1 (QEMU's _S3).
    for (const l of PM_ENABLE) expect(await child.cmd(l)).toBe("OK");
    const from = q.messages.length;
    expect(await child.cmd("outw 0x604 0x2400")).toBe("OK");
    const ev = await q.next((m) => m.event === "SUSPEND", from);
    expect(ev).not.toHaveProperty("data");
    expect(await status()).toEqual({ status: "suspended", singlestep: false, running: false });
    // Suspended: qtest still reaches the devices, which kept their state; stop and cont change nothing.
    expect(await child.cmd("inb 0x1f2")).toBe("OK 0x0055");
    expect((await q.send('{"execute":"stop","id":"p"}', "p")).return).toEqual({});
    expect((await q.send('{"execute":"cont","id":"c"}', "c")).return).toEqual({});
    expect((await status()).status).toBe("suspended");
    expect(q.messages.slice(from).some((m) => m.event === "STOP" || m.event === "RESUME")).toBe(false);
    // system_wakeup: WAKEUP before the reply, no RESET event, running again, the machine reset (IDE's sector
    // count back to 01h, the PM I/O space off again: PM1a_CNT floats).
    const w = q.messages.length;
    expect(await q.send('{"execute":"system_wakeup","id":"w"}', "w")).toEqual({ return: {}, id: "w" });
    const after = q.messages.slice(w).map((m) => m.event ?? "reply");
    expect(after).toEqual(["WAKEUP", "reply"]);
    expect(await status()).toEqual({ status: "running", singlestep: false, running: true });
    expect(await child.cmd("inb 0x1f2")).toBe("OK 0x0001");
    expect(await child.cmd("inw 0x604")).toBe("OK 0xffff");
    q.close();
  });
});

describe("ACPI S3 then system_reset", () => {
  // Observed side by side with Debian's QEMU 7.2 (a script driving both the same way): a reset while suspended
  // sends RESET and leaves the VM in prelaunch with its devices reset; system_wakeup then refuses (not
  // suspended) and cont runs it (RESUME).
  it("a reset while suspended: RESET, status prelaunch, no wakeup, cont runs it", async () => {
    const { child, qmpPath } = launch(["-drive", `file=${image()},if=ide,format=raw`]);
    const q = await negotiated(qmpPath);
    const query = statusQuery(q);
    const status = async () => (await query()).status;
    expect(await child.cmd("outb 0x1f2 0x55")).toBe("OK");
    for (const l of PM_ENABLE) expect(await child.cmd(l)).toBe("OK");
    const from = q.messages.length;
    expect(await child.cmd("outw 0x604 0x2400")).toBe("OK");
    await q.next((m) => m.event === "SUSPEND", from);
    const r = q.messages.length;
    expect(await q.send('{"execute":"system_reset","id":"r"}', "r")).toEqual({ return: {}, id: "r" });
    expect(q.messages.slice(r).map((m) => m.event ?? "reply")).toEqual(["RESET", "reply"]);
    expect(await status()).toBe("prelaunch");
    expect(await child.cmd("inb 0x1f2")).toBe("OK 0x0001");
    expect(await child.cmd("inw 0x604")).toBe("OK 0xffff");
    expect((await q.send('{"execute":"system_wakeup","id":"w"}', "w")).error).toEqual({
      class: "GenericError",
      desc: "Unable to wake up: guest is not in suspended state",
    });
    const c = q.messages.length;
    expect(await q.send('{"execute":"cont","id":"c"}', "c")).toEqual({ return: {}, id: "c" });
    await q.next((m) => m.event === "RESUME", c);
    expect(await status()).toBe("running");
    q.close();
  });
});

describe("IDENTIFY", () => {
  /** IDENTIFY DEVICE (or `command`) at `drive` (0xa0 master, 0xb0 slave) of the primary channel: 256 words. */
  const identify = (c: QtestChild, drive: number, command = 0xec): Promise<number[]> =>
    identifyOn(c, 0x1f0, drive, command);
  /** IDENTIFY on the channel at `base` (0x1f0 primary, 0x170 secondary). */
  async function identifyOn(c: QtestChild, base: number, drive: number, command: number): Promise<number[]> {
    await c.cmd(`outb 0x${(base + 6).toString(16)} 0x${drive.toString(16)}`);
    await c.cmd(`outb 0x${(base + 7).toString(16)} 0x${command.toString(16)}`);
    expect(await c.settled(base + 7)).toBe(0x58);
    const w: number[] = [];
    for (let i = 0; i < 256; i++) w.push(Number((await c.cmd(`inw 0x${base.toString(16)}`)).slice(3)));
    return w;
  }
  /** Words 10-19: the serial (ATA strings put the first character of each pair in the high byte). */
  const serial = (w: number[]): string =>
    w
      .slice(10, 20)
      .map((x) => String.fromCharCode(x >> 8, x & 0xff))
      .join("")
      .trim();

  it("serials are QEMU's QM%05d of the position (bus * 2 + unit + 1), not of the order drives were added", async () => {
    // QEMU 7.2's ide_init1 numbers every position the PIIX creates, attached or not: a slave alone is QM00002.
    const { child } = launch([
      "-device",
      "ide-hd,drive=d1,bus=ide.0,unit=1",
      "-drive",
      `id=d1,if=none,file=${image()},format=raw`,
    ]);
    expect(serial(await identify(child, 0xb0))).toBe("QM00002");
    child.proc.kill("SIGTERM");
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });

  it("wwn=: words 84/87 bit 8 and the name in words 108-111, most significant first (QEMU 7.2 ide_identify)", async () => {
    const { child } = launch([
      "-device",
      "ide-hd,drive=d1,bus=ide.0,unit=0,wwn=0x5000c50015ea71ac",
      "-drive",
      `id=d1,if=none,file=${image()},format=raw`,
      "-device",
      "ide-hd,drive=d2,bus=ide.0,unit=1",
      "-drive",
      `id=d2,if=none,file=${image()},format=raw`,
      "-device",
      "ide-cd,bus=ide.1,unit=0,wwn=0x5000c50015ea71ad",
    ]);
    const w = await identify(child, 0xa0);
    // hw/ide/core.c: put_le16(p + 84, (1 << 14) | (1 << 8)), the same in 87, then wwn >> 48 .. wwn in 108-111.
    expect([w[84], w[87]]).toEqual([0x4100, 0x4100]);
    expect(w.slice(108, 112)).toEqual([0x5000, 0xc500, 0x15ea, 0x71ac]);
    const plain = await identify(child, 0xb0); // no wwn: bit 14 alone, words 108-111 zero
    expect([plain[84], plain[87]]).toEqual([0x4000, 0x4000]);
    expect(plain.slice(108, 112)).toEqual([0, 0, 0, 0]);
    // IDENTIFY PACKET DEVICE (A1h) on the secondary channel's CD: ide_atapi_identify sets bit 8 alone in 84/87.
    const cd = await identifyOn(child, 0x170, 0xa0, 0xa1);
    expect([cd[84], cd[87]]).toEqual([0x0100, 0x0100]);
    expect(cd.slice(108, 112)).toEqual([0x5000, 0xc500, 0x15ea, 0x71ad]);
    child.proc.kill("SIGTERM");
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });

  it("wwn= takes QEMU's uint64 forms and refuses anything else in QEMU's words", () => {
    const img = image();
    const r = xenide([
      "system-x86_64",
      "-device",
      "ide-hd,drive=d1,wwn=0xZZ",
      "-drive",
      `id=d1,if=none,file=${img}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      "xenide-system-x86_64: -device ide-hd,drive=d1,wwn=0xZZ: Parameter 'wwn' expects integer",
    );
  });
});

describe("image formats", () => {
  qcow2It(
    `-drive format=qcow2: a guest reads what qemu-io wrote and writes what qemu-img then sees${qemuImg ? ` (${qemuImg})` : ""}`,
    async () => {
      const img = join(dir, `disk${++seq}.qcow2`);
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", img, "1M"]);
      execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0x3c 0 512", img], { stdio: "ignore" });
      const { child } = launch(["-drive", `file=${img},if=ide,format=qcow2`]);
      // READ SECTORS LBA 0, one sector: 256 words of 0x3c3c.
      for (const l of [
        "outb 0x1f6 0xe0",
        "outb 0x1f2 0x01",
        "outb 0x1f3 0x00",
        "outb 0x1f4 0x00",
        "outb 0x1f5 0x00",
      ])
        await child.cmd(l);
      await child.cmd("outb 0x1f7 0x20");
      expect(await child.settled()).toBe(0x58);
      const words = new Set<string>();
      for (let i = 0; i < 256; i++) words.add(await child.cmd("inw 0x1f0"));
      expect([...words]).toEqual(["OK 0x3c3c"]);
      await pioWrite(child, 5);
      child.proc.kill("SIGTERM");
      expect(await child.exited).toEqual({ code: 0, signal: null });
      execFileSync("qemu-img", ["check", "-q", img]);
      const out = execFileSync("qemu-io", ["-f", "qcow2", "-c", "read -v 2560 4", img], { encoding: "utf8" });
      expect(out).toMatch(/^00000a00:\s+00 a5 01 a5/m);
    },
  );
});

describe("process", () => {
  it("exits 0 on SIGTERM with every acknowledged PIO block on the image", async () => {
    const img = image();
    const { child } = launch(["-drive", `file=${img},if=ide,format=raw`]);
    // WRITE SECTORS LBA 16 count 4; two 256-word blocks written, each acknowledged, then SIGTERM.
    for (const l of [
      "outb 0x1f6 0xe0",
      "outb 0x1f2 0x04",
      "outb 0x1f3 0x10",
      "outb 0x1f4 0x00",
      "outb 0x1f5 0x00",
    ])
      await child.cmd(l);
    await child.cmd("outb 0x1f7 0x30");
    for (let i = 0; i < 512; i++) await child.cmd("outw 0x1f0 0x5aa5");
    expect((await child.inb(0x1f7)) & 0x08).toBe(0x08); // DRQ for the third block: two are acknowledged
    child.proc.kill("SIGTERM");
    expect(await child.exited).toEqual({ code: 0, signal: null });
    const data = readFileSync(img);
    expect(data.subarray(16 * 512, 18 * 512).every((b, i) => b === (i % 2 === 0 ? 0xa5 : 0x5a))).toBe(true);
    expect(data.subarray(18 * 512, 20 * 512).every((b) => b === 0)).toBe(true);
  });

  it("exits 0 at the end of its qtest input", async () => {
    const { child } = launch([]);
    expect(await child.cmd("endianness")).toBe("OK little");
    child.proc.stdin!.end();
    expect(await child.exited).toEqual({ code: 0, signal: null });
  });

  it("is the xenide system-x86_64 subcommand too, with QEMU's exit statuses", () => {
    const bad = xenide(["system-x86_64", "-drive", "file=x.img,if=scsi"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split("\n")).toEqual([
      "xenide-system-x86_64: -drive file=x.img,if=scsi: only if=ide and if=none are supported by xenide (if=scsi)",
    ]);
    const ok = xenide(["system-x86_64", "-qtest", "stdio", "-qtest-log", "none", "-machine", "pc"], {
      input: Buffer.from("endianness\n"),
    });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe("OK little\n");
  });

  it("talks QMP with socat, by literal JSON", async () => {
    const socat = ["/usr/bin/socat", "/bin/socat"].find((p) => existsSync(p));
    if (!socat) {
      if (process.env.CI === "true") throw new Error("socat is missing (required under CI)");
      console.log("skipped: socat is not installed");
      return;
    }
    const { qmpPath } = launch([]);
    await (await QmpSocket.connect(qmpPath)).sock.destroy();
    const out = execFileSync(socat, ["-t", "2", "-", `UNIX-CONNECT:${qmpPath}`], {
      input: '{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n',
      encoding: "utf8",
      timeout: 10_000,
    });
    const lines = out
      .trim()
      .split(/\r?\n/)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toHaveProperty("QMP");
    expect(lines[1]).toEqual({ return: {} });
    expect(lines[2]).toEqual({ return: { status: "running", singlestep: false, running: true } });
  });
});
