/**
 * Storage faults on both disk paths, injected with FaultInjectingBackend at chosen sectors:
 * - IDE: a failing read ends with ERR and UNC (ATA/ATAPI-6 §9.x error outputs of READ SECTORS/READ DMA), a failing
 *   write with ERR, DF and ABRT (what QEMU 7.2's ide_rw_error reports for a write: ABRT_ERR with the device-fault
 *   status), the task file pointing at the failing sector, an interrupt, and the next command works;
 * - PV: BLKIF_RSP_ERROR for exactly the failing request while its neighbours complete with their data;
 * - added latency reorders nothing a guest can see and loses no completion;
 * - a full disk (ENOSPC) is a clean error on both paths and loses nothing written before.
 */
import { describe, expect, it } from "vitest";
import { AtaDrive, AtaError, type AtaVia } from "../../src/guest/ata-driver.ts";
import { ATA_CMD } from "../../src/spec/ata.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { createPc } from "../../src/machine/pc.ts";
import {
  AsyncEngine,
  FaultInjectingBackend,
  type FaultRule,
  MemoryBackend,
  SyncEngine,
} from "../../src/storage/index.ts";
import type { IoEngine } from "../../src/storage/types.ts";
import { BLKIF_RSP_ERROR } from "../../src/xenblk/abi.ts";
import { BlkfrontIoError } from "../../src/xenblk/blkfront.ts";
import { createPvMachine } from "../../src/machine/pv.ts";
import { ERR_ABRT, ERR_UNC, ST_DF, ST_ERR } from "../../src/spec/ata.ts";

const SECTORS = 2048;

function image(salt = 0): Uint8Array {
  const d = new Uint8Array(SECTORS * 512);
  const dv = new DataView(d.buffer);
  for (let i = 0; i < d.length; i += 4) dv.setUint32(i, (Math.imul(i, 2654435761) ^ salt) >>> 0, true);
  return d;
}

function faulty(rules: FaultRule[] = []) {
  const mem = new MemoryBackend(image());
  const fault = new FaultInjectingBackend(mem, rules);
  return { mem, fault };
}

type Kind = "sync" | "async";
const engineOf = (kind: Kind, b: FaultInjectingBackend): IoEngine =>
  kind === "sync" ? new SyncEngine(b) : new AsyncEngine(b);

async function ideDrive(kind: Kind, fault: FaultInjectingBackend, via: AtaVia) {
  const hv = new Hypervisor({ ramSize: 8 * 1024 * 1024 });
  createPc({ hv, firmwareInit: true, primary: { master: { engine: engineOf(kind, fault) } } });
  const d = new AtaDrive(hv.vcpu(0), { via, bufferSectors: 256, timeoutMs: 5000 });
  expect(await d.probe()).not.toBeNull();
  return { hv, d };
}

async function ataFailure(p: Promise<unknown>): Promise<AtaError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(AtaError);
  return e as AtaError;
}

