/**
 * A frontend nobody here designed: test/support/xen-frontend/blkfront.c uses Xen's own io/ring.h and io/blkif.h macros
 * (Debian libxen-dev, Xen 4.17), compiled by clang to wasm32 with the guest's physical memory as its linear
 * memory. It drives our ring code and blkback through nothing but guest pages, grant entries, the event
 * channel and xenstore.
 *
 * Needs clang, lld and libxen-dev; skipped with a one-line reason when they are missing, except under CI.
 */
import { describe, expect, it } from "vitest";
import { GuestRam, PAGE_SIZE } from "../../src/hypervisor/memory.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { XenHost } from "../../src/hypervisor/xen-host.ts";
import { GNTMAP_host_map, GNTMAP_readonly, GNTST_okay } from "../../src/hypervisor/grant-table.ts";
import { AsyncEngine, MemoryBackend, SyncEngine } from "../../src/storage/index.ts";
import type { IoEngine } from "../../src/storage/types.ts";
import {
  BLKIF_LAYOUT_X86_32,
  BLKIF_LAYOUT_X86_64,
  BLKIF_OP_DISCARD,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  BlkifRequest,
  type BlkifAbi,
  blkifLayout,
  decodeRequest,
  encodeResponse,
} from "../../src/xenblk/abi.ts";
import { Blkback } from "../../src/xenblk/blkback.ts";
import { BackRing, ringSize } from "../../src/xenblk/ring.ts";
import { toolstackAddDisk } from "../../src/xenblk/xenbus.ts";
import { findToolchain, loadXenBlkfrontWasm } from "../support/xen-frontend/build.ts";
import {
  WasmBlkfront,
  XF_EAGAIN,
  XF_EINVAL,
  XenBlkfrontModule,
  createGuestWasmMemory,
  guestRamOf,
  type XfCompletion,
} from "../support/xen-frontend/frontend.ts";

const tool = findToolchain();
const missing = "missing" in tool ? tool.missing : null;
if (missing && process.env.CI === "true") {
  it("C frontend toolchain is installed (required under CI)", () => {
    throw new Error(missing);
  });
} else if (missing) {
  console.log(`skipping the C frontend tests: ${missing}`);
}

const ABIS: BlkifAbi[] = ["x86_64-abi", "x86_32-abi"];
const modules = new Map<BlkifAbi, WebAssembly.Module>();
function moduleFor(abi: BlkifAbi): WebAssembly.Module {
  let m = modules.get(abi);
  if (!m) {
    const bytes = loadXenBlkfrontWasm(abi);
    if ("missing" in bytes) throw new Error(bytes.missing);
    m = XenBlkfrontModule.compile(bytes);
    modules.set(abi, m);
  }
  return m;
}

const RAM = 64 * 1024 * 1024;
const DISK_SECTORS = 16384; // 8 MiB

/** A guest whose RAM is a shared wasm memory, a host around it, and a disk added by the toolstack. */
function makeGuest(): { memory: WebAssembly.Memory; ram: GuestRam; host: XenHost } {
  const memory = createGuestWasmMemory(RAM);
  const ram = guestRamOf(memory);
  const host = new XenHost({ hv: new Hypervisor({ memory: ram }) });
  toolstackAddDisk(host, { frontDom: 1 });
  return { memory, ram, host };
}

function fill(ram: GuestRam, gpa: number, bytes: number, seed: number): void {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    ram.dv.setUint32(gpa + i, x >>> 0, true);
  }
}

/** Drive until every waiter has resolved (backend and frontend run on event-channel upcalls). */
async function settle(p: Promise<unknown>[]): Promise<void> {
  await Promise.all(p);
}

