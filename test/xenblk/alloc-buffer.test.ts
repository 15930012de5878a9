/**
 * `allocBuffer` / `freeBuffer`: the caller's zero-copy pages are bounded by `directPages` (an error, never a
 * silent switch to the copy path), and a freed buffer's pages and grants serve the next allocation.
 */
import { describe, expect, it } from "vitest";

import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { PAGE_SIZE } from "../../src/hypervisor/memory.ts";
import { SyncEngine, TapEngine } from "../../src/storage/index.ts";
import { BlkfrontError } from "../../src/xenblk/blkfront.ts";
import { createPvMachine } from "../../src/machine/pv.ts";
import { expectStamps, stampedDisk } from "./helpers.ts";

async function machine(directPages: number, persistent = true) {
  const seen: Uint8Array[][] = [];
  const engine = new TapEngine(new SyncEngine(stampedDisk(16384)), (req) => {
    if (req.bufs) seen.push([...req.bufs]);
  });
  const m = await createPvMachine({
    engine,
    hv: new Hypervisor({ ramSize: 32 * 1024 * 1024 }),
    persistent,
    directPages,
  });
  const gt = m.host.guestGrantTable(1);
  /** Did the last storage request go straight into `b` (zero copy)? */
  const direct = (b: Uint8Array) =>
    seen
      .at(-1)!
      .every(
        (x) =>
          x.buffer === b.buffer &&
          x.byteOffset >= b.byteOffset &&
          x.byteOffset + x.length <= b.byteOffset + b.length,
      );
  return { m, gt, direct };
}

describe("allocBuffer within directPages, freeBuffer", () => {
  it("counts the pages of live buffers against directPages and refuses past it", async () => {
    const { m } = await machine(8);
    const a = m.front.allocBuffer(4 * PAGE_SIZE);
    const b = m.front.allocBuffer(3 * PAGE_SIZE + 1); // rounds up to 4 pages: 8 in all
    expect(b.length).toBe(3 * PAGE_SIZE + 1);
    expect(() => m.front.allocBuffer(1)).toThrow(BlkfrontError);
    m.front.freeBuffer(a);
    const c = m.front.allocBuffer(2 * PAGE_SIZE);
    expect(() => m.front.allocBuffer(3 * PAGE_SIZE)).toThrow(/directPages = 8/);
    m.front.freeBuffer(b);
    m.front.freeBuffer(c);
    await m.close();
  });

  it("hands a freed buffer's pages out again, zeroed, still zero copy", async () => {
    const { m, direct } = await machine(4);
    const a = m.front.allocBuffer(4 * PAGE_SIZE);
    await m.front.readInto(64, a);
    expect(direct(a)).toBe(true);
    const gpa = a.byteOffset;
    m.front.freeBuffer(a);
    const b = m.front.allocBuffer(4 * PAGE_SIZE);
    expect(b.byteOffset).toBe(gpa);
    expect(b.every((x) => x === 0)).toBe(true);
    await m.front.readInto(128, b);
    expect(direct(b)).toBe(true);
    expectStamps(b, 128);
    await m.close();
  });

  it("frees per-request grants at once; standing grants the backend still maps stay with the freed pages, off the budget", async () => {
    // Without persistent grants nothing stands between requests: every grant is gone at completion.
    const np = await machine(4, false);
    const free0 = np.gt.freeCount;
    const x = np.m.front.allocBuffer(2 * PAGE_SIZE);
    await np.m.front.readInto(0, x);
    expect(np.gt.freeCount).toBe(free0);
    np.m.front.freeBuffer(x);
    await np.m.close();
    // With them the backend keeps the grants mapped: freeing keeps them with the pages (not an error), and
    // a new buffer of other pages still gets zero copy, the kept grants not counting against the budget.
    const { m, direct } = await machine(4);
    const a = m.front.allocBuffer(2 * PAGE_SIZE);
    await m.front.readInto(0, a);
    m.front.freeBuffer(a);
    const b = m.front.allocBuffer(4 * PAGE_SIZE); // larger than the freed range: new pages
    expect(b.byteOffset).not.toBe(a.byteOffset);
    await m.front.readInto(8, b);
    expect(direct(b)).toBe(true);
    await m.close();
  });

  it("refuses to free what it did not allocate, twice, or while a request uses it", async () => {
    const { m } = await machine(4);
    const a = m.front.allocBuffer(PAGE_SIZE);
    expect(() => m.front.freeBuffer(new Uint8Array(PAGE_SIZE))).toThrow(RangeError);
    expect(() => m.front.freeBuffer(a.subarray(512))).toThrow(RangeError);
    let done: Error | null | undefined;
    m.front.submitRead(0, a, (e) => (done = e));
    expect(() => m.front.freeBuffer(a)).toThrow(/outstanding/);
    await m.front.idle();
    expect(done).toBeNull();
    m.front.freeBuffer(a);
    expect(() => m.front.freeBuffer(a)).toThrow(RangeError);
    await m.close();
  });
});
