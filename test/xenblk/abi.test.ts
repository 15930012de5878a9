/**
 * blkif wire format against the layouts of Xen's public headers (xen/include/public/io/blkif.h, Xen 4.17).
 * The expected bytes below were written out by hand from the struct offsets the header gives when compiled
 * natively (x86_64-abi) and with `gcc -m32` (x86_32-abi, where uint64_t is 4-byte aligned inside structs):
 *
 *   blkif_request           x86_64: op 0, nr_segments 1, handle 2, id 8, sector_number 16, seg[11] 24 (112 B)
 *                           x86_32: op 0, nr_segments 1, handle 2, id 4, sector_number 12, seg[11] 20 (108 B)
 *   blkif_request_segment   gref u32 0, first_sect u8 4, last_sect u8 5, 2 bytes padding (8 B)
 *   blkif_request_discard   x86_64: flag 1, id 8, sector 16, nr_sectors 24 (32 B); x86_32: id 4, 12, 20 (28 B)
 *   blkif_request_indirect  x86_64: indirect_op 1, nr_segments u16 2, id 8, sector 16, handle 24, grefs 28
 *                           x86_32: indirect_op 1, nr_segments u16 2, id 4, sector 12, handle 20, grefs 24
 *   blkif_response          id u64 0, operation u8 8, status s16 10 (16 B x86_64, 12 B x86_32)
 */
import { describe, expect, it } from "vitest";
import {
  BLKIF_DISCARD_SECURE,
  BLKIF_LAYOUT_X86_32,
  BLKIF_LAYOUT_X86_64,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
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
  BlkifRequest,
  BlkifResponse,
  blkifLayout,
  decodeRequest,
  decodeResponse,
  decodeSegments,
  encodeRequest,
  encodeResponse,
  encodeSegment,
  GNTST_bad_gntref,
  GNTST_general_error,
  GNTST_no_space,
  GNTST_permission_denied,
  GTF_permit_access,
  GTF_readonly,
  GTF_reading,
  GTF_writing,
  indirectPages,
  parseBlkifProtocol,
  SEGS_PER_INDIRECT_FRAME,
  XenbusState,
} from "../../src/xenblk/abi.ts";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const z = (n: number): string => "00".repeat(n);

const ID = 0x0123456789abcdefn; // little-endian: ef cd ab 89 67 45 23 01
const ID_LE = "efcdab8967452301";
const SECTOR = 0x1122334455667788n; // little-endian: 88 77 66 55 44 33 22 11
const SECTOR_LE = "8877665544332211";

function rwRequest(): BlkifRequest {
  const r = new BlkifRequest();
  r.operation = BLKIF_OP_READ;
  r.nrSegments = 2;
  r.handle = 51712; // xvda = 202<<8 (docs/misc/vbd-interface.txt) = 0xca00
  r.id = ID;
  r.sector = SECTOR;
  r.setSegment(0, 0x1234, 1, 6);
  r.setSegment(1, 0xdeadbeef, 0, 7);
  return r;
}

