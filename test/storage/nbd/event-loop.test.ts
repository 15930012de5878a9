// The async engine's requests on the event loop's connection: a second connection to the export, whose socket is
// on the main thread, used when the export allows several (NBD_FLAG_CAN_MULTI_CONN) and kept coherent with the
// worker's connection (which the synchronous calls use) by a flush whenever the other one wrote. Against nbdkit
// 1.32 on Unix sockets: its log filter shows which connection carried what; its multi-conn and limit filters
// take the permission or the second connection away; delay, SIGKILL and SIGSTOP make the failures. Skipped with
// a one-line reason when nbdkit or qemu-utils is missing, except under CI.
import fs from "node:fs";
import path from "node:path";

import { expect, it } from "vitest";

import { AsyncEngine } from "../../../src/storage/engine.ts";
import type { NbdBackend } from "../../../src/storage/nbd/index.ts";
import { type IoCompletion, IoError, type IoRequest } from "../../../src/storage/types.ts";
import { pattern, sameBytes, sleep } from "../helpers.ts";
import { describeWithServers, serverScope, stopServer } from "./servers.ts";

const describeNbd = describeWithServers("the NBD event loop connection tests");

const S = 512;

/** Submit every request at once, wait for all, and return the completions by tag. */
async function all(e: AsyncEngine, reqs: IoRequest[]): Promise<Map<number, IoCompletion>> {
  for (const r of reqs) e.submit(r);
  await e.drain();
  const out: IoCompletion[] = [];
  e.reap(out);
  return new Map(out.map((c) => [c.tag, c]));
}

/**
 * Reads of sector 0 until one has gone through a settled path (the event loop's connection negotiated, or given
 * up), so that what a switch of paths sends first is behind; returns that path.
 */
async function settle(m: NbdBackend, e: AsyncEngine): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const path = m.asyncPath; // before the first request this is "worker": nothing was started yet
    const r = await all(e, [{ op: "read", tag: 0, sector: 0, bufs: [new Uint8Array(S)] }]);
    expect(r.get(0)?.error).toBeUndefined();
    if (i > 0 && path !== "connecting") return path;
    await sleep(5);
  }
  return m.asyncPath;
}

/** The log filter's lines naming commands (Read, Write, Flush, Zero, Trim) with their connection number. */
function commands(log: string): { conn: number; line: string }[] {
  if (!fs.existsSync(log)) return [];
  return fs
    .readFileSync(log, "utf8")
    .split("\n")
    .flatMap((line) => {
      const m = /connection=(\d+) (Read|Write|Flush|Zero|Trim) id=/.exec(line);
      return m ? [{ conn: Number(m[1]), line }] : [];
    });
}

