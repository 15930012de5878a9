/**
 * Zero copy through the guest's own pages, and the callback I/O API.
 *
 * A kernel reads into pages it owns: blkfront grants the caller's pages themselves when the buffer is a
 * page-aligned view of the guest's memory (`allocBuffer`), so the storage request's buffer IS the caller's
 * memory. With feature-persistent each such page keeps one standing grant (read-write, as every persistent
 * grant: blkif.h says the backend may keep it mapped and use it for either direction) until shutdown; without
 * it, a page is granted per request (read-only for a write: the backend only reads it) and revoked at completion.
 * Any other buffer goes through the driver's own granted pages and a copy.
 */
import { describe, expect, it } from "vitest";

import { GTF_permit_access, GTF_readonly } from "../../src/hypervisor/grant-table.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { GuestRam, PAGE_SIZE } from "../../src/hypervisor/memory.ts";
import { SyncEngine, TapEngine } from "../../src/storage/index.ts";
import { BlkfrontError, BlkfrontIoError } from "../../src/xenblk/blkfront.ts";
import { createPvMachine } from "../../src/machine/pv.ts";
import { expectStamps, stampedDisk } from "./helpers.ts";

/** Does `b` lie inside `outer` (same memory, within its bytes)? */
function inside(b: Uint8Array, outer: Uint8Array): boolean {
  return (
    b.buffer === outer.buffer &&
    b.byteOffset >= outer.byteOffset &&
    b.byteOffset + b.length <= outer.byteOffset + outer.length
  );
}

const SECTORS = 16384;

async function machine(o: { persistent?: boolean; directPages?: number; indirect?: number } = {}) {
  const disk = stampedDisk(SECTORS);
  // The buffers of each storage request (copied: the caller may reuse the list after submit).
  const seen: Uint8Array[][] = [];
  const engine = new TapEngine(new SyncEngine(disk), (req) => {
    if (req.bufs) seen.push([...req.bufs]);
  });
  const hv = new Hypervisor({ memory: new GuestRam(48 * 1024 * 1024) });
  const m = await createPvMachine({
    engine,
    hv,
    persistent: o.persistent ?? true,
    ...(o.indirect !== undefined ? { indirect: o.indirect } : {}),
    ...(o.directPages !== undefined ? { directPages: o.directPages } : {}),
  });
  const table = m.host.grantTable(1)!;
  /** Grant entries of the guest's table that grant frame `gfn` (flags of each). */
  const grantsOf = (gfn: number): number[] => {
    const out: number[] = [];
    for (let ref = 8; ref < table.nrEntries; ref++) {
      const e = table.readEntry(ref);
      if (e && e.flags !== 0 && e.frame === gfn) out.push(e.flags);
    }
    return out;
  };
  const gt = m.host.guestGrantTable(1);
  return { m, seen, disk, grantsOf, gt };
}