describe("IDE under storage faults", () => {
  for (const kind of ["sync", "async"] as const) {
    for (const via of ["pio", "dma"] as const) {
      it(`EIO on read at sector 100: ERR+UNC, task file at 100, IRQ, next command works (${kind}, ${via})`, async () => {
        const { mem, fault } = faulty([{ op: "read", from: 100, to: 101, times: 1 }]);
        const { hv, d } = await ideDrive(kind, fault, via);
        const irqsBefore = hv.acct.counts.irqInject;
        const e = await ataFailure(d.read(96, 8));
        // The driver waits for INTRQ (irq mode): a "device" error, not "timeout", means the interrupt came.
        expect(e.kind).toBe("device");
        expect(e.status & ST_ERR).toBe(ST_ERR);
        expect(e.error & ERR_UNC).toBe(ERR_UNC);
        expect(e.lba).toBe(100);
        expect(hv.acct.counts.irqInject).toBeGreaterThan(irqsBefore);
        expect(fault.injected.read).toBe(1);
        const again = await d.read(96, 8);
        expect(Buffer.compare(again, mem.data.subarray(96 * 512, 104 * 512))).toBe(0);
      });

      it(`EIO on write at sector 300: ERR+DF+ABRT at 300, sectors before it written, next write works (${kind}, ${via})`, async () => {
        const { mem, fault } = faulty([{ op: "write", from: 300, to: 301, times: 1 }]);
        const { d } = await ideDrive(kind, fault, via);
        const data = new Uint8Array(8 * 512).fill(0xab);
        const old = mem.data.slice(300 * 512, 304 * 512);
        const e = await ataFailure(d.write(296, data));
        expect(e.kind).toBe("device");
        expect(e.status & (ST_ERR | ST_DF)).toBe(ST_ERR | ST_DF);
        expect(e.error & ERR_ABRT).toBe(ERR_ABRT);
        expect(e.lba).toBe(300);
        expect(e.command === ATA_CMD.WRITE_SECTORS || e.command === ATA_CMD.WRITE_DMA).toBe(true);
        // A disk that transferred up to the bad block: 296..299 hold the new data, 300.. the old.
        expect(mem.data.subarray(296 * 512, 300 * 512).every((b) => b === 0xab)).toBe(true);
        expect(Buffer.compare(mem.data.subarray(300 * 512, 304 * 512), old)).toBe(0);
        await d.write(296, data);
        await d.flush();
        expect(mem.data.subarray(296 * 512, 304 * 512).every((b) => b === 0xab)).toBe(true);
      });
    }

    it(`EIO on FLUSH CACHE: ERR reported, the next flush works (${kind})`, async () => {
      const { fault } = faulty([{ op: "flush", times: 1 }]);
      const { d } = await ideDrive(kind, fault, "pio");
      const e = await ataFailure(d.flush());
      expect(e.status & ST_ERR).toBe(ST_ERR);
      expect(e.error).not.toBe(0);
      expect(fault.injected.flush).toBe(1);
      await d.flush();
      expect(Buffer.compare(await d.read(0, 1), image().subarray(0, 512))).toBe(0);
    });
  }

  it("added latency (async engine) delays but neither reorders nor loses data", async () => {
    const { mem, fault } = faulty([
      { op: "read", latencyMs: 3 },
      { op: "write", latencyMs: 2, from: 0, to: 64 },
    ]);
    const { d } = await ideDrive("async", fault, "dma");
    for (let i = 0; i < 8; i++) {
      const data = new Uint8Array(4 * 512).fill(i + 1);
      await d.write(i * 8, data);
      expect(Buffer.compare(await d.read(i * 8, 4), data)).toBe(0);
    }
    expect(fault.delayed).toBeGreaterThanOrEqual(16);
    expect(mem.data.subarray(56 * 512, 60 * 512).every((b) => b === 8)).toBe(true);
  });

  it("a full disk (ENOSPC) is a write error at the first sector not stored; data written before stays", async () => {
    const { mem, fault } = faulty([{ op: "write", from: 1000, code: "ENOSPC" }]);
    const { d } = await ideDrive("sync", fault, "pio");
    await d.write(900, new Uint8Array(512).fill(0x11));
    const e = await ataFailure(d.write(996, new Uint8Array(8 * 512).fill(0x22)));
    expect(e.status & ST_ERR).toBe(ST_ERR);
    expect(e.lba).toBe(1000);
    expect(mem.data.subarray(900 * 512, 901 * 512).every((b) => b === 0x11)).toBe(true);
    expect(mem.data.subarray(996 * 512, 1000 * 512).every((b) => b === 0x22)).toBe(true);
    expect(await d.read(900, 1)).toEqual(new Uint8Array(512).fill(0x11));
  });
});

