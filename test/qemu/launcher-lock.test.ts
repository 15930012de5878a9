/**
 * The launcher takes its images' locks while it starts (the lock helper's verdict comes while the machine is
 * built): a locked image still refuses the start with one line and status 1, after its character devices are
 * connected and before anything is served (QEMU 7.2 connects its QMP and qtest sockets, then fails on the
 * lock: observed), and an image that is free is served.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { RawImageBackend } from "../../src/storage/raw.ts";
import { launcherPath } from "./launch.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-launcher-lock-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const bin = launcherPath();

/** The drive option of the runs below: `image` on the primary master, as ide-test gives it. */
const driveOf = (image: string): string[] => ["-drive", `file=${image},if=ide,format=raw,cache=writeback`];

/** libqtest's side: listen on the qtest and QMP sockets, start the launcher, note the connections it makes. */
async function start(drives: string[]): Promise<{
  status: number | null;
  stderr: string;
  connected: string[];
  qmpReceived: string;
}> {
  const servers: Server[] = [];
  const connected: string[] = [];
  let qmpReceived = "";
  const paths = ["qtest", "qmp"].map((n) => join(dir, `${n}-${process.hrtime.bigint()}.sock`));
  for (const p of paths) {
    const srv = createServer((sock) => {
      connected.push(p === paths[0] ? "qtest" : "qmp");
      sock.on("error", () => {});
      if (p === paths[0]) sock.end("endianness\n");
      else sock.setEncoding("utf8").on("data", (d: string) => (qmpReceived += d));
    });
    servers.push(srv);
    await new Promise<void>((resolve) => srv.listen(p, resolve));
  }
  const child = spawn(
    bin,
    [
      "-qtest",
      `unix:${paths[0]}`,
      "-qtest-log",
      "/dev/null",
      "-qmp",
      `unix:${paths[1]}`,
      "-machine",
      "pc",
      "-accel",
      "qtest",
      "-display",
      "none",
      ...drives,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  // "close": its standard error is read to the end (at "exit" the pipe can still hold the line).
  const status = await new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  for (const s of servers) s.close();
  return { status, stderr, connected, qmpReceived };
}

describe("the launcher's image lock", () => {
  it("refuses a locked image with one line and status 1, its sockets connected but nothing served", async () => {
    const image = join(dir, "held.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const holder = RawImageBackend.open(image);
    const record = readFileSync(`${image}.lock`, "utf8");
    try {
      const r = await start(driveOf(image));
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        `xenide-system-x86_64: ${image} is in use: process ${process.pid} (node) holds it for writing\n`,
      );
      // QEMU 7.2 connects its QMP and qtest sockets before it opens the image and fails (observed: both).
      expect(r.connected).toHaveLength(2);
      expect(r.qmpReceived).toBe(""); // no greeting: nothing was served
      expect(readFileSync(`${image}.lock`, "utf8")).toBe(record); // the holder's lock is untouched
    } finally {
      holder.close();
    }
  });

  it("serves a free image (both sockets connected) and exits 0 at the end of the qtest input", async () => {
    const image = join(dir, "free.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const r = await start(driveOf(image));
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.connected).toHaveLength(2);
  });
});

describe("devices QEMU 7.2 refuses to realize", () => {
  // Observed with Debian's QEMU 7.2: "qemu-system-x86_64: Block node is read-only" for -drive if=ide,readonly=on
  // (the board's drive: no option named), "-device ide-hd,drive=d0: Block node is read-only" through -device,
  // and "Device needs media, but drive is empty" for a disk without file=; status 1, after the chardevs.
  it("a hard disk on a read-only drive: one line, status 1, sockets connected and nothing served", async () => {
    const image = join(dir, "ro.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const before = readFileSync(image);
    const r = await start(["-drive", `file=${image},if=ide,format=raw,readonly=on`]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe("xenide-system-x86_64: Block node is read-only\n");
    expect(r.connected).toHaveLength(2);
    expect(r.qmpReceived).toBe("");
    expect(readFileSync(image).equals(before)).toBe(true);
  });

  it("through -device it names the device; an empty disk drive is QEMU's 'needs media'", async () => {
    const image = join(dir, "ro2.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const ro = await start([
      "-drive",
      `file=${image},if=none,id=d0,format=raw,readonly=on`,
      "-device",
      "ide-hd,drive=d0,bus=ide.1",
    ]);
    expect(ro.status).toBe(1);
    expect(ro.stderr).toBe(
      "xenide-system-x86_64: -device ide-hd,drive=d0,bus=ide.1: Block node is read-only\n",
    );
    const empty = await start(["-drive", "if=ide,index=1"]);
    expect(empty.status).toBe(1);
    expect(empty.stderr).toBe("xenide-system-x86_64: Device needs media, but drive is empty\n");
    expect(empty.connected).toHaveLength(2);
  });
});

// QEMU 7.2's start, observed side by side with libqtest's two listening sockets: the command line is parsed
// (a bad option: nothing connected), the QMP character device connected, the drives opened (an image that cannot
// be opened: QMP connected only), the qtest one connected, the devices made (a device refused: both connected).
// A libqtest client waits for its connections (50 s in QEMU 7.2's libqtest): connecting before failing makes it
// see the failure at once.
describe("a failed start connects what QEMU 7.2 connects before the same failure", () => {
  it.each([
    [["-bogus"], [], "xenide-system-x86_64: -bogus: invalid option\n"],
    [["-drive", "file=/nonexistent/disk.img,if=ide,format=raw"], ["qmp"], "/nonexistent/disk.img"],
    // QEMU opens a drive no device uses too, and a drive before it makes the devices (a refused one included).
    [
      ["-drive", "file=/nonexistent/disk.img,if=none,id=d0,format=raw"],
      ["qmp"],
      "-drive file=/nonexistent/disk.img,if=none,id=d0,format=raw: Could not open '/nonexistent/disk.img': No such file or directory\n",
    ],
    [
      ["-drive", "file=/nonexistent/disk.img,if=ide,format=raw", "-device", "ide-hd,bus=ide.7"],
      ["qmp"],
      "-drive file=/nonexistent/disk.img,if=ide,format=raw: Could not open '/nonexistent/disk.img': No such file or directory\n",
    ],
    [["-device", "ide-hd,bus=ide.7"], ["qmp", "qtest"], "-device ide-hd,bus=ide.7: Bus 'ide.7' not found\n"],
    [
      ["-device", "ide-hd,drive=nope"],
      ["qmp", "qtest"],
      "-device ide-hd,drive=nope: Property 'ide-hd.drive' can't find value 'nope'\n",
    ],
  ])("%j", async (args, connected, message) => {
    const r = await start(args as string[]);
    expect(r.status).toBe(1);
    // One line, beside the warning for a drive no device uses (QEMU says nothing of it).
    expect(r.stderr.split("\n").filter((l) => l !== "" && !/: warning: /.test(l))).toHaveLength(1);
    expect(r.stderr).toContain(message);
    expect(r.connected).toEqual(connected);
    expect(r.qmpReceived).toBe("");
  });
});

// The line itself, beside QEMU's own for the same command line (Debian's QEMU 7.2; the program name aside).
describe("an image that cannot be opened is reported in QEMU 7.2's words", () => {
  const qemu = spawnSync("qemu-system-x86_64", ["--version"]);
  const missing = qemu.error !== undefined || qemu.status !== 0;
  const raw = join(dir, "plain.img");
  writeFileSync(raw, Buffer.alloc(65536));
  const cases: string[][] = [
    ["-drive", "file=/nonexistent/disk.img,if=ide,format=raw"],
    ["-drive", "file=/nonexistent/disk.img,if=none,id=d0"],
    ["-drive", `file=${dir},if=ide,format=raw`],
    ["-drive", `file=${raw},if=ide,format=qcow2`],
    ["-blockdev", "driver=file,filename=/nonexistent/disk.img,node-name=n0"],
    [
      "-blockdev",
      "driver=file,filename=/nonexistent/disk.img,node-name=n0",
      "-device",
      "ide-hd,drive=n0,bus=ide.0",
    ],
  ];
  it.skipIf(missing && process.env.CI !== "true").each(cases.map((c) => [c.join(" "), c] as const))(
    `%s${missing ? " (skipped: no QEMU)" : ""}`,
    (_title, args) => {
      if (missing) throw new Error("qemu-system-x86_64 is missing (required under CI)");
      const common = [
        "-machine",
        "pc",
        "-display",
        "none",
        "-nodefaults",
        "-qtest",
        "stdio",
        "-qtest-log",
        "none",
      ];
      const run = (cmd: string, extra: string[]) => {
        const r = spawnSync(cmd, [...common, ...extra, ...args], {
          input: "",
          encoding: "utf8",
          timeout: 20_000,
        });
        const lines = r.stderr.split("\n").filter((l) => l !== "" && !/warning: /.test(l));
        return { status: r.status, lines: lines.map((l) => l.replace(/^[^:]+: /, "")) };
      };
      const q = run("qemu-system-x86_64", ["-accel", "tcg", "-S"]);
      const x = run(bin, ["-accel", "qtest"]);
      expect(q.status).toBe(1);
      expect(x).toEqual(q);
    },
  );
});
