import { describe, expect, it } from "vitest";

import {
  decodeSegments,
  decodeSegmentsWords,
  encodeSegment,
  encodeSegmentWords,
} from "../../src/xenblk/abi.ts";

// xen/include/public/io/blkif.h: struct blkif_request_segment { grant_ref_t gref; uint8_t first_sect,
// last_sect; } — 8 bytes with 2 bytes of tail padding, little-endian on x86.
describe("segment descriptors by 32-bit words", () => {
  it("writes the bytes blkif.h lays out, padding zeroed", () => {
    const bytes = new Uint8Array(16).fill(0xee);
    encodeSegmentWords(new Uint32Array(bytes.buffer), 2, 0x12345678, 1, 7);
    expect([...bytes.subarray(8, 16)]).toEqual([0x78, 0x56, 0x34, 0x12, 1, 7, 0, 0]);
    expect([...bytes.subarray(0, 8)]).toEqual(new Array(8).fill(0xee));
  });

  it("encodes and decodes exactly as the byte-wise functions, whatever the values", () => {
    let x = 0x2545f491;
    const rnd = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), x >>> 0);
    const n = 64;
    const byWords = new Uint8Array(n * 8).fill(0xaa);
    const byBytes = new Uint8Array(n * 8).fill(0x55);
    const w = new Uint32Array(byWords.buffer);
    for (let i = 0; i < n; i++) {
      // Out-of-range sector numbers too: both keep the low byte, as a C uint8_t store would.
      const gref = i === 0 ? 0xffffffff : rnd();
      const first = rnd() & 0x1ff;
      const last = rnd() & 0x1ff;
      encodeSegmentWords(w, i * 2, gref, first, last);
      encodeSegment(byBytes, i * 8, gref, first, last);
    }
    expect(byWords).toEqual(byBytes);
    for (let i = 0; i < byWords.length; i++) byWords[i] = rnd() & 0xff; // any bytes a guest may have written
    const a = [new Uint32Array(n + 3), new Uint8Array(n + 3), new Uint8Array(n + 3)] as const;
    const b = [new Uint32Array(n + 3), new Uint8Array(n + 3), new Uint8Array(n + 3)] as const;
    decodeSegmentsWords(w, 2, n - 1, a[0], a[1], a[2], 3);
    decodeSegments(byWords, 8, n - 1, b[0], b[1], b[2], 3);
    expect(a).toEqual(b);
  });
});