describe("zero copy into the guest's own pages", () => {
  it("allocBuffer gives page-aligned, zeroed guest memory", async () => {
    const { m } = await machine();
    const mem = m.hv.mem as GuestRam;
    const b = m.front.allocBuffer(5000);
    expect(b.length).toBe(5000);
    expect(b.buffer).toBe(mem.buffer);
    expect(b.byteOffset % PAGE_SIZE).toBe(0);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(() => m.front.allocBuffer(0)).toThrow(RangeError);
    await m.close();
  });

  for (const persistent of [true, false]) {
    it(`reads and writes hand the caller's pages themselves to storage (persistent ${persistent})`, async () => {
      const { m, seen, disk } = await machine({ persistent });
      const buf = m.front.allocBuffer(3 * PAGE_SIZE);
      await m.front.readInto(200, buf);
      expectStamps(buf, 200);
      expect(seen.at(-1)!.every((b) => inside(b, buf))).toBe(true);
      // A write straight from the caller's pages, checked on the medium.
      buf.fill(0x5a);
      await m.front.write(1000, buf.subarray(0, 2 * PAGE_SIZE));
      expect(seen.at(-1)!.every((b) => inside(b, buf))).toBe(true);
      const media = disk.data.subarray(1000 * 512, 1000 * 512 + 2 * PAGE_SIZE);
      expect(media.every((x) => x === 0x5a)).toBe(true);
      await m.close();
    });
  }

  it("any other buffer goes through the driver's pages and a copy, with the same bytes", async () => {
    const { m, seen } = await machine();
    const plain = new Uint8Array(2 * PAGE_SIZE);
    await m.front.readInto(64, plain);
    expectStamps(plain, 64);
    expect(seen.at(-1)!.some((b) => b.buffer === plain.buffer)).toBe(false);
    // A view of guest memory that does not start on a page boundary is not granted as is either.
    const g = m.front.allocBuffer(2 * PAGE_SIZE);
    const odd = g.subarray(512, 512 + PAGE_SIZE);
    await m.front.readInto(8, odd);
    expectStamps(odd, 8);
    expect(seen.at(-1)!.some((b) => inside(b, g))).toBe(false);
    await m.close();
  });

  it("persistent grants: one standing read-write grant per caller page, no map after the first use, revoked at shutdown", async () => {
    const { m, grantsOf, gt } = await machine({ persistent: true });
    const buf = m.front.allocBuffer(PAGE_SIZE);
    const gfn = buf.byteOffset / PAGE_SIZE;
    expect(grantsOf(gfn)).toEqual([]);
    await m.front.readInto(0, buf);
    const free1 = gt.freeCount;
    const maps1 = m.hv.acct.counts.grantMap;
    for (let i = 0; i < 5; i++) {
      await m.front.readInto(i * 8, buf);
      expectStamps(buf, i * 8);
      await m.front.write(100 + i * 8, buf);
    }
    // Reads and writes alike reuse the one grant, read-write (blkif.h: persistent grants serve both directions).
    expect(grantsOf(gfn)).toHaveLength(1);
    expect(grantsOf(gfn)[0]! & (GTF_permit_access | GTF_readonly)).toBe(GTF_permit_access);
    expect(gt.freeCount).toBe(free1);
    expect(m.hv.acct.counts.grantMap).toBe(maps1);
    await m.close();
    expect(grantsOf(gfn)).toEqual([]);
  });

  it("without persistent grants: a grant per request, read-only for a write, revoked at completion", async () => {
    const { m, grantsOf, gt } = await machine({ persistent: false });
    const buf = m.front.allocBuffer(PAGE_SIZE);
    const gfn = buf.byteOffset / PAGE_SIZE;
    const free0 = gt.freeCount;
    let during: number[] = [];
    const done = new Promise<Error | null>((r) => m.front.submitWrite(0, buf, r));
    during = grantsOf(gfn); // written to the ring, not yet answered
    expect(await done).toBeNull();
    expect(during).toHaveLength(1);
    expect(during[0]! & GTF_readonly).toBe(GTF_readonly);
    const readDone = new Promise<Error | null>((r) => m.front.submitRead(0, buf, r));
    expect(grantsOf(gfn)[0]! & GTF_readonly).toBe(0);
    expect(await readDone).toBeNull();
    expect(grantsOf(gfn)).toEqual([]);
    expect(gt.freeCount).toBe(free0);
    await m.close();
  });

  it("past the zero-copy budget allocBuffer refuses, and other guest pages are copied with a warning", async () => {
    const { m, seen, grantsOf } = await machine({ persistent: true, directPages: 1 });
    const a = m.front.allocBuffer(PAGE_SIZE);
    // A second page would pass the budget of one: refused, instead of a buffer whose I/O is silently copied.
    expect(() => m.front.allocBuffer(PAGE_SIZE)).toThrow(/directPages = 1/);
    await m.front.readInto(8, a);
    expect(seen.at(-1)!.every((x) => inside(x, a))).toBe(true);
    // Guest pages that did not come from allocBuffer, past the budget: copied, and the driver says so once.
    const other = m.hv.mem.view(40 * 1024 * 1024, PAGE_SIZE) as Uint8Array;
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(w.code ?? "");
    process.on("warning", onWarning);
    try {
      await m.front.readInto(16, other);
      await m.front.readInto(24, other);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off("warning", onWarning);
    }
    expectStamps(other, 24);
    expect(seen.at(-1)!.some((x) => inside(x, other))).toBe(false);
    expect(grantsOf(other.byteOffset / PAGE_SIZE)).toEqual([]);
    expect(warnings).toEqual(["XENIDE_BLKFRONT_COPY"]);
    await m.close();
  });
});

describe("submitRead / submitWrite: completion callbacks instead of promises", () => {
  it("calls done once from the upcall, never inside submit", async () => {
    const { m } = await machine();
    const buf = m.front.allocBuffer(PAGE_SIZE);
    const calls: (Error | null)[] = [];
    m.front.submitRead(40, buf, (e) => calls.push(e));
    expect(calls).toEqual([]);
    await m.front.idle();
    expect(calls).toEqual([null]);
    expectStamps(buf, 40);
    await m.close();
  });

  it("a chain of requests each issued from the previous one's done", async () => {
    const { m } = await machine();
    const buf = m.front.allocBuffer(2 * PAGE_SIZE);
    const lbas: number[] = [];
    await new Promise<void>((resolve, reject) => {
      let i = 0;
      const next = (e: Error | null): void => {
        if (e) return reject(e);
        if (i > 0) expectStamps(buf, lbas[i - 1]!);
        if (i === 20) return resolve();
        lbas.push((i * 131) % 16000);
        m.front.submitRead(lbas[i++]!, buf, next);
      };
      next(null);
    });
    await m.close();
  });

  it("an error status reaches done as BlkfrontIoError and the ring goes on", async () => {
    const { m } = await machine();
    const buf = m.front.allocBuffer(PAGE_SIZE);
    const err = await new Promise<Error | null>((r) => m.front.submitRead(SECTORS - 4, buf, r));
    expect(err).toBeInstanceOf(BlkfrontIoError);
    expect(await new Promise<Error | null>((r) => m.front.submitRead(0, buf, r))).toBeNull();
    await m.close();
  });

  it("a transfer larger than one request is split, with one done after the last part", async () => {
    const { m, seen } = await machine({ indirect: 0 }); // 11 segments a request
    const buf = m.front.allocBuffer(16 * PAGE_SIZE);
    const calls: (Error | null)[] = [];
    m.front.submitRead(256, buf, (e) => calls.push(e));
    await m.front.idle();
    expect(calls).toEqual([null]);
    expect(seen).toHaveLength(2);
    expectStamps(buf, 256);
    await m.close();
  });

  it("caller mistakes throw and never call done", async () => {
    const { m } = await machine();
    const done = () => expect.unreachable("done must not be called");
    expect(() => m.front.submitRead(0, new Uint8Array(100), done)).toThrow(RangeError);
    await m.close();
    expect(() => m.front.submitRead(0, new Uint8Array(512), done)).toThrow(BlkfrontError);
  });
});
