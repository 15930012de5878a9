/**
 * A frontend that lies. Every bad input gets the status Linux blkback gives it (xen-protocol notes §4.1,
 * drivers/block/xen-blkback/blkback.c), the ring goes on, and the backend never touches a page the guest did
 * not grant it: such pages are filled with a canary and checked afterwards.
 */
import { describe, expect, it } from "vitest";
import { PAGE_SIZE } from "../../src/hypervisor/index.ts";
import {
  BLKIF_OP_DISCARD,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT,
  BLKIF_OP_READ,
  BLKIF_OP_RESERVED_1,
  BLKIF_OP_WRITE,
  BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  encodeSegment,
} from "../../src/xenblk/abi.ts";
import { makeEngine, rawFrontend, req } from "./helpers.ts";

const CANARY = 0xc5;

function canaryIntact(mem: { u8: Uint8Array }, gpa: number, pages: number): boolean {
  const v = mem.u8.subarray(gpa, gpa + pages * PAGE_SIZE);
  return v.every((b) => b === CANARY);
}

describe("malicious frontend", () => {
  for (const [kind, abi] of [
    ["sync", "x86_64-abi"],
    ["async", "x86_64-abi"],
    ["sync", "x86_32-abi"],
  ] as const) {
    it(`answers every bad request with Linux blkback's status (${kind} engine, ${abi})`, async () => {
      const f = await rawFrontend({ engineKind: kind, persistent: false, protocol: abi });
      expect(f.back.protocol!.abi).toBe(abi);
      const canary = f.pages(4, CANARY); // never granted to dom0
      const dataGpa = f.pages(2, 0x11);
      const ok = f.grant(dataGpa); // a proper read-write grant
      const roGrant = f.grant(dataGpa + PAGE_SIZE, true);
      const toOtherDom = f.grant(canary, false, 7); // granted, but to domain 7
      const revoked = f.grant(canary + PAGE_SIZE);
      expect(f.gt.endAccessRef(revoked)).toBe(true);
      const never = 4000; // a ref nobody filled in
      const beyond = 1 << 20; // past the grant table
      const size = 8192;
      const cases: [string, ReturnType<typeof req>, number, number][] = [
        [
          "unknown op 4",
          req({ operation: BLKIF_OP_RESERVED_1, id: 1 }),
          BLKIF_OP_RESERVED_1,
          BLKIF_RSP_EOPNOTSUPP,
        ],
        ["unknown op 200", req({ operation: 200, id: 2 }), 200, BLKIF_RSP_EOPNOTSUPP],
        [
          "read with 0 segments",
          req({ operation: BLKIF_OP_READ, id: 3, segs: [] }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "12 direct segments",
          req({ operation: BLKIF_OP_READ, id: 4, nrSegments: 12, segs: Array(11).fill([ok, 0, 0]) }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "last_sect 8",
          req({ operation: BLKIF_OP_READ, id: 5, segs: [[ok, 0, 8]] }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "last < first",
          req({ operation: BLKIF_OP_READ, id: 6, segs: [[ok, 3, 2]] }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "range past the end",
          req({ operation: BLKIF_OP_READ, id: 7, sector: size - 4, segs: [[ok, 0, 7]] }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "range wrapping 2^64",
          req({ operation: BLKIF_OP_READ, id: 8, sector: 0xfffffffffffffffcn, segs: [[ok, 0, 7]] }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "grant to another domain",
          req({ operation: BLKIF_OP_READ, id: 9, segs: [[toOtherDom, 0, 7]] }),
          0,
          -1,
        ],
        ["revoked grant", req({ operation: BLKIF_OP_READ, id: 10, segs: [[revoked, 0, 7]] }), 0, -1],
        ["never-granted ref", req({ operation: BLKIF_OP_READ, id: 11, segs: [[never, 0, 7]] }), 0, -1],
        ["ref beyond the table", req({ operation: BLKIF_OP_READ, id: 12, segs: [[beyond, 0, 7]] }), 0, -1],
        // A read must write the page: a read-only grant cannot be mapped for it.
        [
          "read into a read-only grant",
          req({ operation: BLKIF_OP_READ, id: 13, segs: [[roGrant, 0, 7]] }),
          0,
          -1,
        ],
        // One bad segment fails the whole request, and the good one's mapping is undone.
        [
          "good + bad segment",
          req({
            operation: BLKIF_OP_READ,
            id: 14,
            segs: [
              [ok, 0, 7],
              [never, 0, 7],
            ],
          }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "indirect with indirect_op flush",
          req({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_FLUSH_DISKCACHE, id: 15, nrSegments: 1 }),
          BLKIF_OP_FLUSH_DISKCACHE,
          BLKIF_RSP_ERROR,
        ],
        [
          "indirect with 257 segments",
          req({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, id: 16, nrSegments: 257 }),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "indirect page not granted",
          (() => {
            const r = req({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, id: 17, nrSegments: 1 });
            r.indirectGrefs[0] = never;
            return r;
          })(),
          BLKIF_OP_READ,
          BLKIF_RSP_ERROR,
        ],
        [
          "discard past the end",
          req({ operation: BLKIF_OP_DISCARD, id: 18, sector: size - 1, nrSectors: 2 }),
          BLKIF_OP_DISCARD,
          BLKIF_RSP_ERROR,
        ],
        ["valid read after all that", req({ operation: BLKIF_OP_READ, id: 19, segs: [[ok, 0, 7]] }), 0, 0],
      ];
      for (const [what, r, op, status] of cases) {
        f.push([r]);
        await f.settle();
        const got = f.responses();
        expect({ what, got }).toEqual({ what, got: [{ id: r.id, op, status }] });
      }
      expect(canaryIntact(f.mem, canary, 4)).toBe(true);
      // The failed multi-segment request left nothing mapped; every grant can be revoked again.
      expect(f.host.grants(0).mapped).toBe(f.queues[0]!.refs.length);
      expect(f.gt.tryEndAccess(ok)).toBe(true);
    });
  }

  it("indirect segments are validated too, and bad ones never reach a page", async () => {
    const f = await rawFrontend();
    const canary = f.pages(1, CANARY);
    const data = f.pages(1, 0);
    const dataRef = f.grant(data);
    const ind = f.pages(1, 0);
    // Read-write, as Linux blkfront grants indirect pages under persistent grants (blkback maps them writable).
    const indRef = f.grant(ind);
    // Segment 0 fine, segment 1 with last_sect 9 → the whole request fails.
    encodeSegment(f.mem.u8, ind, dataRef, 0, 7);
    encodeSegment(f.mem.u8, ind + 8, f.grant(canary, false, 3), 0, 9);
    const r = req({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, id: 77, nrSegments: 2 });
    r.indirectGrefs[0] = indRef;
    f.push([r]);
    await f.settle();
    expect(f.responses()).toEqual([{ id: 77n, op: BLKIF_OP_READ, status: BLKIF_RSP_ERROR }]);
    // Now a good indirect read: only the granted page is written.
    encodeSegment(f.mem.u8, ind + 8, dataRef, 0, 7);
    f.push([r]);
    await f.settle();
    expect(f.responses()).toEqual([{ id: 77n, op: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    expect(canaryIntact(f.mem, canary, 1)).toBe(true);
  });

  it("refuses writes, flushes, barriers and discards on a read-only device", async () => {
    const { engine } = makeEngine("sync", 8192, true);
    const f = await rawFrontend({ engine, mode: "r" });
    const data = f.pages(1, 7);
    const ref = f.grant(data, true);
    const rd = f.grant(data);
    f.push([
      req({ operation: BLKIF_OP_WRITE, id: 1, segs: [[ref, 0, 7]] }),
      req({ operation: BLKIF_OP_FLUSH_DISKCACHE, id: 2 }),
      req({ operation: BLKIF_OP_WRITE_BARRIER, id: 3 }),
      req({ operation: BLKIF_OP_DISCARD, id: 4, sector: 0, nrSectors: 8 }),
      req({ operation: BLKIF_OP_READ, id: 5, segs: [[rd, 0, 7]] }),
    ]);
    await f.settle();
    expect(f.responses()).toEqual([
      { id: 1n, op: BLKIF_OP_WRITE, status: BLKIF_RSP_ERROR },
      { id: 2n, op: BLKIF_OP_FLUSH_DISKCACHE, status: BLKIF_RSP_ERROR },
      { id: 3n, op: BLKIF_OP_WRITE_BARRIER, status: BLKIF_RSP_ERROR },
      { id: 4n, op: BLKIF_OP_DISCARD, status: BLKIF_RSP_ERROR },
      { id: 5n, op: BLKIF_OP_READ, status: BLKIF_RSP_OKAY },
    ]);
    expect(f.xs.read(`${f.paths.backend}/info`)).toBe("4"); // VDISK_READONLY
  });

  it("an overrun halts that ring only; the other queue keeps working", async () => {
    const f = await rawFrontend({ queues: 2 });
    const data = f.pages(1, 0);
    const ref = f.grant(data);
    const q0 = f.queues[0]!;
    // Publish req_prod 33 ahead of rsp_prod on a 32-slot ring.
    q0.ring.sring.reqProd = 33;
    f.kick(0);
    await f.settle();
    expect(f.back.stats.ringsHalted).toBe(1);
    expect(q0.ring.sring.rspProd).toBe(0);
    f.push([req({ operation: BLKIF_OP_READ, id: 42, segs: [[ref, 0, 7]] })], 1);
    await f.settle();
    expect(f.responses(1)).toEqual([{ id: 42n, op: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    // Ring 0 stays halted even if the frontend repents.
    q0.ring.sring.reqProd = 0;
    f.kick(0);
    await f.settle();
    expect(q0.ring.sring.rspProd).toBe(0);
  });

  it("validates the copy it took, not the slot the frontend rewrites afterwards", async () => {
    // A storage engine that, while the request is in flight, lets the frontend rewrite the slot it came from.
    const { engine, backend } = makeEngine("sync");
    let f!: Awaited<ReturnType<typeof rawFrontend>>;
    const inner = engine.submit.bind(engine);
    let rewritten = false;
    engine.submit = (r) => {
      if (!rewritten) {
        rewritten = true;
        const slot = f.queues[0]!.ring.view.subarray(64, 64 + f.layout.entrySize);
        slot.fill(0xff); // op 255, id all ones, bogus segments
      }
      inner(r);
    };
    f = await rawFrontend({ engine });
    const data = f.pages(1, 0);
    backend.data.fill(0x5a, 0, 4096);
    f.push([req({ operation: BLKIF_OP_READ, id: 1234, segs: [[f.grant(data), 0, 7]] })]);
    await f.settle();
    expect(rewritten).toBe(true);
    // The response's id and op are the ones validated; bytes 9 and 12.. keep the frontend's rewrite (make_response
    // writes id, operation and status only).
    expect(f.responses()).toEqual([{ id: 1234n, op: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    expect(f.mem.u8[data + 100]).toBe(0x5a);
    expect(f.queues[0]!.ring.view[64 + 9]).toBe(0xff);
  });

  it("a frontend running more requests than slots cannot make the backend overwrite unanswered slots", async () => {
    // The async engine keeps requests in flight; req_prod = rsp_prod + 32 is legal, one more is an overrun.
    const f = await rawFrontend({ engineKind: "async" });
    const data = f.pages(32, 0);
    const reqs = Array.from({ length: 32 }, (_, i) =>
      req({ operation: BLKIF_OP_READ, id: i, sector: i * 8, segs: [[f.grant(data + i * PAGE_SIZE), 0, 7]] }),
    );
    f.push(reqs);
    await f.settle();
    const got = f.responses();
    expect(got.length).toBe(32);
    expect(new Set(got.map((r) => r.id)).size).toBe(32);
    expect(got.every((r) => r.status === BLKIF_RSP_OKAY)).toBe(true);
    expect(f.back.stats.ringsHalted).toBe(0);
  });
});
