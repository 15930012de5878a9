/**
 * The word-wide and plain-access paths of the ring: encodeRequest writes an aligned slot in 32-bit words and
 * any other slot byte by byte, and both must give blkif.h's bytes; a ring or event-channel domain that no
 * other thread can see uses plain accesses instead of Atomics and must behave the same.
 */
import { describe, expect, it } from "vitest";
import { EventChannelDomain } from "../../src/hypervisor/event-channel.ts";
import {
  BLKIF_LAYOUT_X86_32,
  BLKIF_LAYOUT_X86_64,
  BLKIF_OP_DISCARD,
  BLKIF_OP_INDIRECT,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BlkifRequest,
  type BlkifLayout,
  encodeRequest,
} from "../../src/xenblk/abi.ts";
import { BackRing, FrontRing, SHARED_ACROSS_THREADS } from "../../src/xenblk/ring.ts";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** Requests of every shape, with values whose high bits the narrow fields must drop. */
function requests(): BlkifRequest[] {
  const rw = new BlkifRequest();
  rw.operation = BLKIF_OP_WRITE;
  rw.nrSegments = 11;
  rw.handle = 0x1caca; // u16 field: 0xcaca
  rw.idLo = 0x89abcdef;
  rw.idHi = 0x01234567;
  rw.sectorLo = 0x55667788;
  rw.sectorHi = 0x11223344;
  for (let i = 0; i < 11; i++) rw.setSegment(i, 0xdead0000 + i, i % 8, 7);
  const discard = new BlkifRequest();
  discard.operation = BLKIF_OP_DISCARD;
  discard.flag = 1;
  discard.handle = 0x0102;
  discard.idLo = 7;
  discard.sector = 0x1_0000_0010;
  discard.nrSectorsLo = 0x800;
  discard.nrSectorsHi = 2;
  const indirect = new BlkifRequest();
  indirect.operation = BLKIF_OP_INDIRECT;
  indirect.indirectOp = BLKIF_OP_READ;
  indirect.nrSegments = 300;
  indirect.handle = 0x3344;
  indirect.idLo = 0xffffffff;
  indirect.sector = 12345;
  for (let i = 0; i < indirect.indirectGrefs.length; i++) indirect.indirectGrefs[i] = 0x100 + i;
  const unknown = new BlkifRequest();
  unknown.operation = 0x1ff; // one byte on the wire: 0xff
  unknown.idLo = 42;
  // Fewer segments: the unused ones must still be cleared over whatever the slot held.
  const few = new BlkifRequest().copyFrom(rw);
  few.operation = BLKIF_OP_READ;
  few.nrSegments = 2;
  const nan = new BlkifRequest().copyFrom(rw);
  nan.nrSegments = Number.NaN;
  return [rw, discard, indirect, unknown, few, nan];
}

describe("encodeRequest: 32-bit words on an aligned slot, bytes elsewhere, the same bytes", () => {
  for (const L of [BLKIF_LAYOUT_X86_64, BLKIF_LAYOUT_X86_32] as BlkifLayout[]) {
    it(`${L.abi}: every request shape`, () => {
      for (const req of requests()) {
        // Aligned, in shared memory as a ring is (words), and one byte off (bytes); neighbours untouched.
        const shared = new Uint8Array(new SharedArrayBuffer(512)).fill(0xaa);
        const odd = new Uint8Array(513).fill(0xaa);
        encodeRequest(L, shared, 64, req);
        encodeRequest(L, odd, 65, req);
        expect(hex(shared.subarray(64, 64 + L.requestSize))).toBe(hex(odd.subarray(65, 65 + L.requestSize)));
        expect(shared[63]).toBe(0xaa);
        expect(shared[64 + L.requestSize]).toBe(0xaa);
      }
    });
  }
  it("x86_64-abi discard and indirect bytes (blkif_request_discard / blkif_request_indirect)", () => {
    const [, discard, indirect] = requests();
    const slot = new Uint8Array(new SharedArrayBuffer(112));
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, discard!);
    // op 5, flag 1, handle 0x0102, pad, id 7, sector 0x1_0000_0010, nr_sectors 0x2_0000_0800, rest zero.
    expect(hex(slot.subarray(0, 32))).toBe(
      "05010201" + "00000000" + "0700000000000000" + "1000000001000000" + "0008000002000000",
    );
    expect(slot.subarray(32).every((b) => b === 0)).toBe(true);
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, indirect!);
    // op 6, indirect_op 0, nr_segments 300 (u16), pad, id, sector, handle @24, indirect_grefs @28.
    expect(hex(slot.subarray(0, 36))).toBe(
      "06002c01" +
        "00000000" +
        "ffffffff00000000" +
        "3930000000000000" +
        "44330000" +
        "00010000" +
        "01010000",
    );
  });
  it("a slot that runs past the view is written byte by byte, up to the view's end only", () => {
    const [rw] = requests();
    const view = new Uint8Array(new SharedArrayBuffer(256), 0, 100);
    encodeRequest(BLKIF_LAYOUT_X86_64, view, 0, rw!);
    expect(new Uint8Array(view.buffer, 100, 12).every((b) => b === 0)).toBe(true);
    expect(view[0]).toBe(BLKIF_OP_WRITE);
  });
});

describe("plain accesses while no other thread can see the ring or the event channels", () => {
  it("a ring end on plain accesses publishes what an Atomics end reads, and back", () => {
    const view = new Uint8Array(new SharedArrayBuffer(4096));
    const front = FrontRing.init(view, 112);
    const back = new BackRing(view, 112);
    const local = { crossThread: false };
    front.sring.sharing = local;
    expect(back.sring.sharing).toBe(SHARED_ACROSS_THREADS);
    front.nextRequest();
    front.nextRequest();
    // req_event starts at 1: the first push must notify.
    expect(front.pushRequestsAndCheckNotify()).toBe(true);
    expect(back.unconsumedRequests()).toBe(2);
    back.nextRequest();
    back.nextResponse();
    expect(back.pushResponsesAndCheckNotify()).toBe(true);
    expect(front.unconsumedResponses()).toBe(1);
    // Going cross-thread later switches the same end to Atomics; the indices carry on.
    local.crossThread = true;
    front.nextRequest();
    front.pushRequestsAndCheckNotify();
    expect(back.unconsumedRequests()).toBe(2);
    expect(new Uint32Array(view.buffer, 0, 4)[0]).toBe(3);
  });
  it("an event-channel domain gives the same pending, selector and upcall bits either way", () => {
    const results = [false, true].map((crossThread) => {
      const d = new EventChannelDomain(1, undefined, crossThread);
      const seen: number[] = [];
      expect(d.setPending(5)).toBe(false);
      expect(d.setPending(5)).toBe(true); // coalesced
      d.setPending(40);
      d.setMask(40, true);
      expect(d.raiseUpcall()).toBe(true);
      expect(d.raiseUpcall()).toBe(false);
      d.takeUpcall();
      d.takePending(seen);
      // 40 is masked: it stays pending and keeps its selector bit for the unmask.
      expect(d.isPending(40)).toBe(true);
      d.setMask(40, false);
      d.takePending(seen);
      return { seen, words: [...d.w.subarray(0, 8 + 64)] }; // upcall, selector, pending and mask words
    });
    expect(results[0]!.seen).toEqual([5, 40]);
    expect(results[0]).toEqual(results[1]);
  });
});
