/**
 * Shared ring semantics against xen/include/public/io/ring.h (Xen 4.17): __RING_SIZE, SHARED_RING_INIT,
 * FRONT/BACK_RING_ATTACH, RING_PUSH_*_AND_CHECK_NOTIFY, RING_FINAL_CHECK_FOR_*, RING_HAS_UNCONSUMED_REQUESTS,
 * RING_*_OVERFLOW, with free-running uint32 indices.
 */
import { describe, expect, it } from "vitest";
import {
  BLKIF_LAYOUT_X86_32,
  BLKIF_LAYOUT_X86_64,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RSP_OKAY,
  BlkifRequest,
  BlkifResponse,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
} from "../../src/xenblk/abi.ts";
import {
  BackRing,
  FrontRing,
  RING_HEADER_SIZE,
  RingLayoutError,
  ringNeedsNotify,
  ringSize,
  sharedRingInit,
} from "../../src/xenblk/ring.ts";

const PAGE = 4096;
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

function ringPages(pages: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(pages * PAGE));
}

/** A connected pair on one fresh ring, both ends attached at `start` (as after BACK_RING_ATTACH). */
function pair(
  pages: number,
  entry: number,
  start = 0,
): { front: FrontRing; back: BackRing; view: Uint8Array } {
  const view = ringPages(pages);
  sharedRingInit(view);
  const front = FrontRing.attachAt(view, entry, start);
  const back = BackRing.attachAt(view, entry, start);
  // A ring resumed at `start` has its shared indices there too.
  front.sring.reqProd = start;
  front.sring.rspProd = start;
  front.sring.reqEvent = (start + 1) >>> 0;
  front.sring.rspEvent = (start + 1) >>> 0;
  return { front, back, view };
}

describe("__RING_SIZE", () => {
  it("blkif rings of 1, 2, 4, 8, 16 pages hold 32, 64, 128, 256, 512 entries in both ABIs (xen-abi const_ring_size)", () => {
    for (const entry of [112, 108]) {
      expect([1, 2, 4, 8, 16].map((p) => ringSize(p, entry))).toEqual([32, 64, 128, 256, 512]);
    }
  });
  it("for 1..16 pages: the largest power of two whose entries fit after the 64-byte header", () => {
    for (const entry of [112, 108]) {
      for (let pages = 1; pages <= 16; pages++) {
        const n = ringSize(pages, entry);
        expect(n & (n - 1)).toBe(0);
        expect(RING_HEADER_SIZE + n * entry).toBeLessThanOrEqual(pages * PAGE);
        expect(RING_HEADER_SIZE + 2 * n * entry).toBeGreaterThan(pages * PAGE);
      }
    }
  });
  it("raw fits before rounding are 36/37 entries for one page (x86_64/x86_32); other rings' entry sizes work too", () => {
    expect(Math.floor((PAGE - 64) / 112)).toBe(36);
    expect(Math.floor((PAGE - 64) / 108)).toBe(37);
    expect(ringSize(1, 16)).toBe(128); // 252 raw -> 128
    expect(ringSize(1, 4032)).toBe(1);
    expect(ringSize(1, 4033)).toBe(0);
  });
});

describe("SHARED_RING_INIT", () => {
  it("req_prod=rsp_prod=0, req_event=rsp_event=1, bytes 16..63 zeroed, entries untouched", () => {
    const view = ringPages(1).fill(0xee);
    sharedRingInit(view);
    expect(hex(view.subarray(0, 64))).toBe(
      "00000000" + "01000000" + "00000000" + "01000000" + "00".repeat(48),
    );
    expect(view.subarray(64).every((b) => b === 0xee)).toBe(true);
  });
  it("FrontRing.init (XEN_FRONT_RING_INIT) initialises and attaches at 0", () => {
    const view = ringPages(2).fill(0x55);
    const f = FrontRing.init(view, 112);
    expect([f.size, f.reqProdPvt, f.rspCons, f.freeRequests()]).toEqual([64, 0, 0, 64]);
    expect([f.sring.reqProd, f.sring.reqEvent, f.sring.rspProd, f.sring.rspEvent]).toEqual([0, 1, 0, 1]);
  });
  it("refuses a misaligned or too small view", () => {
    const buf = new SharedArrayBuffer(2 * PAGE);
    expect(() => new FrontRing(new Uint8Array(buf, 2, PAGE), 112)).toThrow(RingLayoutError);
    expect(() => new BackRing(new Uint8Array(buf, 0, 1000), 112, 1)).toThrow(RingLayoutError);
    expect(() => new BackRing(new Uint8Array(buf, 0, PAGE), 112, 2)).toThrow(RingLayoutError);
  });
});