describeNbd("the NBD medium's event loop connection", () => {
  const scope = serverScope();
  const { dir, open } = scope;
  let fileNo = 0;
  function diskFile(bytes: number): string {
    const f = path.join(dir, `disk${fileNo++}.img`);
    fs.writeFileSync(f, new Uint8Array(bytes));
    return f;
  }

  it("carries the async engine's reads and writes once negotiated; the bytes are in the served file", async () => {
    const file = diskFile(1024 * 1024);
    const log = path.join(dir, "carry.log");
    const s = await scope.nbdkit(["--filter=log", "file", file, `logfile=${log}`]);
    const m = open(s.url);
    expect(m.asyncPath).toBe("worker"); // nothing asynchronous yet: no second connection
    const e = new AsyncEngine(m, { maxInflight: 32 });
    expect(await settle(m, e)).toBe("event-loop");
    const before = commands(log).length;
    // Writes of several sizes and buffer splits in one burst, then reads of the same ranges in another.
    const writes = Array.from({ length: 24 }, (_, tag) => {
      const data = pattern((1 + (tag % 5)) * S * 3, 100 + tag);
      const bufs = tag % 2 ? [data.subarray(0, S), data.subarray(S)] : [data];
      return { tag, sector: tag * 40, data, bufs };
    });
    const wrote = await all(
      e,
      writes.map((w) => ({ op: "write", tag: w.tag, sector: w.sector, bufs: w.bufs })),
    );
    for (const w of writes) expect(wrote.get(w.tag)?.error).toBeUndefined();
    const backs = writes.map((w) => new Uint8Array(w.data.length));
    const read = await all(
      e,
      writes.map((w, i) => ({ op: "read", tag: w.tag, sector: w.sector, bufs: [backs[i]!] })),
    );
    const bytes = new Uint8Array(fs.readFileSync(file));
    writes.forEach((w, i) => {
      expect(read.get(w.tag)?.error).toBeUndefined();
      expect(sameBytes(backs[i]!, w.data)).toBe("same");
      expect(sameBytes(bytes.subarray(w.sector * S, w.sector * S + w.data.length), w.data)).toBe("same");
    });
    // Every command after the path settled went through the second connection.
    const after = commands(log).slice(before);
    expect(after.length).toBe(48);
    expect(after.every((c) => c.conn === 2)).toBe(true);
  });

  it("keeps one connection for an export without NBD_FLAG_CAN_MULTI_CONN, and when told to", async () => {
    const log = path.join(dir, "single.log");
    const s = await scope.nbdkit([
      "--filter=multi-conn",
      "--filter=log",
      "memory",
      "1M",
      "multi-conn-mode=disable",
      `logfile=${log}`,
    ]);
    const m = open(s.url);
    expect(m.exportInfo.flags & (1 << 8)).toBe(0);
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("worker");
    await sleep(100);
    expect(commands(log).every((c) => c.conn === 1)).toBe(true);
    expect(commands(log).length).toBeGreaterThan(0);

    const s2 = await scope.nbdkit(["memory", "1M"]);
    const m2 = open(s2.url, { eventLoopConnection: false });
    expect(await settle(m2, new AsyncEngine(m2))).toBe("worker");
  });

  it("a server that takes one connection only: requests stay on the worker's connection and succeed", async () => {
    const s = await scope.nbdkit(["--filter=limit", "memory", "1M", "limit=1"]);
    const m = open(s.url, { timeoutMs: 5000 });
    const data = pattern(8 * S, 3);
    m.write(16, [data]);
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("worker"); // the second connection was refused
    const back = new Uint8Array(8 * S);
    const r = await all(e, [{ op: "read", tag: 1, sector: 16, bufs: [back] }]);
    expect(r.get(1)?.error).toBeUndefined();
    expect(back).toEqual(data);
  });

  it("flushes before the other connection is used after unflushed writes, both ways", async () => {
    const log = path.join(dir, "coherent.log");
    const s = await scope.nbdkit(["--filter=log", "memory", "1M", `logfile=${log}`]);
    const m = open(s.url);
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("event-loop");

    // Asynchronous write (connection 2), then a synchronous read (connection 1): a flush comes between them.
    const a = pattern(4 * S, 11);
    expect((await all(e, [{ op: "write", tag: 1, sector: 64, bufs: [a] }])).get(1)?.error).toBeUndefined();
    const back = new Uint8Array(4 * S);
    m.read(64, [back]);
    expect(back).toEqual(a);
    // Synchronous write (connection 1), then an asynchronous read (connection 2): a flush again.
    const b = pattern(4 * S, 12);
    m.write(128, [b]);
    const back2 = new Uint8Array(4 * S);
    expect(
      (await all(e, [{ op: "read", tag: 2, sector: 128, bufs: [back2] }])).get(2)?.error,
    ).toBeUndefined();
    expect(back2).toEqual(b);
    // A second read through the same connection needs no flush.
    m.read(64, [back]);
    m.read(64, [back]);

    await sleep(100);
    const cmds = commands(log).map((c) => `${c.conn} ${/(Read|Write|Flush)/.exec(c.line)![1]}`);
    const tail = cmds.slice(cmds.lastIndexOf("2 Write"));
    expect(tail).toEqual([
      "2 Write",
      "1 Flush",
      "1 Read",
      "1 Write",
      "1 Flush",
      "2 Read",
      "1 Read",
      "1 Read",
    ]);
  });

  it("async writes in flight on the worker's connection finish and are flushed before requests move", async () => {
    const log = path.join(dir, "move.log");
    const s = await scope.nbdkit([
      "--filter=log",
      "--filter=delay",
      "memory",
      "1M",
      `logfile=${log}`,
      "delay-write=300ms",
    ]);
    const m = open(s.url);
    const e = new AsyncEngine(m);
    // Four slow writes, started before the event loop's connection exists: they go through the worker's.
    const writes = all(
      e,
      Array.from({ length: 4 }, (_, tag) => ({
        op: "write",
        tag,
        sector: tag * 8,
        bufs: [new Uint8Array(4096).fill(tag + 1)],
      })),
    );
    for (let i = 0; i < 100 && m.asyncPath === "connecting"; i++) await sleep(5);
    expect(m.asyncPath).toBe("event-loop");
    // A read of one of them while they are in flight: it waits for them and a flush, then takes the new path.
    const back = new Uint8Array(4096);
    const read = await all(e, [{ op: "read", tag: 9, sector: 16, bufs: [back] }]);
    expect(read.get(9)?.error).toBeUndefined();
    expect(back.every((b) => b === 3)).toBe(true);
    expect([...(await writes).values()].every((c) => c.error === undefined)).toBe(true);
    await sleep(100);
    const lines = fs.readFileSync(log, "utf8").split("\n");
    const at = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const flush = at(/connection=1 Flush id=/);
    const readAt = at(/connection=2 Read id=\d+ offset=0x2000 /);
    expect(flush).toBeGreaterThan(0);
    for (let id = 1; id <= 4; id++)
      expect(at(new RegExp(`connection=1 \\.\\.\\.Write id=${id} return=0`))).toBeLessThan(flush);
    expect(readAt).toBeGreaterThan(flush);
  });

  it("writes with FUA on the event loop's connection when writing through, and sends no flush then", async () => {
    const log = path.join(dir, "fua.log");
    const s = await scope.nbdkit(["--filter=log", "memory", "1M", `logfile=${log}`]);
    const m = open(s.url, { fua: true });
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("event-loop");
    const r = await all(e, [
      { op: "write", tag: 1, sector: 8, bufs: [pattern(2 * S, 1)] },
      { op: "flush", tag: 2, sector: 0 },
    ]);
    expect([...r.values()].every((c) => c.error === undefined)).toBe(true);
    await sleep(100);
    const c2 = commands(log).filter((c) => c.conn === 2 && !/ Read /.test(c.line));
    expect(c2).toHaveLength(1);
    expect(c2[0]!.line).toMatch(/Write id=\d+ offset=0x1000 count=0x400 fua=1/);
  });

  for (const discard of ["zeroes", "trim"] as const) {
    it(`discards as ${discard === "trim" ? "NBD_CMD_TRIM" : "NBD_CMD_WRITE_ZEROES"} and flushes on the event loop's connection`, async () => {
      const log = path.join(dir, `discard-${discard}.log`);
      const s = await scope.nbdkit(["--filter=log", "memory", "1M", `logfile=${log}`]);
      const m = open(s.url, { discard });
      const e = new AsyncEngine(m);
      expect(await settle(m, e)).toBe("event-loop");
      const w = await all(e, [{ op: "write", tag: 1, sector: 8, bufs: [pattern(8 * S, 4)] }]);
      expect(w.get(1)?.error).toBeUndefined();
      const d = await all(e, [{ op: "discard", tag: 2, sector: 8, count: 8 }]);
      expect(d.get(2)?.error).toBeUndefined();
      const f = await all(e, [{ op: "flush", tag: 3, sector: 0 }]);
      expect(f.get(3)?.error).toBeUndefined();
      await sleep(100);
      const c2 = commands(log)
        .filter((c) => c.conn === 2 && !/ Read /.test(c.line))
        .map((c) => c.line.replace(/^.*connection=2 /, ""));
      expect(c2).toHaveLength(3);
      expect(c2[0]).toMatch(/^Write id=\d+ offset=0x1000 count=0x1000 fua=0/);
      if (discard === "trim") expect(c2[1]).toMatch(/^Trim id=\d+ offset=0x1000 count=0x1000/);
      else expect(c2[1]).toMatch(/^Zero id=\d+ offset=0x1000 count=0x1000 trim=1/);
      expect(c2[2]).toMatch(/^Flush id=\d+/);
      if (discard === "zeroes") {
        const back = new Uint8Array(8 * S).fill(1);
        expect(
          (await all(e, [{ op: "read", tag: 4, sector: 8, bufs: [back] }])).get(4)?.error,
        ).toBeUndefined();
        expect(back.every((b) => b === 0)).toBe(true);
      }
    });
  }

  it("obeys block size constraints on the event loop's connection (read-modify-write of partial blocks)", async () => {
    const file = diskFile(256 * 1024);
    const s = await scope.nbdkit([
      "--filter=blocksize-policy",
      "file",
      file,
      "blocksize-minimum=4096",
      "blocksize-preferred=4096",
      "blocksize-maximum=16384",
      "blocksize-error-policy=error",
    ]);
    const m = open(s.url);
    expect(m.exportInfo.minBlock).toBe(4096);
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("event-loop");
    // Unaligned at both ends and longer than the maximum payload.
    const data = pattern(70 * S, 21);
    const w = await all(e, [{ op: "write", tag: 1, sector: 3, bufs: [data] }]);
    expect(w.get(1)?.error).toBeUndefined();
    const back = new Uint8Array(70 * S);
    const r = await all(e, [{ op: "read", tag: 2, sector: 3, bufs: [back] }]);
    expect(r.get(2)?.error).toBeUndefined();
    expect(back).toEqual(data);
    const bytes = new Uint8Array(fs.readFileSync(file));
    expect(sameBytes(bytes.subarray(3 * S, 73 * S), data)).toBe("same");
    expect(bytes.subarray(0, 3 * S).every((b) => b === 0)).toBe(true);
  });

  it("simple replies (nbdkit --no-sr) on the event loop's connection", async () => {
    const file = diskFile(256 * 1024);
    fs.writeFileSync(file, pattern(256 * 1024, 8));
    const s = await scope.nbdkit(["file", file], ["--no-sr"]);
    const m = open(s.url);
    expect(m.exportInfo.structuredReplies).toBe(false);
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("event-loop");
    const back = new Uint8Array(64 * S);
    const r = await all(e, [
      { op: "read", tag: 1, sector: 100, bufs: [back.subarray(0, S), back.subarray(S)] },
    ]);
    expect(r.get(1)?.error).toBeUndefined();
    expect(back).toEqual(pattern(256 * 1024, 8).subarray(100 * S, 164 * S));
  });

  it("a server killed with requests in flight on it: every one fails with EIO at once, later requests too", async () => {
    const s = await scope.nbdkit(["--filter=delay", "memory", "1M", "delay-read=3"], ["-t", "16"]);
    const m = open(s.url, { timeoutMs: 20_000 });
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("event-loop"); // each of these reads takes 3 s
    const t0 = Date.now();
    const pending = all(
      e,
      Array.from({ length: 8 }, (_, tag) => ({
        op: "read",
        tag,
        sector: tag * 8,
        bufs: [new Uint8Array(4096)],
      })),
    );
    await sleep(200);
    await s.kill();
    const done = await pending;
    expect(Date.now() - t0).toBeLessThan(2500); // not the delay, not the timeout
    for (let tag = 0; tag < 8; tag++) {
      const err = done.get(tag)?.error;
      expect(err).toBeInstanceOf(IoError);
      expect(err!.code).toBe("EIO");
      expect(err!.message).not.toContain("\n");
    }
    const later = await all(e, [{ op: "read", tag: 9, sector: 0, bufs: [new Uint8Array(S)] }]);
    expect(later.get(9)?.error?.code).toBe("EIO");
    expect(() => m.read(0, [new Uint8Array(S)])).toThrow(IoError);
  }, 20_000);

  it("a server that stops answering: the requests on it fail with EIO after timeoutMs instead of hanging", async () => {
    const s = await scope.nbdkit(["memory", "1M"]);
    const m = open(s.url, { timeoutMs: 1000 });
    const e = new AsyncEngine(m);
    expect(await settle(m, e)).toBe("event-loop");
    scope.onCleanup(() => s.proc.kill("SIGCONT"));
    await stopServer(s);
    const t0 = Date.now();
    const done = await all(e, [{ op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(S)] }]);
    const waited = Date.now() - t0;
    expect(done.get(1)?.error?.code).toBe("EIO");
    expect(done.get(1)?.error?.message).toMatch(/no answer from the server for 1000 ms/);
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(waited).toBeLessThan(5000);
  }, 20_000);
});