describe("PV under storage faults", () => {
  for (const kind of ["sync", "async"] as const) {
    it(`EIO at one sector fails exactly the request that touches it; its neighbours complete (${kind})`, async () => {
      const { mem, fault } = faulty([
        { op: "read", from: 100, to: 101 },
        { op: "write", from: 500, to: 501 },
      ]);
      const m = await createPvMachine({ engine: engineOf(kind, fault), queues: 2 });
      // Eight 8-sector reads in flight at once, one of them over sector 100.
      const reads = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => m.front.read(80 + i * 8, 8)),
      );
      reads.forEach((r, i) => {
        const lba = 80 + i * 8;
        if (lba <= 100 && 100 < lba + 8) {
          expect(r.status).toBe("rejected");
          const e = (r as PromiseRejectedResult).reason as BlkfrontIoError;
          expect(e).toBeInstanceOf(BlkfrontIoError);
          expect(e.status).toBe(BLKIF_RSP_ERROR);
        } else {
          expect(r.status).toBe("fulfilled");
          const got = (r as PromiseFulfilledResult<Uint8Array>).value;
          expect(Buffer.compare(got, mem.data.subarray(lba * 512, (lba + 8) * 512))).toBe(0);
        }
      });
      const writes = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) => m.front.write(488 + i * 8, new Uint8Array(8 * 512).fill(i + 1))),
      );
      writes.forEach((w, i) => {
        const lba = 488 + i * 8;
        const hit = lba <= 500 && 500 < lba + 8;
        expect(w.status).toBe(hit ? "rejected" : "fulfilled");
        if (hit)
          expect(((w as PromiseRejectedResult).reason as BlkfrontIoError).status).toBe(BLKIF_RSP_ERROR);
        else expect(mem.data.subarray(lba * 512, (lba + 8) * 512).every((b) => b === i + 1)).toBe(true);
      });
      expect(fault.injected.read).toBe(1);
      expect(fault.injected.write).toBe(1);
      expect(m.back.stats.errors).toBe(2);
      await m.close();
    });

    it(`EIO on flush: BLKIF_RSP_ERROR for that flush, the next one succeeds (${kind})`, async () => {
      const { fault } = faulty([{ op: "flush", times: 1 }]);
      const m = await createPvMachine({ engine: engineOf(kind, fault) });
      await m.front.write(0, new Uint8Array(512).fill(9));
      const e = await m.front.flush().then(
        () => null,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(BlkfrontIoError);
      expect((e as BlkfrontIoError).status).toBe(BLKIF_RSP_ERROR);
      await m.front.flush();
      expect(await m.front.read(0, 1)).toEqual(new Uint8Array(512).fill(9));
      await m.close();
    });
  }

  it("random latency on 200 concurrent requests over 4 queues: every completion arrives, with its own data", async () => {
    const { mem, fault } = faulty();
    for (let i = 0; i < 32; i++) {
      fault.addRule({
        op: i % 2 ? "read" : "write",
        from: i * 64,
        to: i * 64 + 64,
        latencyMs: 1 + ((i * 7) % 5),
      });
      fault.addRule({
        op: i % 2 ? "write" : "read",
        from: i * 64,
        to: i * 64 + 64,
        latencyMs: 1 + ((i * 3) % 4),
      });
    }
    const m = await createPvMachine({ engine: new AsyncEngine(fault), queues: 4, ringPages: 2 });
    const jobs = Array.from({ length: 200 }, (_, i) => {
      const lba = (i * 8) % (SECTORS - 8);
      return i % 2
        ? m.front.write(lba, new Uint8Array(4096).fill(i & 0xff)).then(() => ["w", lba, i] as const)
        : m.front.read(lba, 8).then((d) => ["r", lba, d] as const);
    });
    const done = await Promise.all(jobs);
    expect(done.length).toBe(200);
    expect(fault.delayed).toBe(200);
    // Every request has a block of its own (200 x 8 sectors fit the disk once): each write's byte is there.
    for (const [op, lba, x] of done) if (op === "w") expect(mem.data[lba * 512]).toBe(x & 0xff);
    await m.close();
  });

  it("a full disk (ENOSPC): BLKIF_RSP_ERROR, nothing written before is lost", async () => {
    const { mem, fault } = faulty([{ op: "write", from: 1024, code: "ENOSPC" }]);
    const m = await createPvMachine({ engine: new SyncEngine(fault) });
    await m.front.write(1000, new Uint8Array(8 * 512).fill(0x33));
    const e = await m.front.write(1020, new Uint8Array(8 * 512).fill(0x44)).then(
      () => null,
      (x: unknown) => x,
    );
    expect((e as BlkfrontIoError).status).toBe(BLKIF_RSP_ERROR);
    expect(mem.data.subarray(1000 * 512, 1008 * 512).every((b) => b === 0x33)).toBe(true);
    expect(Buffer.compare(await m.front.read(1000, 8), new Uint8Array(8 * 512).fill(0x33))).toBe(0);
    await m.close();
  });
});