describe("slots", () => {
  it("index i lives at 64 + (i & (size-1)) * entry, also in the pages after the first", () => {
    const { front, back } = pair(4, 108);
    expect(front.size).toBe(128);
    expect(front.requestOffset(0)).toBe(64);
    expect(front.requestOffset(37)).toBe(64 + 37 * 108); // 4060: straddles into page 1
    expect(front.requestOffset(128 + 5)).toBe(64 + 5 * 108);
    expect(back.requestOffset(0xffffffff)).toBe(64 + 127 * 108);
  });
});

describe("RING_PUSH_*_AND_CHECK_NOTIFY truth table", () => {
  /** The documented meaning: notify iff the peer's event index is one of old+1 .. new. */
  function eventInPushedRange(old: number, nu: number, event: number): boolean {
    const n = (nu - old) >>> 0;
    for (let k = 1; k <= n; k++) if ((old + k) >>> 0 === event >>> 0) return true;
    return false;
  }
  for (const base of [0, 1000, 0xfffffff8]) {
    it(`every (old, new, event) in a window at ${base.toString(16)}`, () => {
      const { front, back } = pair(1, 112, base);
      for (let dOld = 0; dOld < 6; dOld++) {
        for (let dNew = dOld; dNew < dOld + 6; dNew++) {
          for (let dEv = -2; dEv < 14; dEv++) {
            const old = (base + dOld) >>> 0;
            const nu = (base + dNew) >>> 0;
            const ev = (base + dEv) >>> 0;
            const want = eventInPushedRange(old, nu, ev);
            expect(ringNeedsNotify(old, nu, ev)).toBe(want);
            // Requests: the frontend publishes req_prod and reads the backend's req_event.
            front.sring.reqProd = old;
            front.sring.reqEvent = ev;
            front.reqProdPvt = nu;
            expect(front.pushRequestsAndCheckNotify()).toBe(want);
            expect(front.sring.reqProd).toBe(nu);
            // Responses: the backend publishes rsp_prod and reads the frontend's rsp_event.
            back.sring.rspProd = old;
            back.sring.rspEvent = ev;
            back.rspProdPvt = nu;
            expect(back.pushResponsesAndCheckNotify()).toBe(want);
            expect(back.sring.rspProd).toBe(nu);
          }
        }
      }
    });
  }
  it("pushing nothing never notifies; the plain PUSH publishes without looking at the event", () => {
    const { front, back } = pair(1, 112);
    expect(front.pushRequestsAndCheckNotify()).toBe(false);
    front.reqProdPvt = 3;
    front.sring.reqEvent = 99;
    front.pushRequests();
    expect(front.sring.reqProd).toBe(3);
    back.rspProdPvt = 2;
    back.pushResponses();
    expect(back.sring.rspProd).toBe(2);
  });
});

describe("RING_FINAL_CHECK_FOR_*", () => {
  it("requests: with work pending, req_event is left alone; when idle, req_event = req_cons + 1", () => {
    const { front, back } = pair(1, 112, 0xfffffffe);
    front.reqProdPvt = (front.reqProdPvt + 3) >>> 0;
    front.pushRequests();
    back.sring.reqEvent = 12345;
    expect(back.finalCheckForRequests()).toBe(3);
    expect(back.sring.reqEvent).toBe(12345);
    back.reqCons = (back.reqCons + 3) >>> 0; // consumed: now at 1 after wrapping
    expect(back.reqCons).toBe(1);
    expect(back.finalCheckForRequests()).toBe(0);
    expect(back.sring.reqEvent).toBe(2);
    // The next request pushed is exactly the one that notifies.
    front.reqProdPvt = (front.reqProdPvt + 1) >>> 0;
    expect(front.pushRequestsAndCheckNotify()).toBe(true);
    front.reqProdPvt = (front.reqProdPvt + 1) >>> 0;
    expect(front.pushRequestsAndCheckNotify()).toBe(false);
  });
  it("responses: same with rsp_event = rsp_cons + 1", () => {
    const { front, back } = pair(1, 112, 0xffffffff);
    back.rspProdPvt = (back.rspProdPvt + 2) >>> 0;
    back.pushResponses();
    front.sring.rspEvent = 777;
    expect(front.finalCheckForResponses()).toBe(2);
    expect(front.sring.rspEvent).toBe(777);
    front.rspCons = (front.rspCons + 2) >>> 0;
    expect(front.finalCheckForResponses()).toBe(0);
    expect(front.sring.rspEvent).toBe(2);
    back.rspProdPvt = (back.rspProdPvt + 1) >>> 0;
    expect(back.pushResponsesAndCheckNotify()).toBe(true);
  });
});