describe("blkif constants (io/blkif.h, grant_table.h, io/xenbus.h)", () => {
  it("operations, statuses and limits have the header's values", () => {
    expect([
      BLKIF_OP_READ,
      BLKIF_OP_WRITE,
      BLKIF_OP_WRITE_BARRIER,
      BLKIF_OP_FLUSH_DISKCACHE,
      BLKIF_OP_RESERVED_1,
      BLKIF_OP_DISCARD,
      BLKIF_OP_INDIRECT,
    ]).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect([BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP]).toEqual([0, -1, -2]);
    expect(BLKIF_MAX_SEGMENTS_PER_REQUEST).toBe(11);
    expect(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST).toBe(8);
    expect(BLKIF_DISCARD_SECURE).toBe(1);
    expect(SEGS_PER_INDIRECT_FRAME).toBe(512); // PAGE_SIZE / sizeof(struct blkif_request_segment)
    expect([indirectPages(1), indirectPages(512), indirectPages(513), indirectPages(4096)]).toEqual([
      1, 1, 2, 8,
    ]);
  });
  it("grant and xenbus constants", () => {
    expect([GTF_permit_access, GTF_readonly, GTF_reading, GTF_writing]).toEqual([1, 4, 8, 16]);
    expect([GNTST_general_error, GNTST_bad_gntref, GNTST_permission_denied, GNTST_no_space]).toEqual([
      -1, -3, -8, -13,
    ]);
    expect(Object.values(XenbusState)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(XenbusState.InitWait).toBe(2);
    expect(XenbusState.Connected).toBe(4);
  });
  it("protocol key: absent means x86_32-abi (Linux BLKIF_PROTOCOL_DEFAULT on x86); unknown is refused", () => {
    expect(parseBlkifProtocol(undefined)).toBe("x86_32-abi");
    expect(parseBlkifProtocol("x86_32-abi")).toBe("x86_32-abi");
    expect(parseBlkifProtocol("x86_64-abi")).toBe("x86_64-abi");
    expect(parseBlkifProtocol("arm-abi")).toBeNull();
    expect(parseBlkifProtocol("x86_64-abi\0")).toBeNull();
  });
  it("layout sizes: request 112/108, response 16/12, ring entry = request", () => {
    expect(blkifLayout("x86_64-abi")).toBe(BLKIF_LAYOUT_X86_64);
    expect(blkifLayout("x86_32-abi")).toBe(BLKIF_LAYOUT_X86_32);
    expect([
      BLKIF_LAYOUT_X86_64.requestSize,
      BLKIF_LAYOUT_X86_64.responseSize,
      BLKIF_LAYOUT_X86_64.entrySize,
    ]).toEqual([112, 16, 112]);
    expect([
      BLKIF_LAYOUT_X86_32.requestSize,
      BLKIF_LAYOUT_X86_32.responseSize,
      BLKIF_LAYOUT_X86_32.entrySize,
    ]).toEqual([108, 12, 108]);
  });
});

describe("blkif_request_segment (8 bytes)", () => {
  it("gref 0x1234, sectors 1..6 encodes as 34120000 01 06 0000", () => {
    const b = new Uint8Array(8).fill(0xaa);
    encodeSegment(b, 0, 0x1234, 1, 6);
    expect(hex(b)).toBe("3412000001060000");
    const g = new Uint32Array(2);
    const f = new Uint8Array(2);
    const l = new Uint8Array(2);
    decodeSegments(unhex("3412000001060000 efbeadde00070000"), 0, 2, g, f, l);
    expect([...g]).toEqual([0x1234, 0xdeadbeef]);
    expect([...f]).toEqual([1, 0]);
    expect([...l]).toEqual([6, 7]);
  });
});

describe("read/write request layout", () => {
  const SEG0 = "3412000001060000";
  const SEG1 = "efbeadde00070000";
  it("x86_64-abi: 112 bytes, id @8, sector @16, segments @24, whole slot overwritten", () => {
    const slot = new Uint8Array(112).fill(0xaa);
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, rwRequest());
    expect(hex(slot)).toBe("000200ca" + z(4) + ID_LE + SECTOR_LE + SEG0 + SEG1 + z(112 - 40));
  });
  it("x86_32-abi: 108 bytes, id @4, sector @12, segments @20", () => {
    const slot = new Uint8Array(108 + 4).fill(0xaa);
    encodeRequest(BLKIF_LAYOUT_X86_32, slot, 0, rwRequest());
    // The 4 bytes after the 108-byte slot belong to the next entry and must not be touched.
    expect(hex(slot)).toBe("000200ca" + ID_LE + SECTOR_LE + SEG0 + SEG1 + z(108 - 36) + "aaaaaaaa");
  });
  it("decodes what it encodes in both ABIs, at an unaligned slot offset", () => {
    for (const L of [BLKIF_LAYOUT_X86_64, BLKIF_LAYOUT_X86_32]) {
      const buf = new Uint8Array(300);
      const w = rwRequest();
      w.operation = BLKIF_OP_WRITE;
      w.nrSegments = 11;
      for (let i = 0; i < 11; i++) w.setSegment(i, 1000 + i, i % 8, 7);
      encodeRequest(L, buf, 64 + 108, w);
      const r = decodeRequest(L, buf, 64 + 108, new BlkifRequest());
      expect(r.operation).toBe(BLKIF_OP_WRITE);
      expect(r.nrSegments).toBe(11);
      expect(r.handle).toBe(51712);
      expect(r.id).toBe(ID);
      expect([r.idLo, r.idHi]).toEqual([0x89abcdef, 0x01234567]);
      expect([r.sectorLo, r.sectorHi]).toEqual([0x55667788, 0x11223344]);
      expect([...r.segGref]).toEqual([...w.segGref]);
      expect([...r.segFirst]).toEqual([...w.segFirst]);
      expect([...r.segLast]).toEqual([...w.segLast]);
    }
  });
  it("decoding is a snapshot: changing the slot afterwards does not change the decoded request", () => {
    const slot = new Uint8Array(112);
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, rwRequest());
    const r = decodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, new BlkifRequest());
    slot.fill(0xff);
    expect(r.nrSegments).toBe(2);
    expect(r.segGref[1]).toBe(0xdeadbeef);
  });
  it("a bogus nr_segments (> 11) is kept as sent, and only 11 segments exist to read", () => {
    const slot = unhex("01ff0000" + z(4) + ID_LE + SECTOR_LE + "07000000000700ff".repeat(11));
    const r = decodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, new BlkifRequest());
    expect(r.nrSegments).toBe(255);
    expect(r.segGref[10]).toBe(7);
  });
  it("sector numbers: exact below 2^53; u64 maximum survives a round trip as lo/hi", () => {
    const r = new BlkifRequest();
    r.sector = 2 ** 53 - 1;
    expect([r.sectorLo, r.sectorHi]).toEqual([0xffffffff, 0x1fffff]);
    expect(r.sector).toBe(2 ** 53 - 1);
    r.sector = 0xffffffffffffffffn;
    const slot = new Uint8Array(112);
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, r);
    expect(hex(slot.subarray(16, 24))).toBe("ffffffffffffffff");
    expect(() => {
      r.sector = -1;
    }).toThrow(RangeError);
    expect(() => {
      r.id = 1n << 64n;
    }).toThrow(RangeError);
  });
});

