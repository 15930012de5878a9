/**
 * `xenide xenstored --socket PATH` and `--xenstore-socket PATH` on the PV commands, driven as a user would: the
 * daemon serves xenstore-utils (dom0 and a guest socket), stops on SIGTERM removing its sockets; pv-keys holds
 * a connected session that xenstore-watch and xenstore-ls look at; mistakes are one line with status 2 or 1,
 * and a file in the socket's place is left alone.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cli } from "../cli/in-process.ts";
import { runXenide } from "../cli/spawn.ts";
import { createImage } from "../../src/storage/index.ts";
import { requireTools, runTool, tempDir, toolsMissing } from "./support.ts";

const reason = toolsMissing(false);
requireTools("the xenstored CLI tests", reason);

async function until(pred: () => boolean, what: string, ms = 20_000): Promise<void> {
  for (let t = 0; t < ms && !pred(); t += 20) await new Promise((r) => setTimeout(r, 20));
  if (!pred()) throw new Error(`timed out waiting for ${what}`);
}

describe("xenstored on the command line: mistakes", () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());
  const disk = join(tmp.dir, "disk.img");
  createImage(disk, 1 << 20);

  it("refuses bad options in one line with status 2, and a file in the socket's place with status 1", async () => {
    const bad = await cli("xenstored", "--socket", join(tmp.dir, "s"), "--guest-socket", "zero=x");
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toContain("--guest-socket expects DOMID=PATH");
    const file = join(tmp.dir, "precious.txt");
    writeFileSync(file, "keep me");
    const taken = await cli("xenstored", "--socket", file);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain("exists and is not a socket");
    expect(readFileSync(file, "utf8")).toBe("keep me");
    const noSock = await cli("pv-keys", disk, "--xenstore-hold");
    expect(noSock.code).toBe(2);
    expect(noSock.stderr).toContain("--xenstore-hold needs --xenstore-socket");
    const ide = await cli(
      "read",
      disk,
      "--lba",
      "0",
      "--count",
      "1",
      "--xenstore-socket",
      join(tmp.dir, "x"),
    );
    expect(ide.code).toBe(2);
    expect(ide.stderr).toContain("--xenstore-socket applies to --via pv");
  });
});

(reason ? describe.skip : describe)("xenstored on the command line with xenstore-utils", () => {
  const tmp = tempDir();
  // The test's own image: a clean checkout has no images/ (the demo makes images/sample.img).
  const disk = join(tmp.dir, "disk.img");
  createImage(disk, 1 << 20);
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    tmp.cleanup();
  });

  it("serves dom0's tools and a guest's view, and removes its sockets on SIGTERM", async () => {
    const sock = join(tmp.dir, "xenstored.sock");
    const guest = join(tmp.dir, "dom1.sock");
    let child: ChildProcess | undefined;
    const done = runXenide(["xenstored", "--socket", sock, "--guest-socket", `1=${guest}`], {
      onSpawn: (c) => children.push((child = c)),
    });
    await until(() => existsSync(sock) && existsSync(guest), "the sockets");
    expect((await runTool(sock, "xenstore-read", ["/local/domain/0/name"])).stdout).toBe("Domain-0\n");
    expect((await runTool(sock, "xenstore-write", ["/local/domain/0/data", "x"])).code).toBe(0);
    expect((await runTool(sock, "xenstore-ls", ["/local/domain/0"])).stdout).toBe(
      'name = "Domain-0"\ndomid = "0"\ndata = "x"\n',
    );
    // The guest may not read dom0's nodes.
    const denied = await runTool(guest, "xenstore-read", ["/local/domain/0/data"]);
    expect(denied.code).not.toBe(0);
    child!.kill("SIGTERM");
    const r = await done;
    expect(r.code).toBe(0);
    expect(existsSync(sock) || existsSync(guest)).toBe(false);
  });

  it("pv-keys --xenstore-socket: a watch set before the guest starts sees the negotiation; the session is held", async () => {
    const sock = join(tmp.dir, "pv.sock");
    let child: ChildProcess | undefined;
    const done = runXenide(
      ["pv-keys", disk, "--read-only", "--xenstore-socket", sock, "--xenstore-wait", "--xenstore-hold"],
      { onSpawn: (c) => children.push((child = c)) },
    );
    await until(() => existsSync(sock), "the socket");
    const watch = spawn("xenstore-watch", ["/local/domain/1/device"], {
      env: { ...process.env, XENSTORED_PATH: sock },
    });
    children.push(watch);
    let seen = "";
    watch.stdout.on("data", (d: Buffer) => (seen += d.toString()));
    await until(() => seen.includes("/local/domain/1/device/vbd/51712/state"), "blkfront's state change");
    // Held: the connected device's keys are there to read.
    const ls = await runTool(sock, "xenstore-ls", ["/local/domain/1/device/vbd/51712"]);
    expect(ls.stdout).toMatch(/^state = "4"$/m);
    expect(ls.stdout).toMatch(/^backend = "\/local\/domain\/0\/backend\/vbd\/1\/51712"$/m);
    child!.kill("SIGINT");
    const r = await done;
    watch.kill();
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toMatch(/^\/local\/domain\/1\/device\/vbd\/51712\/state = "4"$/m);
    expect(r.stderr).toContain(`xenstored: serving on ${sock}`);
    expect(seen.split("\n")[0]).toBe("/local/domain/1/device"); // the registration event came first
    expect(existsSync(sock)).toBe(false);
  });
});
