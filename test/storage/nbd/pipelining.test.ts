// How the NBD medium keeps many requests moving on one connection: a burst of requests started together goes to
// the server in one socket write, replies stream through rings much smaller than the data in flight in both
// directions, and a server that dies with a full batch outstanding fails every request with EIO at once.
// Against nbdkit (memory plugin) on a Unix socket; the burst test puts a forwarding proxy, in a worker thread
// of its own, between the medium and nbdkit to see the bytes as the server receives them.
import path from "node:path";
import { Worker } from "node:worker_threads";

import { expect, it } from "vitest";

import { AsyncEngine } from "../../../src/storage/engine.ts";
import { REQUEST_SIZE } from "../../../src/storage/nbd/protocol.ts";
import { type IoCompletion, IoError, type IoRequest } from "../../../src/storage/types.ts";
import { pattern, sameBytes } from "../helpers.ts";
import { describeWithServers, serverScope } from "./servers.ts";

const describeNbd = describeWithServers("the NBD pipelining tests");

const S = 512;
const MiB = 1024 * 1024;

/**
 * A Unix-socket proxy in a worker thread (its event loop runs while this thread waits inside a synchronous
 * medium call), reporting the size of every chunk it reads from the client.
 */
function proxy(listen: string, target: string): Promise<{ chunks: number[]; stop: () => Promise<number> }> {
  const code = `
    const net = require("node:net");
    const { parentPort, workerData } = require("node:worker_threads");
    const server = net.createServer((c) => {
      const up = net.connect(workerData.target);
      c.on("data", (d) => { parentPort.postMessage(d.length); up.write(d); });
      up.on("data", (d) => c.write(d));
      c.on("close", () => up.destroy());
      up.on("close", () => c.destroy());
      c.on("error", () => up.destroy());
      up.on("error", () => c.destroy());
    });
    server.listen(workerData.listen, () => parentPort.postMessage("ready"));
  `;
  const w = new Worker(code, { eval: true, workerData: { listen, target } });
  const chunks: number[] = [];
  return new Promise((resolve, reject) => {
    w.on("error", reject);
    w.on("message", (m: number | string) => {
      if (m === "ready") resolve({ chunks, stop: () => w.terminate() });
      else chunks.push(m as number);
    });
  });
}

/** Submit every request at once on the engine, wait for all, and return the completions by tag. */
async function all(e: AsyncEngine, reqs: IoRequest[]): Promise<Map<number, IoCompletion>> {
  for (const r of reqs) e.submit(r);
  await e.drain();
  const out: IoCompletion[] = [];
  e.reap(out);
  return new Map(out.map((c) => [c.tag, c]));
}