describe("discard request layout (blkif_request_discard)", () => {
  function discard(): BlkifRequest {
    const r = new BlkifRequest();
    r.operation = BLKIF_OP_DISCARD;
    r.flag = BLKIF_DISCARD_SECURE;
    r.handle = 51712;
    r.id = ID;
    r.sector = SECTOR;
    r.nrSectors = 0x0000000100000800n; // 2^32 + 2048
    return r;
  }
  const NR_LE = "0008000001000000";
  it("x86_64-abi: flag @1, nr_sectors @24, rest of the 112-byte slot zeroed", () => {
    const slot = new Uint8Array(112).fill(0xaa);
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, discard());
    expect(hex(slot)).toBe("050100ca" + z(4) + ID_LE + SECTOR_LE + NR_LE + z(112 - 32));
  });
  it("x86_32-abi: id @4, sector @12, nr_sectors @20", () => {
    const slot = new Uint8Array(108).fill(0xaa);
    encodeRequest(BLKIF_LAYOUT_X86_32, slot, 0, discard());
    expect(hex(slot)).toBe("050100ca" + ID_LE + SECTOR_LE + NR_LE + z(108 - 28));
  });
  it("round trip", () => {
    for (const L of [BLKIF_LAYOUT_X86_64, BLKIF_LAYOUT_X86_32]) {
      const slot = new Uint8Array(112);
      encodeRequest(L, slot, 0, discard());
      const r = decodeRequest(L, slot, 0, new BlkifRequest());
      expect([r.operation, r.flag, r.handle, r.nrSectors, r.sector]).toEqual([
        5,
        1,
        51712,
        2 ** 32 + 2048,
        Number(SECTOR),
      ]);
      expect(r.id).toBe(ID);
    }
  });
});

