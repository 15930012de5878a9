/**
 * Persistent grants as Linux xen-blkback keeps them (drivers/block/xen-blkback/blkback.c): at most
 * max_pgrants per ring, an LRU purge (purge_persistent_gnt) once the table is full and one more grant was
 * wanted, and indirect segment pages mapped through the persistent grants like data pages.
 */
import { describe, expect, it } from "vitest";

import { PAGE_SIZE } from "../../src/hypervisor/index.ts";
import { encodeSegment } from "../../src/xenblk/abi.ts";
import { BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY } from "../../src/xenblk/abi.ts";
import { rawFrontend, req } from "./helpers.ts";

const MAX = 100;
/** floor(max_pgrants / 100) * LRU_PERCENT_CLEAN (5), the grants one purge removes when none are in excess. */
const CLEAN = Math.floor(MAX / 100) * 5;

/** A frontend with `n` one-page data grants and a backend keeping at most MAX persistent grants. */
async function setup(n: number, engineKind: "sync" | "async" = "sync") {
  const f = await rawFrontend({ engineKind, back: { maxPersistentGrants: MAX, lruIntervalMs: 0 } });
  const base = f.pages(n, 0);
  const refs = Array.from({ length: n }, (_, i) => f.grant(base + i * PAGE_SIZE));
  let id = 1;
  const push = (ref: number) =>
    f.push([req({ operation: BLKIF_OP_READ, id: id++, sector: 0, segs: [[ref, 0, 7]] })]);
  const read = async (ref: number) => {
    push(ref);
    await f.settle();
    expect(f.responses().map((r) => r.status)).toEqual([BLKIF_RSP_OKAY]);
  };
  /** The grants among `rs` the backend still has mapped (Xen's pin counts on the granter's entries). */
  const mappedOf = (rs: number[]) =>
    rs.filter((r) => {
      const p = f.gt.table.pins(r);
      return p.read + p.write > 0;
    });
  return { f, refs, read, push, mappedOf };
}

describe("persistent grants (Linux blkback rules)", () => {
  it("keeps at most max_pgrants mapped; one more is mapped for its request alone and sets off a purge", async () => {
    const { f, refs, read, mappedOf } = await setup(MAX + 3);
    for (const r of refs.slice(0, MAX)) await read(r);
    expect(f.back.stats.persistentMaps).toBe(MAX);
    const ringGrants = f.queues[0]!.refs.length;
    expect(f.host.grants(0).mapped).toBe(ringGrants + MAX);
    expect(f.back.stats.persistentPurged).toBe(0);
    // One more: the table is full, so it is mapped for the request and unmapped after it, and the overflow is
    // noted; the backend's next pass purges (LRU interval 0 here) before it consumes the next request.
    await read(refs[MAX]!);
    expect(f.back.stats.persistentMaps).toBe(MAX);
    expect(mappedOf([refs[MAX]!])).toEqual([]);
    expect(f.back.stats.persistentPurged).toBe(0);
    await read(refs[MAX + 1]!);
    expect(f.back.stats.persistentPurged).toBe(CLEAN);
    expect(f.back.stats.persistentMaps).toBe(MAX + 1); // there was room again
    expect(f.host.grants(0).mapped).toBe(ringGrants + MAX - CLEAN + 1);
    // The purged grants are unmapped: the frontend can revoke them now.
    const purged = refs.slice(0, MAX).filter((r) => mappedOf([r]).length === 0);
    expect(purged.length).toBe(CLEAN);
    for (const r of purged) expect(f.gt.tryEndAccess(r)).toBe(true);
  });

  it("purges the grants not used since the last purge first (LRU), then clears the used marks", async () => {
    const { f, refs, read, mappedOf } = await setup(MAX + 10);
    const ringGrants = f.queues[0]!.refs.length;
    for (const r of refs.slice(0, MAX)) await read(r);
    // Overflow, then the purge of CLEAN grants at the next pass. Every grant was used since the start, so the
    // second scan (grants not in use, used or not) takes them; afterwards no grant carries a used mark.
    await read(refs[MAX]!);
    await read(refs[MAX]!); // purged first, so now there is room: kept
    expect(f.back.stats.persistentPurged).toBe(CLEAN);
    const kept = mappedOf(refs.slice(0, MAX + 1));
    expect(kept.length).toBe(MAX - CLEAN + 1);
    expect(f.host.grants(0).mapped).toBe(ringGrants + MAX - CLEAN + 1);

    // Fill up again, then use a chosen set of the surviving grants: the next purge must spare them.
    for (const r of refs.slice(MAX + 1, MAX + CLEAN)) await read(r);
    expect(f.back.stats.persistentMaps).toBe(MAX + CLEAN);
    const used = kept.slice(0, MAX - 2 * CLEAN);
    for (const r of used) await read(r);
    await read(refs[MAX + CLEAN]!); // overflow
    await read(refs[MAX + CLEAN + 1]!); // the purge runs before this request is consumed
    expect(f.back.stats.persistentPurged).toBe(2 * CLEAN);
    const purged = refs.slice(0, MAX + CLEAN + 1).filter((r) => !mappedOf([r]).length);
    expect(purged.filter((r) => used.includes(r))).toEqual([]);
  });

  it("purges nothing while the grants it would take are in use", async () => {
    const { f, refs, read, push } = await setup(MAX + 1, "async");
    for (const r of refs.slice(0, MAX)) await read(r);
    // One request holding every persistent grant (indirect, MAX segments), in flight on the async engine.
    const ind = f.pages(1, 0);
    const indRef = f.grant(ind);
    for (let i = 0; i < MAX; i++) encodeSegment(f.mem.u8, ind + i * 8, refs[i]!, 0, 7);
    const r = req({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, id: 900, nrSegments: MAX });
    r.indirectGrefs[0] = indRef;
    f.push([r]);
    push(refs[MAX]!); // the table is full: mapped alone, and the overflow is noted
    f.kick(); // a pump with the overflow noted and every grant in use: num_clean > count - in_use
    expect(f.back.stats.persistentPurged).toBe(0);
    await f.settle();
    expect(f.responses().map((x) => x.status)).toEqual([BLKIF_RSP_OKAY, BLKIF_RSP_OKAY]);
    // Once they are back, the pump that answered them purges.
    f.kick();
    expect(f.back.stats.persistentPurged).toBe(CLEAN);
  });
});

