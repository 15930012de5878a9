// The client's reply parser against a scripted server (fixtures/fake-server.mjs, run by node on a Unix socket):
// structured replies split and reordered as proto.md allows (data chunks in any order, holes), an error chunk
// with an offset, and broken replies (bad magic, an unknown handle, data outside the request, a read reply
// that covers too little, a connection closed in the middle of a chunk, a handshake without the export's
// size). Each ends as an IoError or NbdError with one line saying what happened; nothing hangs or crashes.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, afterEach, describe, expect, it } from "vitest";

import { AsyncEngine } from "../../../src/storage/engine.ts";
import { NbdBackend, NbdError } from "../../../src/storage/nbd/index.ts";
import { IoError } from "../../../src/storage/types.ts";
import { run, tempDir } from "../helpers.ts";

const FAKE = fileURLToPath(new URL("./fixtures/fake-server.mjs", import.meta.url));
const S = 512;

/** What the scripted server returns for a correct read: byte (offset & 255) at each offset. */
function expected(offset: number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (offset + i) & 255);
}

describe("the NBD reply parser against a scripted server", () => {
  const dir = tempDir();
  const procs: ChildProcess[] = [];
  const media: NbdBackend[] = [];
  afterEach(() => {
    for (const m of media.splice(0)) m.close();
    for (const p of procs.splice(0)) p.kill("SIGKILL");
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  async function fake(mode: string): Promise<string> {
    const socket = path.join(dir, `fake${n++}.sock`);
    const p = spawn(process.execPath, [FAKE, socket, mode], { stdio: ["ignore", "pipe", "inherit"] });
    procs.push(p);
    await new Promise<void>((resolve, reject) => {
      p.stdout!.once("data", () => resolve());
      p.once("exit", (code) => reject(new Error(`fake server exited with ${code}`)));
    });
    return `nbd+unix:///?socket=${socket}`;
  }
  async function open(mode: string): Promise<NbdBackend> {
    const m = NbdBackend.open(await fake(mode), { timeoutMs: 5000 });
    media.push(m);
    return m;
  }
  function failure(f: () => void): IoError {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(IoError);
      expect((e as IoError).message).not.toContain("\n");
      return e as IoError;
    }
    throw new Error("no error");
  }

  it("reassembles a read from data chunks in any order and holes", async () => {
    const plain = await open("plain");
    const a = new Uint8Array(8 * S);
    plain.read(10, [a]);
    expect(a).toEqual(expected(10 * S, 8 * S));
    const m = await open("scattered");
    const back = new Uint8Array(8 * S);
    m.read(3, [back.subarray(0, 3 * S), back.subarray(3 * S)]);
    const want = expected(3 * S, 8 * S);
    want.fill(0, 0, 4 * S); // the first half came as a hole
    expect(back).toEqual(want);
    const viaEngine = new Uint8Array(8 * S);
    expect(await run(new AsyncEngine(m), { op: "read", tag: 1, sector: 3, bufs: [viaEngine] })).toEqual({
      tag: 1,
    });
    expect(viaEngine).toEqual(want);
  });

  it("an error chunk with an offset fails the read at that sector, with the server's message", async () => {
    const m = await open("error-offset");
    const e = failure(() => m.read(8, [new Uint8Array(4 * S)]));
    expect(e.code).toBe("EIO");
    expect(e.sector).toBe(10); // offset + 1024 bytes
    expect(e.message).toMatch(/EIO: bad sector/);
  });

  it("a read reply that covers less than the request fails that read with EIO", async () => {
    const m = await open("short");
    const e = failure(() => m.read(0, [new Uint8Array(8 * S)]));
    expect(e.code).toBe("EIO");
    expect(e.message).toMatch(/covered 2048 of 4096 bytes/);
  });

  for (const [mode, message] of [
    ["bad-magic", /protocol error: the server sent bad reply magic 0xdeadbeef/],
    ["unknown-handle", /protocol error: the server sent a reply for unknown handle 30583/],
    ["outside", /protocol error: the server sent read data outside the request/],
    ["close-mid-reply", /closed/],
  ] as const) {
    it(`${mode}: the connection ends, this and every later request fail with EIO`, async () => {
      const m = await open(mode);
      const t0 = Date.now();
      const e = failure(() => m.read(0, [new Uint8Array(8 * S)]));
      expect(e.code).toBe("EIO");
      expect(e.message).toMatch(message);
      expect(Date.now() - t0).toBeLessThan(4000);
      const later = await run(new AsyncEngine(m), {
        op: "write",
        tag: 1,
        sector: 0,
        bufs: [new Uint8Array(S)],
      });
      expect(later.error?.code).toBe("EIO");
    });
  }

  /** A medium on a "multi:MODE" server whose asynchronous requests have moved to the event loop's connection. */
  async function onEventLoop(mode: string): Promise<{ m: NbdBackend; e: AsyncEngine }> {
    const m = await open(`multi:${mode}`);
    const e = new AsyncEngine(m);
    // The first request starts the second connection (and is answered on the first, correctly).
    expect(await run(e, { op: "read", tag: 0, sector: 0, bufs: [new Uint8Array(S)] })).toEqual({ tag: 0 });
    for (let i = 0; i < 200 && m.asyncPath === "connecting"; i++) await new Promise((r) => setTimeout(r, 5));
    expect(m.asyncPath).toBe("event-loop");
    return { m, e };
  }

  for (const mode of ["dribble", "scattered"]) {
    it(`${mode}, on the event loop's connection: the reply is reassembled into the caller's buffers`, async () => {
      const { e } = await onEventLoop(mode);
      const back = new Uint8Array(8 * S);
      const r = await run(e, {
        op: "read",
        tag: 1,
        sector: 5,
        bufs: [back.subarray(0, 3 * S), back.subarray(3 * S)],
      });
      expect(r).toEqual({ tag: 1 });
      const want = expected(5 * S, 8 * S);
      if (mode === "scattered") want.fill(0, 0, 4 * S); // the first half comes as a hole
      expect(back).toEqual(want);
    });
  }

  for (const [mode, message] of [
    ["bad-magic", /protocol error: the server sent bad reply magic 0xdeadbeef/],
    ["close-mid-reply", /closed/],
  ] as const) {
    it(`${mode}, on the event loop's connection: its request fails with EIO, later ones take the worker's`, async () => {
      const { m, e } = await onEventLoop(mode);
      const t0 = Date.now();
      const r = await run(e, { op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(8 * S)] });
      expect(r.error?.code).toBe("EIO");
      expect(r.error?.message).toMatch(message);
      expect(r.error?.message).not.toContain("\n");
      expect(Date.now() - t0).toBeLessThan(4000);
      expect(m.asyncPath).toBe("worker");
      const back = new Uint8Array(S);
      expect(await run(e, { op: "read", tag: 2, sector: 1, bufs: [back] })).toEqual({ tag: 2 });
      expect(back).toEqual(expected(S, S));
    });
  }

  it("a handshake that ends without the export's size is refused at open", async () => {
    const url = await fake("no-info-export");
    let err: unknown;
    try {
      NbdBackend.open(url, { timeoutMs: 5000 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).reason).toBe("protocol");
    expect((err as NbdError).message).toMatch(/without NBD_INFO_EXPORT/);
  });
});
