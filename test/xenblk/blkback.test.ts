/**
 * blkback negotiation (xenstore keys and states as Linux blkback's xenbus.c; xen-protocol notes §3) and every
 * operation through the real blkfront, over both ABIs, ring sizes, indirect, persistent grants, queues, engines.
 */
import { describe, expect, it } from "vitest";
import { PAGE_SIZE, XenHost } from "../../src/hypervisor/index.ts";
import { FaultInjectingBackend, MemoryBackend, SyncEngine, AsyncEngine } from "../../src/storage/index.ts";
import type { BlockBackend, IoCallback, MediumRequest } from "../../src/storage/types.ts";
import {
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  XenbusState,
} from "../../src/xenblk/abi.ts";
import { Blkback } from "../../src/xenblk/blkback.ts";
import { Blkfront, BlkfrontError, BlkfrontIoError } from "../../src/xenblk/blkfront.ts";
import { createPvMachine } from "../../src/machine/pv.ts";
import { XVDA, readState, toolstackAddDisk, waitForState } from "../../src/xenblk/xenbus.ts";
import { makeEngine, rawFrontend, req, tick } from "./helpers.ts";

function pattern(bytes: number, seed: number): Uint8Array {
  const b = new Uint8Array(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x9e3779b9;
    b[i] = x >>> 24;
  }
  return b;
}

const BE = "/local/domain/0/backend/vbd/1/51712";
const FE = "/local/domain/1/device/vbd/51712";

