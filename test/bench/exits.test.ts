/**
 * Exits per I/O are a property of the protocol, not of the machine: each path's count is derived here from
 * what its guest driver must do, and must come out exactly (sync engine, so no completion races).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type Counts, exitsOf } from "../../src/hypervisor/accounting.ts";
import { prepareImage } from "../../src/bench/image.ts";
import { fillPattern } from "../../src/bench/offsets.ts";
import { type ImageRef, openSession, pathSpec } from "../../src/bench/paths.ts";
import type { BackendKind, PathVariant } from "../../src/bench/types.ts";

let dir = "";
let image: ImageRef;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-bench-test-"));
  image = { path: path.join(dir, "bench.img"), bytes: 4 << 20 };
  prepareImage(image.path, image.bytes);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Counts per I/O over `n` reads (or writes) of `bs` bytes, after one unmeasured I/O. */
async function perIo(
  variant: PathVariant,
  op: "read" | "write",
  bs: number,
  backend: BackendKind = "null",
  n = 4,
): Promise<Counts> {
  const spec = pathSpec(variant, "sync", backend);
  const s = await openSession(spec, { op, pattern: "seq", blockSize: bs, qd: 1 }, "warm", image);
  try {
    const io = async (i: number) => {
      const lba = (i * bs) / 512;
      const r = op === "read" ? s.read(lba, bs / 512, 0) : s.write(lba, s.bufs[0]!, 0);
      if (r instanceof Promise) await r;
    };
    await io(0); // first use: persistent grants get mapped, the Bus Master block is already set up by probe
    const before = s.hv!.acct.snapshot();
    for (let i = 1; i <= n; i++) await io(i);
    const d = s.hv!.acct.since(before);
    for (const k of Object.keys(d) as (keyof Counts)[]) d[k] /= n;
    return d;
  } finally {
    await s.close();
  }
}

describe("exits per I/O follow from the protocol", () => {
  // Task file (ATA-7 vol 2 §11): alternate-status check for BSY/DRQ (1 IN), device, count, LBA low/mid/high,
  // command (6 OUT). Per sector of PIO data-in: the interrupt's STATUS read (1 IN) plus the data register
  // reads. After the last block: one alternate-status read (1 IN).
  it("IDE 16-bit PIO read of one sector: 7 task-file exits + 1 status + 256 INW + 1 final status", async () => {
    const c = await perIo("pio16", "read", 512);
    expect(c.pioOut).toBe(6);
    expect(c.pioIn).toBe(1 + 1 + 256 + 1);
    expect(c.stringIo).toBe(0);
    expect(c.irqInject).toBe(1);
    expect(exitsOf(c)).toBe(265);
  });

  it("IDE 16-bit PIO read of 4 KiB: one command, 8 DRQ blocks of 257 exits", async () => {
    const c = await perIo("pio16", "read", 4096);
    expect(exitsOf(c)).toBe(7 + 8 * 257 + 1);
    expect(c.irqInject).toBe(8);
  });

  it("IDE 32-bit PIO halves the data-register exits (128 INL per sector)", async () => {
    const c = await perIo("pio32", "read", 4096);
    expect(exitsOf(c)).toBe(7 + 8 * (1 + 128) + 1);
  });

  it("IDE REP INSW: one string exit per sector (each sector's 512 bytes fit in one guest page)", async () => {
    const c = await perIo("rep", "read", 4096);
    expect(c.stringIo).toBe(8);
    expect(c.pioIn + c.pioOut).toBe(7 + 8 + 1);
  });

  it("IDE 16-bit PIO write of one sector: task file, alt-status poll, 256 OUTW, interrupt, status", async () => {
    const c = await perIo("pio16", "write", 512);
    // 6 OUT task file + 256 OUTW; IN: the BSY check before the command, the alternate-status poll before the
    // first block (PIO data-out sends it without an interrupt), and STATUS after the block's interrupt.
    expect(c.pioOut).toBe(6 + 256);
    expect(c.pioIn).toBe(3);
    expect(c.irqInject).toBe(1);
  });

  // Bus Master sequence (82371SB §2.7): stop engine, clear status (IN + OUT), PRD pointer, task file (1 IN +
  // 6 OUT), start; after the interrupt: BM status IN, stop OUT, ATA status IN, BM status write-back OUT.
  it("IDE DMA: 16 exits and one interrupt per command, whatever its size", async () => {
    for (const bs of [4096, 65536]) {
      const c = await perIo("dma", "read", bs);
      expect(c.pioOut).toBe(12);
      expect(c.pioIn).toBe(4);
      expect(c.irqInject).toBe(1);
    }
  });

  // blkif (xen/include/public/io/blkif.h): the frontend pushes and notifies (EVTCHNOP_send, a hypercall), the
  // backend answers and notifies; with persistent grants the data pages stay mapped after the first use.
  it("PV read at depth 1: two event-channel sends, no grant maps with persistent grants", async () => {
    const c = await perIo("pv", "read", 4096);
    expect(c.evtchnNotify).toBe(2);
    expect(c.hypercall).toBe(2);
    expect(c.grantMap).toBe(0);
    expect(c.pioIn + c.pioOut + c.stringIo).toBe(0);
  });

  it("PV without persistent grants maps one grant per 4 KiB segment, plus the indirect page", async () => {
    // 64 KiB = 16 segments > BLKIF_MAX_SEGMENTS_PER_REQUEST (11): BLKIF_OP_INDIRECT, whose segment list sits
    // in one granted page that the backend maps too.
    const c = await perIo("pv-nopersistent", "read", 65536);
    expect(c.grantMap).toBe(16 + 1);
    const small = await perIo("pv-nopersistent", "read", 4096);
    expect(small.grantMap).toBe(1);
    expect(c.evtchnNotify).toBe(2);
  });

  it("PV without indirect descriptors splits 64 KiB into requests of at most 11 segments", async () => {
    const spec = pathSpec("pv-noindirect", "sync", "raw");
    const s = await openSession(spec, { op: "read", pattern: "seq", blockSize: 65536, qd: 1 }, "warm", image);
    try {
      const n0 = s.storageRequests()!;
      await s.read(0, 128, 0);
      expect(s.storageRequests()! - n0).toBe(Math.ceil(16 / 11));
    } finally {
      await s.close();
    }
  });

  it("moves the image's bytes: a 64 KiB read through each path returns what the file holds", async () => {
    const want = fillPattern(new Uint8Array(65536), 256, 0x5eed);
    for (const v of ["pio16", "pio32", "rep", "dma", "pv"] as const) {
      const s = await openSession(
        pathSpec(v, "sync"),
        { op: "read", pattern: "seq", blockSize: 65536, qd: 1 },
        "warm",
        image,
      );
      try {
        const r = s.read(256, 128, 0);
        const got = r instanceof Promise ? await r : r;
        expect(Buffer.from(got).equals(Buffer.from(want)), v).toBe(true);
      } finally {
        await s.close();
      }
    }
  });
});