describe("indirect request layout (blkif_request_indirect)", () => {
  function indirect(): BlkifRequest {
    const r = new BlkifRequest();
    r.operation = BLKIF_OP_INDIRECT;
    r.indirectOp = BLKIF_OP_WRITE;
    r.nrSegments = 256;
    r.handle = 51712;
    r.id = ID;
    r.sector = SECTOR;
    for (let i = 0; i < 8; i++) r.indirectGrefs[i] = 0x100 + i;
    return r;
  }
  const GREFS = [0, 1, 2, 3, 4, 5, 6, 7]
    .map((i) => (0x100 + i).toString(16).padStart(4, "0"))
    .map((h) => h.slice(2) + h.slice(0, 2) + "0000")
    .join("");
  it("x86_64-abi: nr_segments u16 @2, id @8, sector @16, handle @24, grefs @28", () => {
    expect(GREFS.slice(0, 8)).toBe("00010000");
    const slot = new Uint8Array(112).fill(0xaa);
    encodeRequest(BLKIF_LAYOUT_X86_64, slot, 0, indirect());
    expect(hex(slot)).toBe(
      "0601" + "0001" + z(4) + ID_LE + SECTOR_LE + "00ca" + z(2) + GREFS + z(4) + z(112 - 64),
    );
  });
  it("x86_32-abi: id @4, sector @12, handle @20, grefs @24, padding to 64", () => {
    const slot = new Uint8Array(108).fill(0xaa);
    encodeRequest(BLKIF_LAYOUT_X86_32, slot, 0, indirect());
    expect(hex(slot)).toBe("0601" + "0001" + ID_LE + SECTOR_LE + "00ca" + z(2) + GREFS + z(8) + z(108 - 64));
  });
  it("round trip", () => {
    for (const L of [BLKIF_LAYOUT_X86_64, BLKIF_LAYOUT_X86_32]) {
      const slot = new Uint8Array(112);
      encodeRequest(L, slot, 0, indirect());
      const r = decodeRequest(L, slot, 0, new BlkifRequest());
      expect([r.operation, r.indirectOp, r.nrSegments, r.handle]).toEqual([6, 1, 256, 51712]);
      expect([...r.indirectGrefs]).toEqual([0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107]);
      expect(r.id).toBe(ID);
      expect(r.sector).toBe(Number(SECTOR));
    }
  });
});

describe("unknown operations", () => {
  it("decode only operation and id (u.other.id), which is what an EOPNOTSUPP answer needs", () => {
    for (const L of [BLKIF_LAYOUT_X86_64, BLKIF_LAYOUT_X86_32]) {
      const slot = new Uint8Array(112);
      slot[0] = 0x7f;
      slot.set(unhex(ID_LE), L.reqId);
      const r = new BlkifRequest();
      r.nrSegments = 9;
      decodeRequest(L, slot, 0, r);
      expect(r.operation).toBe(0x7f);
      expect(r.id).toBe(ID);
      expect(r.nrSegments).toBe(9); // untouched
    }
  });
});

describe("blkif_response", () => {
  it("writes id, operation and status only; byte 9 and bytes 12.. keep the request's bytes", () => {
    const slot = new Uint8Array(16).fill(0xaa);
    encodeResponse(slot, 0, 0x89abcdef, 0x01234567, BLKIF_OP_WRITE, BLKIF_RSP_ERROR);
    expect(hex(slot)).toBe(ID_LE + "01" + "aa" + "ffff" + "aaaaaaaa");
    encodeResponse(slot, 0, 1, 0, BLKIF_OP_INDIRECT, BLKIF_RSP_EOPNOTSUPP);
    expect(hex(slot)).toBe("0100000000000000" + "06" + "aa" + "feff" + "aaaaaaaa");
  });
  it("decodes a signed status and the exact 64-bit id", () => {
    const r = decodeResponse(unhex(ID_LE + "00" + "aa" + "feff" + "aaaa"), 0, new BlkifResponse());
    expect(r.id).toBe(ID);
    expect(r.operation).toBe(0);
    expect(r.status).toBe(-2);
    decodeResponse(unhex(ID_LE + "03" + "00" + "0000"), 0, r);
    expect([r.operation, r.status]).toEqual([3, BLKIF_RSP_OKAY]);
  });
  it("a backend echoes a decoded request's id bit for bit, including the high half", () => {
    const L = BLKIF_LAYOUT_X86_32;
    const ring = new Uint8Array(108);
    const q = rwRequest();
    q.id = 0xffffffff00000001n;
    encodeRequest(L, ring, 0, q);
    const req = decodeRequest(L, ring, 0, new BlkifRequest());
    encodeResponse(ring, 0, req.idLo, req.idHi, req.operation, BLKIF_RSP_OKAY);
    expect(decodeResponse(ring, 0, new BlkifResponse()).id).toBe(0xffffffff00000001n);
  });
});