describe("indirect pages under persistent grants", () => {
  async function indirectRead(persistent: boolean, indReadOnly: boolean) {
    const f = await rawFrontend({ persistent });
    const data = f.pages(2, 0);
    const d0 = f.grant(data);
    const d1 = f.grant(data + PAGE_SIZE);
    const ind = f.pages(1, 0);
    const indRef = f.grant(ind, indReadOnly);
    encodeSegment(f.mem.u8, ind, d0, 0, 7);
    encodeSegment(f.mem.u8, ind + 8, d1, 0, 7);
    const send = async (id: number) => {
      const r = req({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, id, nrSegments: 2 });
      r.indirectGrefs[0] = indRef;
      f.push([r]);
      await f.settle();
      return f.responses().map((x) => x.status);
    };
    return { f, send, indRef };
  }

  it("maps a reused indirect page once and keeps it (no map/unmap pair per request)", async () => {
    const { f, send, indRef } = await indirectRead(true, false);
    expect(await send(1)).toEqual([BLKIF_RSP_OKAY]);
    const before = f.host.hv.acct.snapshot();
    expect(await send(2)).toEqual([BLKIF_RSP_OKAY]);
    expect(f.host.hv.acct.since(before).grantMap).toBe(0);
    // Still mapped between requests: the frontend cannot revoke it while connected.
    expect(f.gt.tryEndAccess(indRef)).toBe(false);
  });

  it("refuses a read-only indirect page when persistent (Linux maps it writable), accepts it without", async () => {
    const p = await indirectRead(true, true);
    expect(await p.send(1)).toEqual([BLKIF_RSP_ERROR]);
    const np = await indirectRead(false, true);
    expect(await np.send(1)).toEqual([BLKIF_RSP_OKAY]);
    const before = np.f.host.hv.acct.snapshot();
    expect(await np.send(2)).toEqual([BLKIF_RSP_OKAY]);
    // Without persistent grants: mapped for the parse and unmapped after it, every time.
    expect(np.f.host.hv.acct.since(before).grantMap).toBe(3);
    expect(np.f.gt.tryEndAccess(np.indRef)).toBe(true);
  });
});