describe.skipIf(missing !== null)(
  `C frontend from Xen's headers${missing ? ` (skipped: ${missing})` : ""}`,
  () => {
    it("the header's struct layout as compiled equals our abi.ts and ring.ts, both ABIs", () => {
      for (const abi of ABIS) {
        const memory = createGuestWasmMemory(4 * 1024 * 1024);
        const ram = guestRamOf(memory);
        const fe = new XenBlkfrontModule(moduleFor(abi), memory, () => {});
        const v = fe.layout(ram, 0x20_0000);
        const L = blkifLayout(abi);
        const [reqSize, op, nseg, handle, id, sector, seg, segSize, first, last] = v;
        expect([reqSize, op, nseg, handle, id, sector, seg]).toEqual([
          L.requestSize,
          0,
          1,
          2,
          L.reqId,
          L.reqSector,
          L.reqSeg,
        ]);
        expect([segSize, first, last]).toEqual([8, 4, 5]);
        const [dSize, dFlag, dNr, iSize, iOp, iNseg, iId, iSector, iHandle, iGrefs] = v.slice(10);
        expect([dSize, dFlag, dNr]).toEqual([L.discardSize, 1, L.discardNrSectors]);
        expect([iSize, iOp, iNseg, iId, iSector, iHandle, iGrefs]).toEqual([
          L.indirectSize,
          1,
          2,
          L.reqId,
          L.reqSector,
          L.indirectHandle,
          L.indirectGrefs,
        ]);
        const [rSize, rId, rOp, rStatus, entry, ringOff, reqProd, reqEvent, rspProd, rspEvent, gnt] =
          v.slice(20);
        expect([rSize, rId, rOp, rStatus]).toEqual([L.responseSize, 0, 8, 10]);
        expect([entry, ringOff, reqProd, reqEvent, rspProd, rspEvent, gnt]).toEqual([
          L.entrySize,
          64,
          0,
          4,
          8,
          12,
          8,
        ]);
        expect(v.slice(31, 36)).toEqual([1, 2, 4, 8, 16].map((p) => ringSize(p, L.entrySize)));
        expect(v.slice(36, 42)).toEqual([11, 8, 0xffffffff, 0xfffffffe, 5, 6]);
        expect(String.fromCharCode(v[42]!)).toBe(abi === "x86_32-abi" ? "3" : "6");
      }
      expect(BLKIF_LAYOUT_X86_64.entrySize).not.toBe(BLKIF_LAYOUT_X86_32.entrySize);
    });

    it("C producer against ring.ts's BackRing directly: wraps past 2^32, completions out of order", async () => {
      const abi: BlkifAbi = "x86_32-abi";
      const L = blkifLayout(abi);
      const { memory, ram, host } = makeGuest();
      const disk = new Uint8Array(DISK_SECTORS * 512);
      // A ring-level backend in dom0: maps the ring, answers every request in reverse order of arrival.
      const be = host.xs(0);
      const bePath = "/local/domain/0/backend/vbd/1/51712";
      const fePath = "/local/domain/1/device/vbd/51712";
      be.write(`${bePath}/max-ring-page-order`, "2");
      be.write(`${bePath}/state`, "2");
      const gm = host.grants(0);
      let back: BackRing | null = null;
      let port = 0;
      const held: BlkifRequest[] = [];
      let served = 0;
      const serve = (): void => {
        const b = back!;
        do {
          while (b.unconsumedRequests() > 0)
            held.push(decodeRequest(L, b.view, b.nextRequest(), new BlkifRequest()));
        } while (b.finalCheckForRequests() > 0);
        while (held.length) {
          const r = held.pop()!;
          let status = BLKIF_RSP_OKAY;
          let pos = r.sector * 512;
          for (let i = 0; i < r.nrSegments; i++) {
            const m = gm.map({
              dom: 1,
              ref: r.segGref[i]!,
              flags: GNTMAP_host_map | (r.operation === BLKIF_OP_WRITE ? GNTMAP_readonly : 0),
            });
            if (m.status !== GNTST_okay) {
              status = BLKIF_RSP_ERROR;
              continue;
            }
            const a = r.segFirst[i]! * 512;
            const e = (r.segLast[i]! + 1) * 512;
            if (r.operation === BLKIF_OP_WRITE) disk.set(m.page!.subarray(a, e), pos);
            else m.page!.set(disk.subarray(pos, pos + e - a), a);
            pos += e - a;
            gm.unmap(m.handle);
          }
          encodeResponse(b.view, b.nextResponse(), r.idLo, r.idHi, r.operation, status);
          served++;
          if (b.pushResponsesAndCheckNotify()) host.evtchn.send(0, port);
        }
      };
      be.watch(`${fePath}/state`, "t", () => {
        if (back || be.readInt(`${fePath}/state`) !== 3) return;
        const order = be.readInt(`${fePath}/ring-page-order`)!;
        const maps = Array.from({ length: 1 << order }, (_, i) =>
          gm.map({ dom: 1, ref: be.readInt(`${fePath}/ring-ref${i}`)!, flags: GNTMAP_host_map }),
        );
        const view = new Uint8Array(ram.buffer, maps[0]!.gpa, maps.length * PAGE_SIZE);
        // BACK_RING_ATTACH at the page's rsp_prod, where a ring that was in use stopped.
        back = BackRing.attachAt(view, L.entrySize, new BackRing(view, L.entrySize).sring.rspProd);
        port = host.evtchn.bindInterdomain(0, 1, be.readInt(`${fePath}/event-channel`)!);
        host.evtchn.bindHandler(0, port, serve);
        be.write(`${bePath}/sectors`, String(DISK_SECTORS));
        be.write(`${bePath}/state`, "4");
      });
      const start = 0xffffffff - 300;
      const fe = await WasmBlkfront.connect({
        host,
        module: moduleFor(abi),
        memory,
        abi,
        ringPages: 4,
        ringStart: start,
      });
      expect(fe.ringSize).toBe(128);
      expect(back!.size).toBe(128);
      const buf = host.domain(1).pages.alloc(64 * PAGE_SIZE);
      const done: XfCompletion[] = [];
      fe.onCompletion = (c) => done.push(c);
      // 1000 single-page writes, 100 per push, then read them all back.
      for (let round = 0; round < 10; round++) {
        for (let k = 0; k < 100; k++) {
          const n = round * 100 + k;
          const gpa = buf + (n % 64) * PAGE_SIZE;
          fill(ram, gpa, PAGE_SIZE, n + 1);
          // Queue only as much as the ring allows: when full, let the backend answer first.
          expect(fe.queue(BLKIF_OP_WRITE, (n % 2048) * 8, gpa, 8, n)).toBeGreaterThanOrEqual(0);
          if (fe.freeRequests === 0 || n % 64 === 63) {
            fe.push();
            await new Promise((r) => setImmediate(r));
          }
        }
        fe.push();
        await new Promise((r) => setImmediate(r));
      }
      while (fe.outstanding > 0) await new Promise((r) => setImmediate(r));
      expect(done.length).toBe(1000);
      expect(new Set(done.map((c) => c.tag)).size).toBe(1000);
      expect(done.every((c) => c.status === BLKIF_RSP_OKAY && c.op === BLKIF_OP_WRITE)).toBe(true);
      const st = fe.stats();
      expect(st.reqProdPvt).toBe((start + 1000) >>> 0); // crossed 2^32
      expect(st.rspCons).toBe(st.reqProdPvt);
      expect(served).toBe(1000);
      // Every sector holds the last write to it.
      const expectPage = new GuestRam(PAGE_SIZE);
      for (let n = 0; n < 1000; n++) {
        fill(expectPage, 0, PAGE_SIZE, n + 1);
        expect(
          Buffer.compare(disk.subarray((n % 2048) * 4096, (n % 2048) * 4096 + 4096), expectPage.u8),
        ).toBe(0);
      }
    });

    for (const abi of ABIS) {
      for (const [engineKind, pages] of [
        ["sync", 1],
        ["async", 4],
      ] as const) {
        describe(`${abi}, ${engineKind} engine, ${pages}-page ring, against blkback`, () => {
          async function setup(ringStart = 0) {
            const { memory, ram, host } = makeGuest();
            const media = new MemoryBackend(DISK_SECTORS);
            const engine: IoEngine =
              engineKind === "sync" ? new SyncEngine(media) : new AsyncEngine(media, { maxInflight: 8 });
            const bb = new Blkback({ host, engine, frontDom: 1 });
            const fe = await WasmBlkfront.connect({
              host,
              module: moduleFor(abi),
              memory,
              abi,
              ringPages: pages,
              ringStart,
            });
            return { memory, ram, host, media, bb, fe };
          }

          it("connects with the ABI's ring geometry and negotiates through xenstore", async () => {
            const { host, fe, bb } = await setup();
            expect(fe.ringPages).toBe(pages);
            expect(fe.ringSize).toBe(ringSize(pages, blkifLayout(abi).entrySize));
            expect(fe.sectors).toBe(DISK_SECTORS);
            expect(fe.featureFlushCache).toBe(true);
            const xs = host.xs(0);
            expect(xs.read("/local/domain/1/device/vbd/51712/protocol")).toBe(abi);
            expect(xs.tryRead("/local/domain/1/device/vbd/51712/ring-page-order")).toBe(
              pages > 1 ? String(Math.log2(pages)) : undefined,
            );
            expect(bb.state).toBe(4);
          });

          it("writes, flushes and reads back; data lands on the disk and in guest pages", async () => {
            const { ram, host, media, fe } = await setup();
            const pg = host.domain(1).pages;
            const src = pg.alloc(11 * PAGE_SIZE);
            const dst = pg.alloc(11 * PAGE_SIZE);
            fill(ram, src, 11 * PAGE_SIZE, 7);
            // 88 sectors from a page boundary (11 full segments) and 13 sectors starting mid-page.
            let c = await fe.io(BLKIF_OP_WRITE, 100, src, 88);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_WRITE]);
            expect(
              Buffer.compare(media.data.subarray(100 * 512, 188 * 512), ram.u8.subarray(src, src + 88 * 512)),
            ).toBe(0);
            c = await fe.io(BLKIF_OP_WRITE, 5000, src + 3 * 512, 13);
            expect(c.status).toBe(BLKIF_RSP_OKAY);
            expect(
              Buffer.compare(
                media.data.subarray(5000 * 512, 5013 * 512),
                ram.u8.subarray(src + 1536, src + 1536 + 13 * 512),
              ),
            ).toBe(0);
            c = await fe.io(BLKIF_OP_FLUSH_DISKCACHE, 0, 0, 0);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_FLUSH_DISKCACHE]);
            c = await fe.io(BLKIF_OP_WRITE_BARRIER, 0, 0, 0);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_WRITE_BARRIER]);
            c = await fe.io(BLKIF_OP_READ, 100, dst, 88);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_READ]);
            expect(
              Buffer.compare(ram.u8.subarray(dst, dst + 88 * 512), ram.u8.subarray(src, src + 88 * 512)),
            ).toBe(0);
            c = await fe.io(BLKIF_OP_DISCARD, 100, 0, 8);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_DISCARD]);
            // The C driver revoked every data grant at completion: only the ring's refs are still out.
            expect(fe.stats().freeGrefs).toBe(4 * 512 - 8 - pages);
          });

          it("indirect requests built from the header's blkif_request_indirect: up to 256 pages each", async () => {
            const { ram, host, media, fe, bb } = await setup();
            expect(fe.maxIndirectSegments).toBe(256); // Linux blkback's MAX_INDIRECT_SEGMENTS
            const pg = host.domain(1).pages;
            const src = pg.alloc(257 * PAGE_SIZE);
            const dst = pg.alloc(257 * PAGE_SIZE);
            fill(ram, src, 257 * PAGE_SIZE, 99);
            // 2040 sectors starting 512 bytes into a page: 256 segments, first and last partial.
            let c = await fe.ioIndirect(BLKIF_OP_WRITE, 1000, src + 512, 2040);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_WRITE]);
            expect(
              Buffer.compare(
                media.data.subarray(1000 * 512, 3040 * 512),
                ram.u8.subarray(src + 512, src + 512 + 2040 * 512),
              ),
            ).toBe(0);
            c = await fe.ioIndirect(BLKIF_OP_READ, 1000, dst, 2040);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_OKAY, BLKIF_OP_READ]);
            expect(
              Buffer.compare(
                ram.u8.subarray(dst, dst + 2040 * 512),
                ram.u8.subarray(src + 512, src + 512 + 2040 * 512),
              ),
            ).toBe(0);
            expect(bb.stats.indirect).toBe(2);
            // 257 pages exceed what the backend offers: the driver refuses before touching the ring.
            expect(fe.queueIndirect(BLKIF_OP_READ, 0, dst, 257 * 8, 1)).toBe(XF_EINVAL);
            // Every grant, the indirect pages' included, was revoked at completion.
            expect(fe.stats().freeGrefs).toBe(4 * 512 - 8 - pages);
          });

          it("bad requests are answered, not fatal: past the end, unknown operation", async () => {
            const { host, fe } = await setup();
            const buf = host.domain(1).pages.alloc(PAGE_SIZE);
            let c = await fe.io(BLKIF_OP_READ, DISK_SECTORS - 4, buf, 8);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_ERROR, BLKIF_OP_READ]);
            c = await fe.io(9, 0, 0, 0);
            expect([c.status, c.op]).toEqual([BLKIF_RSP_EOPNOTSUPP, 9]);
            c = await fe.io(BLKIF_OP_READ, 0, buf, 8);
            expect(c.status).toBe(BLKIF_RSP_OKAY);
            expect(fe.error).toBeNull();
          });

          it("many ring cycles with random sizes; indices cross 2^32; every byte verified", async () => {
            const start = 0xffffffff - 200;
            const { ram, host, media, fe, bb } = await setup(start);
            const pg = host.domain(1).pages;
            const N = 40 * fe.ringSize; // 40 trips round the ring
            // One buffer per ring slot; a batch of ringSize writes is settled before its buffers are reused.
            const BUFS = fe.ringSize;
            const area = pg.alloc(BUFS * 12 * PAGE_SIZE);
            // The last write to each 96-sector slot: its pattern seed and length.
            const last = new Map<number, { seed: number; n: number }>();
            let rnd = 99;
            const rand = (k: number): number =>
              ((rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0) >>> 8) % k;
            const writes: Promise<XfCompletion>[] = [];
            // Writes to disjoint 96-sector slots so each can be checked afterwards.
            for (let i = 0; i < N; i++) {
              const slotSector = (i % Math.floor(DISK_SECTORS / 96)) * 96;
              const n = 1 + rand(80);
              const off = rand(8) * 512;
              const gpa = area + (i % BUFS) * 12 * PAGE_SIZE + off;
              fill(ram, gpa, n * 512, i + 1);
              last.set(slotSector, { seed: i + 1, n });
              while (fe.freeRequests === 0) await new Promise((r) => setImmediate(r));
              writes.push(fe.io(BLKIF_OP_WRITE, slotSector, gpa, n));
              // Keep a buffer unused until its write is answered.
              if (i % BUFS === BUFS - 1) await settle(writes.splice(0));
            }
            await settle(writes);
            expect(fe.error).toBeNull();
            const s = fe.stats();
            expect(s.responses).toBe(N);
            expect(s.reqProdPvt).toBe((start + N) >>> 0);
            expect(s.reqProdPvt).toBeLessThan(start);
            // Reads: the last write to each slot, compared with its regenerated pattern.
            const check = new GuestRam(96 * 512);
            const rd = pg.alloc(12 * PAGE_SIZE);
            for (const [sector, { seed, n }] of last) {
              const c = await fe.io(BLKIF_OP_READ, sector, rd, n);
              expect(c.status).toBe(BLKIF_RSP_OKAY);
              fill(check, 0, n * 512, seed);
              expect(Buffer.compare(ram.u8.subarray(rd, rd + n * 512), check.u8.subarray(0, n * 512))).toBe(
                0,
              );
              expect(
                Buffer.compare(
                  media.data.subarray(sector * 512, (sector + n) * 512),
                  check.u8.subarray(0, n * 512),
                ),
              ).toBe(0);
            }
            // Event indices did their job: far fewer kicks than requests in both directions.
            expect(s.notifies).toBeLessThan(N);
            expect(bb.stats.notifies).toBeLessThanOrEqual(bb.stats.responses);
            expect(bb.stats.errors).toBe(0);
          });

          it("queue refuses when the ring is full (RING_FULL) and resumes after responses", async () => {
            const { host, fe } = await setup();
            const buf = host.domain(1).pages.alloc(PAGE_SIZE);
            const ps: Promise<XfCompletion>[] = [];
            for (let i = 0; i < fe.ringSize; i++)
              expect(fe.queue(BLKIF_OP_READ, i * 8, buf, 8, 1000 + i)).toBeGreaterThanOrEqual(0);
            expect(fe.queue(BLKIF_OP_READ, 0, buf, 8, 1)).toBe(XF_EAGAIN);
            let seen = 0;
            fe.onCompletion = () => seen++;
            fe.push();
            while (seen < fe.ringSize) await new Promise((r) => setImmediate(r));
            ps.push(fe.io(BLKIF_OP_READ, 0, buf, 8));
            expect((await Promise.all(ps))[0]!.status).toBe(BLKIF_RSP_OKAY);
          });

          it("closes like Mini-OS (Closing, Closed) and the backend follows", async () => {
            const { fe, bb } = await setup();
            await fe.close();
            await bb.settled();
            expect(bb.state).toBe(6);
          });
        });
      }
    }
  },
);