describe("RING_FINAL_CHECK_FOR_* closes the race with a peer publishing while the event is re-armed", () => {
  /** Make the peer publish `n` more entries at the moment the event index is written. */
  function peerPublishesOnEventWrite(
    sring: object,
    eventField: "reqEvent" | "rspEvent",
    prodField: "reqProd" | "rspProd",
  ): void {
    const proto = Object.getPrototypeOf(sring) as object;
    const ev = Object.getOwnPropertyDescriptor(proto, eventField)!;
    const prod = Object.getOwnPropertyDescriptor(proto, prodField)!;
    Object.defineProperty(sring, eventField, {
      get: ev.get,
      set(v: number) {
        ev.set!.call(this, v);
        prod.set!.call(this, ((prod.get!.call(this) as number) + 1) >>> 0);
      },
    });
  }
  it("responses: the second look finds the response pushed in between", () => {
    const { front } = pair(1, 112, 0xffffffff);
    peerPublishesOnEventWrite(front.sring, "rspEvent", "rspProd");
    expect(front.finalCheckForResponses()).toBe(1);
    expect(front.sring.rspEvent).toBe(0); // re-armed at rsp_cons + 1, wrapped
  });
  it("requests: likewise for the backend", () => {
    const { back } = pair(1, 112, 0xffffffff);
    peerPublishesOnEventWrite(back.sring, "reqEvent", "reqProd");
    expect(back.finalCheckForRequests()).toBe(1);
    expect(back.sring.reqEvent).toBe(0);
  });
});

describe("RING_HAS_UNCONSUMED_REQUESTS and overflow checks", () => {
  it("unconsumed requests = min(req_prod - req_cons, RING_SIZE - (req_cons - rsp_prod_pvt))", () => {
    const { back } = pair(1, 112, 0xfffffff0);
    const s = back.sring;
    s.reqProd = 0xfffffff0 + 5;
    expect(back.unconsumedRequests()).toBe(5);
    // A frontend claiming 1000 requests: bounded by the slots not owed a response.
    s.reqProd = (0xfffffff0 + 1000) >>> 0;
    expect(back.unconsumedRequests()).toBe(32);
    back.reqCons = (back.reqCons + 20) >>> 0;
    expect(back.unconsumedRequests()).toBe(12);
    back.rspProdPvt = (back.rspProdPvt + 4) >>> 0;
    expect(back.unconsumedRequests()).toBe(16);
  });
  it("RING_REQUEST_PROD_OVERFLOW: (prod - rsp_prod_pvt) > RING_SIZE, across 2^32", () => {
    const { back } = pair(1, 112, 0xfffffff0);
    expect(back.requestProdOverflow((0xfffffff0 + 32) >>> 0)).toBe(false);
    expect(back.requestProdOverflow((0xfffffff0 + 33) >>> 0)).toBe(true);
    expect(back.requestProdOverflow(0xffffffef)).toBe(true); // behind rsp_prod_pvt: a huge unsigned distance
  });
  it("RING_REQUEST_CONS_OVERFLOW: (cons - rsp_prod_pvt) >= RING_SIZE", () => {
    const { back } = pair(1, 112, 0xffffffff);
    back.reqCons = (0xffffffff + 31) >>> 0;
    expect(back.requestConsOverflow()).toBe(false);
    back.reqCons = (0xffffffff + 32) >>> 0;
    expect(back.requestConsOverflow()).toBe(true);
  });
  it("RING_RESPONSE_PROD_OVERFLOW: (prod - rsp_cons) > RING_SIZE", () => {
    const { front } = pair(2, 108, 0xffffffc0);
    expect(front.responseProdOverflow((0xffffffc0 + 64) >>> 0)).toBe(false);
    expect(front.responseProdOverflow((0xffffffc0 + 65) >>> 0)).toBe(true);
  });
  it("RING_FREE_REQUESTS / RING_FULL", () => {
    const { front } = pair(1, 112, 0xfffffff0);
    for (let i = 0; i < 32; i++) {
      expect(front.freeRequests()).toBe(32 - i);
      front.nextRequest();
    }
    expect(front.full()).toBe(true);
    front.nextResponse();
    expect(front.freeRequests()).toBe(1);
  });
});

