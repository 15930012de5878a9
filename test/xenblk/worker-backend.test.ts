/**
 * The backend's data path on a worker thread, the frontend's ring on this one, over the same guest memory
 * (SharedArrayBuffer): grants, event-channel bits and the ring all work across threads.
 */
import { describe, expect, it } from "vitest";
import { GuestRam, PAGE_SIZE, XenHost, xenSharedState } from "../../src/hypervisor/index.ts";
import {
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RSP_OKAY,
  BlkifRequest,
  BlkifResponse,
  blkifLayout,
  decodeResponse,
  encodeRequest,
} from "../../src/xenblk/abi.ts";
import { FrontRing } from "../../src/xenblk/ring.ts";
import { spawnWorker } from "../../src/machine/worker-transport.ts";

describe("backend on a worker thread", () => {
  it("serves a frontend on the main thread through shared grants, ring and event channels", async () => {
    const host = new XenHost({ ramSize: 16 << 20 });
    const mem = host.hv.mem as GuestRam;
    const gt = host.guestGrantTable(1, 4);
    const L = blkifLayout("x86_64-abi");
    const ringGpa = host.domain(1).pages.alloc(PAGE_SIZE);
    const ring = FrontRing.init(mem.u8.subarray(ringGpa, ringGpa + PAGE_SIZE), L.entrySize, 1);
    const ringRef = gt.grantAccess(0, ringGpa / PAGE_SIZE, false);
    const port = host.evtchn.allocUnbound(1, 0);
    // 32 data pages, one per slot, granted read-write once.
    const data = host.domain(1).pages.alloc(32 * PAGE_SIZE);
    const refs = Array.from({ length: 32 }, (_, i) => gt.grantAccess(0, data / PAGE_SIZE + i, false));
    const disk = new SharedArrayBuffer(1024 * 512);
    const diskU8 = new Uint8Array(disk);

    const worker = spawnWorker(new URL("./worker-backend.worker.ts", import.meta.url), {
      shared: xenSharedState(host),
      disk,
      refs: [ringRef],
      remotePort: port,
    });
    const ready = await new Promise<{ port: number }>((r) => worker.once("message", r));
    expect(host.evtchn.status(1, port).remotePort).toBe(ready.port);

    const total = 3000;
    let sent = 0;
    let done = 0;
    const free = Array.from({ length: 32 }, (_, i) => 31 - i);
    const inflight = new Map<number, { op: number; lba: number; seed: number }>();
    const rsp = new BlkifResponse();
    const req = new BlkifRequest();
    const finished = new Promise<void>((resolve, reject) => {
      const fill = (slot: number, seed: number) => {
        const b = mem.u8.subarray(data + slot * PAGE_SIZE, data + slot * PAGE_SIZE + 512);
        for (let i = 0; i < 512; i++) b[i] = (seed + i * 31) & 0xff;
      };
      const issue = () => {
        while (sent < total && free.length) {
          const slot = free.pop()!;
          const op = sent % 2 === 0 ? BLKIF_OP_WRITE : BLKIF_OP_READ;
          const lba = (sent * 7) % 1024;
          const seed = sent;
          if (op === BLKIF_OP_WRITE) fill(slot, seed);
          req.clear();
          req.operation = op;
          req.id = slot;
          req.sector = lba;
          req.nrSegments = 1;
          req.setSegment(0, refs[slot]!, 0, 0);
          encodeRequest(L, ring.view, ring.nextRequest(), req);
          inflight.set(slot, { op, lba, seed });
          sent++;
        }
        if (ring.pushRequestsAndCheckNotify()) host.evtchn.send(1, port);
      };
      host.evtchn.bindHandler(1, port, () => {
        try {
          for (;;) {
            while (ring.rspCons !== ring.sring.rspProd) {
              decodeResponse(ring.view, ring.nextResponse(), rsp);
              const slot = rsp.idLo;
              const r = inflight.get(slot)!;
              inflight.delete(slot);
              expect(rsp.status).toBe(BLKIF_RSP_OKAY);
              expect(rsp.operation).toBe(r.op);
              if (r.op === BLKIF_OP_READ) {
                // What the worker read into our page is what the disk holds.
                const got = mem.u8.subarray(data + slot * PAGE_SIZE, data + slot * PAGE_SIZE + 512);
                expect(
                  Buffer.from(got).equals(Buffer.from(diskU8.subarray(r.lba * 512, r.lba * 512 + 512))),
                ).toBe(true);
              }
              free.push(slot);
              done++;
            }
            if (ring.finalCheckForResponses() === 0) break;
          }
          if (done === total) resolve();
          else issue();
        } catch (e) {
          reject(e);
        }
      });
      issue();
    });
    const stopListening = host.evtchn.listen(1);
    await finished;
    stopListening();
    worker.postMessage("stop");
    const end = await new Promise<{ stats: { responses: number; errors: number } }>((r) =>
      worker.once("message", r),
    );
    await worker.terminate();
    expect(end.stats.responses).toBe(total);
    expect(end.stats.errors).toBe(0);
    // The worker released every grant it mapped: all revocable.
    expect(refs.every((r) => gt.tryEndAccess(r))).toBe(true);
  });
});