describe("blkback negotiation", () => {
  it("advertises its limits and waits in InitWait", async () => {
    const host = new XenHost({ ramSize: 16 << 20 });
    toolstackAddDisk(host, { frontDom: 1 });
    const { engine } = makeEngine("sync");
    new Blkback({ host, engine, frontDom: 1 });
    const xs = host.xs(0);
    expect(xs.read(`${BE}/feature-max-indirect-segments`)).toBe("256");
    expect(xs.read(`${BE}/multi-queue-max-queues`)).toBe("4");
    expect(xs.read(`${BE}/max-ring-page-order`)).toBe("4");
    expect(xs.read(`${BE}/state`)).toBe("2");
    // The disk's keys come only at connect.
    expect(xs.tryRead(`${BE}/sectors`)).toBeUndefined();
    // The frontend domain can read the backend directory but not write it.
    expect(host.xs(1).read(`${BE}/state`)).toBe("2");
    expect(() => host.xs(1).write(`${BE}/state`, "4")).toThrow(/EACCES/);
  });

  it("connects: the frontend's keys as Linux blkfront writes them, the backend's disk keys, both Connected", async () => {
    const { engine } = makeEngine("sync", 12345);
    const m = await createPvMachine({ engine });
    const xs = m.host.xs(0);
    const r = (k: string) => xs.tryRead(k);
    // One page: `ring-ref`, no `ring-page-order`.
    expect(r(`${FE}/ring-page-order`)).toBeUndefined();
    expect(Number(r(`${FE}/ring-ref`))).toBeGreaterThanOrEqual(8);
    expect(r(`${FE}/protocol`)).toBe("x86_64-abi");
    expect(r(`${FE}/feature-persistent`)).toBe("1");
    expect(r(`${FE}/state`)).toBe("4");
    expect({
      state: r(`${BE}/state`),
      sectors: r(`${BE}/sectors`),
      info: r(`${BE}/info`),
      sectorSize: r(`${BE}/sector-size`),
      physical: r(`${BE}/physical-sector-size`),
      flush: r(`${BE}/feature-flush-cache`),
      barrier: r(`${BE}/feature-barrier`),
      discard: r(`${BE}/feature-discard`),
      granularity: r(`${BE}/discard-granularity`),
      alignment: r(`${BE}/discard-alignment`),
      secure: r(`${BE}/discard-secure`),
      persistent: r(`${BE}/feature-persistent`),
    }).toEqual({
      state: "4",
      sectors: "12345",
      info: "0",
      sectorSize: "512",
      physical: "512",
      flush: "1",
      barrier: "1",
      discard: "1",
      granularity: "512",
      alignment: "0",
      secure: "0",
      persistent: "1",
    });
    expect(m.front.info.sectors).toBe(12345);
    await m.close();
    expect(readState(xs, BE)).toBe(XenbusState.Closed);
    expect(readState(xs, FE)).toBe(XenbusState.Closed);
    // Everything was unmapped and revoked.
    expect(m.host.grants(0).mapped).toBe(0);
    expect(r(`${FE}/ring-ref`)).toBeUndefined();
  });

  it("ring-page-order present (even 0) means ring-ref0..N-1; absent means ring-ref", async () => {
    // Present "0" with ring-ref0: one page, connects.
    const a = await rawFrontend({ forceOrderKey: true, orderValue: "0" });
    expect(a.back.ringPages).toBe(1);
    expect(readState(a.xs, a.paths.backend)).toBe(XenbusState.Connected);
    // Present "0" but only `ring-ref` published: the backend looks for ring-ref0 and fails.
    const b = await rawFrontend({ forceOrderKey: true, orderValue: "0", refKeyStyle: "plain", noWait: true });
    await waitForState(b.xs, b.paths.backend, (s) => s === XenbusState.Closing);
    expect(b.back.lastError).toMatch(/ring-ref0/);
    expect(b.host.xs(0).read(`/local/domain/0/error/backend/vbd/1/51712/error`)).toMatch(/ring-ref0/);
    // Order above the advertised maximum is fatal.
    const c = await rawFrontend({ pages: 2, orderValue: "5", noWait: true });
    await waitForState(c.xs, c.paths.backend, (s) => s === XenbusState.Closing);
    expect(c.back.lastError).toMatch(/exceed max/);
  });

  it("protocol: absent means x86_32-abi; unknown is fatal", async () => {
    const a = await rawFrontend({ protocol: null });
    expect(a.back.protocol!.abi).toBe("x86_32-abi");
    const page = a.pages(1, 0);
    a.back.engine.backend.write(0, [new Uint8Array(512).fill(0x33)]);
    // 108-byte requests: id at 4, sector at 12, segments at 20.
    a.push([req({ operation: BLKIF_OP_READ, id: 0x1122334455n, segs: [[a.grant(page), 0, 0]] })]);
    await a.settle();
    expect(a.responses()).toEqual([{ id: 0x1122334455n, op: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    expect(a.mem.u8[page]).toBe(0x33);
    const b = await rawFrontend({ protocol: "arm-abi", noWait: true });
    await waitForState(b.xs, b.paths.backend, (s) => s === XenbusState.Closing);
    expect(b.back.lastError).toMatch(/unknown fe protocol/);
  });

  it("refuses 0 queues or more than offered", async () => {
    for (const nq of ["0", "5"]) {
      const f = await rawFrontend({ noWait: true, extra: { "multi-queue-num-queues": nq } });
      await waitForState(f.xs, f.paths.backend, (s) => s === XenbusState.Closing);
      expect(f.back.lastError).toMatch(/Invalid number of requested queues/);
    }
  });

  it("tolerates a frontend that skips Initialised (Mini-OS) and reconnects after Closed", async () => {
    const host = new XenHost({ ramSize: 32 << 20 });
    toolstackAddDisk(host, { frontDom: 1 });
    const { engine } = makeEngine("sync");
    const back = new Blkback({ host, engine, frontDom: 1 });
    const f1 = await Blkfront.connect({ host, skipInitialised: true });
    await f1.write(100, pattern(4096, 1));
    await f1.shutdown();
    expect(readState(host.xs(0), BE)).toBe(XenbusState.Closed);
    // A new frontend life: Initialising → backend InitWait → full negotiation again, new ring and port.
    const f2 = await Blkfront.connect({ host, ringPages: 4 });
    expect(back.ringPages).toBe(4);
    expect(Buffer.from(await f2.read(100, 8)).equals(Buffer.from(pattern(4096, 1)))).toBe(true);
    await f2.shutdown();
    expect(host.grants(0).mapped).toBe(0);
  });

  it("a backend that closes fails the frontend's I/O with a typed error", async () => {
    const inner = new MemoryBackend(4096);
    const slow = new FaultInjectingBackend(inner, [{ op: "read", latencyMs: 30 }]);
    const m = await createPvMachine({ engine: new AsyncEngine(slow) });
    const pending = m.front.read(0, 8).catch((e: unknown) => e);
    await tick();
    m.host.xs(0).write(`${BE}/state`, String(XenbusState.Closing));
    expect(await pending).toBeInstanceOf(BlkfrontError);
    await expect(m.front.read(0, 8)).rejects.toBeInstanceOf(BlkfrontError);
    await waitForState(m.host.xs(0), FE, (s) => s === XenbusState.Closed);
  });

  it("online resize rewrites sectors and state; the frontend sees the new size", async () => {
    let count = 4096;
    const mem = new MemoryBackend(8192);
    const growing: BlockBackend = Object.create(mem, { sectorCount: { get: () => count } });
    const m = await createPvMachine({ engine: new SyncEngine(growing) });
    expect(m.front.info.sectors).toBe(4096);
    const seen: number[] = [];
    m.front.onResize = (s) => seen.push(s);
    count = 8192;
    m.back.resize();
    await tick();
    await tick();
    expect(m.host.xs(0).read(`${BE}/sectors`)).toBe("8192");
    expect(seen).toEqual([8192]);
    expect(m.front.info.sectors).toBe(8192);
    await m.front.write(8000, pattern(512, 3));
  });
});

describe("blkback I/O through blkfront", () => {
  const combos: {
    abi: "x86_64-abi" | "x86_32-abi";
    pages: number;
    persistent: boolean;
    engine: "sync" | "async";
  }[] = [];
  for (const abi of ["x86_64-abi", "x86_32-abi"] as const)
    for (const pages of [1, 2, 4, 8, 16])
      for (const persistent of [true, false])
        combos.push({
          abi,
          pages,
          persistent,
          engine: (pages + (persistent ? 1 : 0)) % 2 ? "async" : "sync",
        });

  for (const c of combos) {
    it(`read/write/flush/discard: ${c.abi}, ${c.pages}-page ring, persistent ${c.persistent}, ${c.engine}`, async () => {
      const { engine, backend } = makeEngine(c.engine, 16384);
      const m = await createPvMachine({
        engine,
        ringPages: c.pages,
        persistent: c.persistent,
        protocol: c.abi,
        indirect: 0,
      });
      expect(m.back.protocol!.abi).toBe(c.abi);
      expect(m.back.ringPages).toBe(c.pages);
      expect(m.back.usePersistent).toBe(c.persistent);
      // Enough requests in flight to wrap the ring several times; odd sizes and offsets.
      const writes: Promise<void>[] = [];
      const expected = new Map<number, Uint8Array>();
      for (let i = 0; i < 3 * 32 * c.pages; i++) {
        const lba = (i * 37) % 16000;
        const data = pattern(512 * (1 + (i % 17)), i + 1);
        expected.set(lba, data);
        writes.push(m.front.write(lba, data));
      }
      await Promise.all(writes);
      // Last writer wins per lba; overlapping ranges are re-read from the medium itself.
      for (const [lba, data] of [...expected].slice(-20)) {
        const got = await m.front.read(lba, data.length / 512);
        expect(
          Buffer.from(got).equals(Buffer.from(backend.data.subarray(lba * 512, lba * 512 + data.length))),
        ).toBe(true);
      }
      await m.front.flush();
      await m.front.discard(0, 64);
      expect(backend.data.subarray(0, 64 * 512).every((b) => b === 0)).toBe(true);
      expect(m.back.stats.errors).toBe(0);
      expect(m.back.stats.responses).toBe(m.back.stats.requests);
      await m.close();
      expect(m.host.grants(0).mapped).toBe(0);
    });
  }

  it("indirect descriptors up to 256 segments (1 MiB in one request)", async () => {
    for (const kind of ["sync", "async"] as const) {
      const { engine, backend } = makeEngine(kind, 8192);
      const m = await createPvMachine({ engine, indirect: 256, persistent: false });
      expect(m.front.info.indirect).toBe(true);
      expect(m.front.info.maxSegments).toBe(256);
      const data = pattern(256 * PAGE_SIZE, 9);
      await m.front.write(16, data);
      expect(m.back.stats.indirect).toBe(1);
      expect(
        Buffer.from(backend.data.subarray(16 * 512, 16 * 512 + data.length)).equals(Buffer.from(data)),
      ).toBe(true);
      expect(Buffer.from(await m.front.read(16, data.length / 512)).equals(Buffer.from(data))).toBe(true);
      expect(m.back.stats.indirect).toBe(2);
      // 257 pages need two requests.
      await m.front.read(0, 257 * 8);
      expect(m.back.stats.indirect).toBe(3);
      expect(m.back.stats.requests).toBe(4);
      await m.close();
    }
  });

  it("persistent grants: mapped once, reused without hypercalls", async () => {
    const { engine } = makeEngine("sync");
    const m = await createPvMachine({ engine, persistent: true, indirect: 0 });
    await m.front.write(0, pattern(8 * 4096, 1));
    const maps0 = m.hv.acct.counts.grantMap;
    const c0 = m.hv.acct.snapshot();
    for (let i = 0; i < 10; i++) await m.front.read(0, 64);
    expect(m.hv.acct.counts.grantMap).toBe(maps0);
    expect(m.back.stats.persistentHits).toBeGreaterThanOrEqual(80);
    // Per request: one send from the frontend, one from the backend; no grant hypercalls.
    expect(m.hv.acct.since(c0).hypercall).toBe(20);
    await m.close();
  });

  it("without persistent grants every segment is mapped and unmapped (two hypercalls a request)", async () => {
    const { engine } = makeEngine("sync");
    const m = await createPvMachine({ engine, persistent: false, indirect: 0 });
    const c0 = m.hv.acct.snapshot();
    await m.front.read(0, 64); // 8 pages, one request
    const d = m.hv.acct.since(c0);
    expect(d.grantMap).toBe(8);
    expect(d.hypercall).toBe(2 + 2); // map batch + unmap batch + 2 event sends
    expect(d.evtchnNotify).toBe(2);
    await m.close();
  });

  it("multi-queue: requests spread over the rings, each with its own event channel", async () => {
    const { engine, backend } = makeEngine("async");
    const m = await createPvMachine({ engine, queues: 3 });
    expect(m.back.rings.length).toBe(3);
    const xs = m.host.xs(0);
    expect(xs.read(`${FE}/multi-queue-num-queues`)).toBe("3");
    for (let q = 0; q < 3; q++) {
      expect(xs.tryRead(`${FE}/queue-${q}/ring-ref`)).toBeDefined();
      expect(xs.tryRead(`${FE}/queue-${q}/event-channel`)).toBeDefined();
    }
    expect(xs.tryRead(`${FE}/ring-ref`)).toBeUndefined();
    await Promise.all(Array.from({ length: 30 }, (_, i) => m.front.write(i * 8, pattern(4096, i + 1))));
    for (let i = 0; i < 30; i++) {
      expect(
        Buffer.from(backend.data.subarray(i * 4096, (i + 1) * 4096)).equals(
          Buffer.from(pattern(4096, i + 1)),
        ),
      ).toBe(true);
    }
    for (const r of m.back.rings) expect(r.back.rspProdPvt).toBe(10);
    await m.close();
  });

  it("merges adjacent requests into one storage I/O when switched on; each still gets a response", async () => {
    for (const merge of [false, true]) {
      const { engine, backend } = makeEngine("async");
      const m = await createPvMachine({ engine, merge, indirect: 0 });
      const parts = Array.from({ length: 16 }, (_, i) => m.front.write(i * 8, pattern(4096, 100 + i)));
      await Promise.all(parts);
      expect(m.back.stats.responses).toBe(16);
      if (merge) {
        expect(m.back.stats.merged).toBeGreaterThan(0);
        expect(m.back.stats.storageIos).toBe(16 - m.back.stats.merged);
      } else expect(m.back.stats.merged).toBe(0);
      for (let i = 0; i < 16; i++) {
        expect(
          Buffer.from(backend.data.subarray(i * 4096, (i + 1) * 4096)).equals(
            Buffer.from(pattern(4096, 100 + i)),
          ),
        ).toBe(true);
      }
      await m.close();
    }
  });

  it("completes requests in any order (random storage latency) with every byte in place", async () => {
    const inner = new MemoryBackend(4096);
    // Slow down some ranges so later requests overtake earlier ones.
    const slow = new FaultInjectingBackend(inner, [
      { op: "write", from: 0, to: 64, latencyMs: 15 },
      { op: "read", from: 64, to: 128, latencyMs: 10 },
    ]);
    const m = await createPvMachine({ engine: new AsyncEngine(slow, { maxInflight: 64 }), queues: 2 });
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        m.front.write(i * 8, pattern(4096, i + 7)).then(() => void order.push(i)),
      ),
    );
    expect(order).not.toEqual([...order].sort((a, b) => a - b)); // really out of order
    const reads: number[] = [];
    const got = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        m.front.read(i * 8, 8).then((d) => {
          reads.push(i);
          return d;
        }),
      ),
    );
    expect(reads).not.toEqual([...reads].sort((a, b) => a - b));
    got.forEach((d, i) => expect(Buffer.from(d).equals(Buffer.from(pattern(4096, i + 7)))).toBe(true));
    await m.close();
  });

  it("flush falls back to an empty WRITE_BARRIER when only feature-barrier is offered", async () => {
    const { engine } = makeEngine("async");
    const m = await createPvMachine({ engine, backend: { flushCache: false } });
    expect(m.front.info.flushCache).toBe(false);
    await m.front.write(0, pattern(4096, 5));
    await m.front.flush();
    expect(m.back.stats.barriers).toBe(1);
    expect(m.back.stats.flushes).toBe(0);
    await m.close();
  });

  it("a barrier waits for the ring's in-flight I/O before it starts", async () => {
    const inner = new MemoryBackend(4096);
    const slow = new FaultInjectingBackend(inner, [{ op: "write", latencyMs: 20 }]);
    const order: string[] = [];
    const spy: BlockBackend = Object.create(slow, {
      startIo: {
        value: (r: MediumRequest, done: IoCallback) => {
          if (r.op === "flush") order.push("flush");
          slow.startIo(r, (err) => {
            if (r.op === "write") order.push(`write${r.sector}`);
            done(err);
          });
        },
      },
    });
    const m = await createPvMachine({ engine: new AsyncEngine(spy), backend: { flushCache: false } });
    await Promise.all([
      m.front.write(0, pattern(4096, 1)),
      m.front.write(8, pattern(4096, 2)),
      m.front.flush(),
    ]);
    expect(order).toEqual(expect.arrayContaining(["write0", "write8"]));
    expect(order.indexOf("flush")).toBe(2);
    await m.close();
  });

  it("reports storage errors as typed errors with the blkif status", async () => {
    const inner = new MemoryBackend(4096);
    const faulty = new FaultInjectingBackend(inner, [
      { op: "read", from: 100, to: 101 },
      { op: "flush", code: "ENOTSUP" },
    ]);
    const m = await createPvMachine({ engine: new SyncEngine(faulty) });
    const e = await m.front.read(96, 8).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BlkfrontIoError);
    expect((e as BlkfrontIoError).status).toBe(BLKIF_RSP_ERROR);
    expect(await m.front.read(0, 8)).toHaveLength(4096); // the ring goes on
    const f = await m.front.flush().catch((x: unknown) => x);
    expect((f as BlkfrontIoError).status).toBe(BLKIF_RSP_EOPNOTSUPP);
    // blkback stops advertising a flush the medium cannot do.
    expect(m.host.xs(0).read(`${BE}/feature-flush-cache`)).toBe("0");
    // Past the end: the frontend's request is refused by the backend, not by the medium.
    const g = await m.front.read(4095, 2).catch((x: unknown) => x);
    expect((g as BlkfrontIoError).status).toBe(BLKIF_RSP_ERROR);
    await m.close();
  });

  it("a read-only disk is advertised as such and the frontend refuses writes", async () => {
    const { engine } = makeEngine("sync", 1024, true);
    const m = await createPvMachine({ engine });
    expect(m.front.info.readOnly).toBe(true);
    await expect(m.front.write(0, new Uint8Array(512))).rejects.toBeInstanceOf(BlkfrontError);
    await m.close();
  });

  it("answers with the event index: no notify while the frontend does not ask", async () => {
    const f = await rawFrontend({ engineKind: "sync" });
    const page = f.pages(1, 0);
    const ref = f.grant(page);
    // rsp_event = 1 after SHARED_RING_INIT: the first response notifies.
    let upcalls = 0;
    f.host.evtchn.bindHandler(1, f.queues[0]!.port, () => upcalls++);
    f.push([req({ operation: BLKIF_OP_READ, id: 1, segs: [[ref, 0, 0]] })]);
    await f.settle();
    expect(f.back.stats.notifies).toBe(1);
    // Not consumed and rsp_event left at 1: further responses are silent.
    f.push([
      req({ operation: BLKIF_OP_WRITE, id: 2, segs: [[ref, 0, 0]] }),
      req({ operation: BLKIF_OP_READ, id: 3, segs: [[ref, 0, 0]] }),
    ]);
    await f.settle();
    expect(f.back.stats.notifies).toBe(1);
    expect(upcalls).toBe(1);
    // Re-arm: the next response notifies.
    expect(f.responses().length).toBe(3);
    f.push([req({ operation: BLKIF_OP_READ, id: 4, segs: [[ref, 0, 0]] })]);
    await f.settle();
    expect(f.back.stats.notifies).toBe(2);
    // req_event re-armed by the final check after the backend drained the ring.
    expect(f.queues[0]!.ring.sring.reqEvent).toBe(f.back.rings[0]!.back.reqCons + 1);
  });

  it("serves a multi-page ring whose pages are scattered in guest memory (entries straddle pages)", async () => {
    for (const abi of ["x86_64-abi", "x86_32-abi"] as const) {
      const f = await rawFrontend({ pages: 4, scatter: true, protocol: abi });
      expect(f.back.ringPages).toBe(4);
      expect(f.back.rings[0]!.back.size).toBe(128);
      const data = f.pages(1, 0);
      const ref = f.grant(data);
      f.back.engine.backend.write(3, [new Uint8Array(512).fill(0x3c)]);
      // 300 requests, batches of 100: every slot is used, including those that straddle page boundaries.
      for (let b = 0; b < 3; b++) {
        f.push(
          Array.from({ length: 100 }, (_, i) =>
            req({
              operation: BLKIF_OP_READ,
              id: 0x100000000n * BigInt(b) + BigInt(i),
              sector: 3,
              segs: [[ref, 2, 2]],
            }),
          ),
        );
        await f.settle();
        const got = f.responses();
        expect(got.length).toBe(100);
        got.forEach((r, i) =>
          expect(r).toEqual({ id: 0x100000000n * BigInt(b) + BigInt(i), op: 0, status: 0 }),
        );
      }
      expect(f.mem.u8[data + 2 * 512]).toBe(0x3c);
      expect(f.mem.u8[data + 2 * 512 - 1]).toBe(0);
    }
  });

  it("keeps working when ring indices cross 2^32", async () => {
    const f = await rawFrontend({ engineKind: "sync" });
    const page = f.pages(1, 0);
    const ref = f.grant(page);
    // Reconnect the ring at indices just below 2^32 (as if it had run for a long time).
    const start = 0xfffffff0;
    const Q = f.queues[0]!;
    const sr = Q.ring.sring;
    sr.reqProd = start;
    sr.rspProd = start;
    sr.reqEvent = start + 1;
    sr.rspEvent = start + 1;
    Q.ring.reqProdPvt = start;
    Q.ring.rspCons = start;
    const back = f.back.rings[0]!.back;
    back.reqCons = start;
    back.rspProdPvt = start;
    for (let i = 0; i < 40; i++) {
      f.push([req({ operation: BLKIF_OP_READ, id: i, segs: [[ref, 0, 0]] })]);
      await f.settle();
      expect(f.responses()).toEqual([{ id: BigInt(i), op: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    }
    expect(sr.rspProd).toBe((start + 40) >>> 0);
  });
});

void XVDA;