describe("a full exchange across 2^32 with out-of-order completion", () => {
  for (const [pages, L] of [
    [1, BLKIF_LAYOUT_X86_64],
    [2, BLKIF_LAYOUT_X86_32],
    [16, BLKIF_LAYOUT_X86_64],
    [8, BLKIF_LAYOUT_X86_32],
  ] as const) {
    it(`${pages} page(s), ${L.abi}`, () => {
      const start = 0xffffffff - 3 * ringSize(pages, L.entrySize);
      const { front, back, view } = pair(pages, L.entrySize, start);
      const size = front.size;
      const q = new BlkifRequest();
      const rsp = new BlkifResponse();
      const outstanding = new Set<number>();
      const done = new Set<number>();
      const held: BlkifRequest[] = [];
      let nextId = 0;
      let notifiesToBack = 0;
      let notifiesToFront = 0;
      const total = 8 * size;
      let rnd = 12345;
      const rand = (n: number): number => ((rnd = (rnd * 1103515245 + 12345) >>> 0) >>> 8) % n;
      while (done.size < total) {
        // Frontend: a random batch of requests, then one push.
        let batch = rand(size) + 1;
        while (batch-- > 0 && !front.full() && nextId < total) {
          q.clear();
          q.operation = nextId % 2 ? BLKIF_OP_WRITE : BLKIF_OP_READ;
          q.id = BigInt(nextId) | (BigInt(nextId) << 40n);
          q.sector = nextId * 8;
          q.nrSegments = 1;
          q.setSegment(0, nextId, 0, 7);
          encodeRequest(L, view, front.nextRequest(), q);
          outstanding.add(nextId++);
        }
        if (front.pushRequestsAndCheckNotify()) notifiesToBack++;
        // Backend: drain what it is allowed to see, hold the requests, then complete a random subset.
        do {
          const prod = back.sring.reqProd;
          expect(back.requestProdOverflow(prod)).toBe(false);
          while (back.unconsumedRequests() > 0) {
            expect(back.requestConsOverflow()).toBe(false);
            held.push(decodeRequest(L, view, back.nextRequest(), new BlkifRequest()));
          }
        } while (back.finalCheckForRequests() > 0);
        let n = rand(held.length + 1);
        while (n-- > 0) {
          const r = held.splice(rand(held.length), 1)[0]!;
          encodeResponse(view, back.nextResponse(), r.idLo, r.idHi, r.operation, BLKIF_RSP_OKAY);
          if (back.pushResponsesAndCheckNotify()) notifiesToFront++;
        }
        // Frontend: consume responses until the final check says the ring is empty.
        do {
          expect(front.responseProdOverflow(front.sring.rspProd)).toBe(false);
          while (front.unconsumedResponses() > 0) {
            decodeResponse(view, front.nextResponse(), rsp);
            const id = rsp.idLo; // the low half carries nextId, the high half a shifted copy
            expect(rsp.id).toBe(BigInt(id) | (BigInt(id) << 40n));
            expect(rsp.operation).toBe(id % 2 ? BLKIF_OP_WRITE : BLKIF_OP_READ);
            expect(outstanding.delete(id)).toBe(true);
            expect(done.has(id)).toBe(false);
            done.add(id);
          }
        } while (front.finalCheckForResponses() > 0);
      }
      expect(outstanding.size).toBe(0);
      // The indices crossed 2^32 and came out small.
      expect(front.reqProdPvt).toBeLessThan(start);
      expect(back.rspProdPvt).toBe(front.rspCons);
      // Event indices suppressed most notifications: far fewer than one per request or response.
      expect(notifiesToBack).toBeGreaterThan(0);
      expect(notifiesToFront).toBeGreaterThan(0);
      expect(notifiesToFront).toBeLessThan(total);
    });
  }
});