describeNbd("the NBD medium with many requests in flight", () => {
  const scope = serverScope();
  const { dir, open } = scope;
  const serve = scope.nbdkit;

  for (const eventLoop of [true, false]) {
    it(`sends a burst of 32 reads started together in one socket write, and each gets its own data (${eventLoop ? "the event loop's connection" : "the worker's connection"})`, async () => {
      const s = await serve(["memory", "4M"]);
      const sock = path.join(dir, `proxy-${eventLoop}.sock`);
      const p = await proxy(sock, s.socket);
      scope.onCleanup(p.stop);
      const m = open(`nbd+unix:///?socket=${sock}`, { eventLoopConnection: eventLoop });
      const data = pattern(4 * MiB, 31);
      m.write(0, [data]);
      const e = new AsyncEngine(m, { maxInflight: 64 });
      // Requests first until the path the burst takes is settled (the event loop's connection negotiated and the
      // write above flushed before it is used), and so that a reply has just been delivered when the burst comes.
      for (let i = 0; i < 50; i++) {
        const path = m.asyncPath; // "worker" before the first request: nothing was started yet
        const first = await all(e, [{ op: "read", tag: 99, sector: 0, bufs: [new Uint8Array(S)] }]);
        expect(first.get(99)?.error).toBeUndefined();
        if (i > 0 && path !== "connecting") break; // this read went through the settled path
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(m.asyncPath).toBe(eventLoop ? "event-loop" : "worker");
      await new Promise((r) => setTimeout(r, 50)); // the proxy's reports of the chunks so far
      const before = p.chunks.length;

      // 4 KiB reads at scattered offsets, in a shuffled order (the replies may come in any order).
      const blocks = Array.from({ length: 32 }, (_, i) => (i * 37) % 1024);
      const bufs = blocks.map(() => new Uint8Array(4096));
      const done = await all(
        e,
        blocks.map((b, tag) => ({ op: "read", tag, sector: b * 8, bufs: [bufs[tag]!] })),
      );
      for (let tag = 0; tag < 32; tag++) {
        expect(done.get(tag)?.error).toBeUndefined();
        const b = blocks[tag]!;
        expect(sameBytes(bufs[tag]!, data.subarray(b * 4096, (b + 1) * 4096))).toBe("same");
      }
      await new Promise((r) => setTimeout(r, 50));
      // The 32 request headers (28 bytes each, proto.md "Request message") reached the server in one read.
      expect(p.chunks.slice(before)).toEqual([32 * REQUEST_SIZE]);
    });
  }

  it("keeps 64 requests of every size in flight through 64 KiB rings, both ways, data intact", async () => {
    const s = await serve(["memory", "64M"], ["-t", "16"]);
    const m = open(s.url, { ringBytes: 64 * 1024 });
    const e = new AsyncEngine(m, { maxInflight: 64 });
    // Sizes from one sector to 1 MiB (sixteen rings' worth), each at its own place on the disk.
    const sizes = Array.from({ length: 64 }, (_, i) => S << (i % 12));
    const at: number[] = [];
    let next = 0;
    for (const n of sizes) {
      at.push(next);
      next += n / S + 8; // a gap between requests: a misplaced byte shows
    }
    const data = sizes.map((n, i) => pattern(n, 100 + i));
    const written = await all(
      e,
      sizes.map((_, tag) => ({ op: "write", tag, sector: at[tag]!, bufs: [data[tag]!] })),
    );
    expect([...written.values()].filter((c) => c.error)).toEqual([]);
    expect(written.size).toBe(64);

    const back = sizes.map((n) => new Uint8Array(n + 2 * S));
    const read = await all(
      e,
      sizes.map((n, tag) => ({
        op: "read",
        tag,
        sector: at[tag]! - (at[tag]! > 0 ? 1 : 0),
        bufs: [back[tag]!.subarray(0, n + (at[tag]! > 0 ? 2 : 1) * S)],
      })),
    );
    expect([...read.values()].filter((c) => c.error)).toEqual([]);
    for (let i = 0; i < 64; i++) {
      const lead = at[i]! > 0 ? S : 0;
      const got = back[i]!;
      expect(sameBytes(got.subarray(lead, lead + sizes[i]!), data[i]!)).toBe("same");
      // The sectors around each request were never written: zeroes.
      expect(got.subarray(lead + sizes[i]!, lead + sizes[i]! + S).every((x) => x === 0)).toBe(true);
      if (lead) expect(got.subarray(0, S).every((x) => x === 0)).toBe(true);
    }
  });

  it("a server killed with 64 reads in flight: every one fails with EIO at once, later requests too", async () => {
    const s = await serve(["--filter=delay", "memory", "4M", "delay-read=2000ms"], ["-t", "64"]);
    const m = open(s.url);
    const e = new AsyncEngine(m, { maxInflight: 64 });
    for (let tag = 0; tag < 64; tag++)
      e.submit({ op: "read", tag, sector: tag * 8, bufs: [new Uint8Array(4096)] });
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await s.kill("SIGKILL");
    await e.drain();
    const out: IoCompletion[] = [];
    e.reap(out);
    expect(out.length).toBe(64);
    expect(out.map((c) => c.error?.code)).toEqual(new Array(64).fill("EIO"));
    // Well before the delay the server would have answered after, and far before the 30 s timeout.
    expect(Date.now() - t0).toBeLessThan(1500);
    // The reason is the socket's (the server's end of stream, or a reset when it died with requests unread).
    let later: unknown;
    try {
      m.read(0, [new Uint8Array(S)]);
    } catch (err) {
      later = err;
    }
    expect(later).toBeInstanceOf(IoError);
    expect((later as IoError).code).toBe("EIO");
  });
});
