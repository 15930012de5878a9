/**
 * cache=unsafe's medium (QEMU's cache.no-flush=on): flushes complete without reaching the medium, by the sync
 * methods and by `startIo` (later, never inside the call, as `startIo` promises); everything else is the
 * medium's. Under blkdebug, a flush passes flush_to_os and never flush_to_disk, as QEMU's bdrv_co_flush skips
 * it with BDRV_O_NO_FLUSH.
 */
import { describe, expect, it } from "vitest";

import { BlkdebugBackend, parseBlkdebugConfig } from "../../src/storage/blkdebug.ts";
import { FaultInjectingBackend } from "../../src/storage/fault.ts";
import {
  type BlockBackend,
  IoError,
  type MediumRequest,
  MemoryBackend,
  NoFlushBackend,
} from "../../src/storage/index.ts";

/** A memory medium that counts its flushes and can run requests by `startIo`. */
function counting(withStartIo: boolean): BlockBackend & { flushes: number; started: string[] } {
  const m = new MemoryBackend(64) as MemoryBackend & { flushes: number; started: string[] };
  m.flushes = 0;
  m.started = [];
  const flush = m.flush.bind(m);
  m.flush = () => {
    m.flushes++;
    flush();
  };
  if (withStartIo)
    (m as BlockBackend).startIo = (req, done) => {
      m.started.push(req.op);
      void Promise.resolve().then(() => done(undefined));
    };
  return m;
}

function startIo(b: BlockBackend, req: MediumRequest): Promise<IoError | undefined> {
  return new Promise((resolve) => b.startIo!(req, resolve));
}

const sector = (v = 0) => new Uint8Array(512).fill(v);

describe("NoFlushBackend (cache=unsafe)", () => {
  it("ignores flushes and passes reads, writes and discards to the medium", () => {
    const inner = counting(false);
    const b = new NoFlushBackend(inner);
    b.write(3, [sector(0x5a)]);
    b.flush();
    expect(inner.flushes).toBe(0);
    const out = sector();
    b.read(3, [out]);
    expect(out[0]).toBe(0x5a);
    b.discard(3, 1);
    b.read(3, [out]);
    expect(out[0]).toBe(0);
    expect(b.sectorCount).toBe(64);
    expect(b.describe).toBe("memory (flushes ignored)");
    // A medium without an async path gets none through the wrapper: every engine runs the sync methods.
    expect(b.startIo).toBeUndefined();
  });

  it("completes a flush by startIo later, without the medium; other requests go to the medium's", async () => {
    const inner = counting(true);
    const b = new NoFlushBackend(inner);
    let inside = true;
    const p = startIo(b, { op: "flush", sector: 0, count: 0, bufs: [] }).then((e) => ({ e, inside }));
    inside = false;
    expect(await p).toEqual({ e: undefined, inside: false });
    expect(await startIo(b, { op: "write", sector: 1, count: 0, bufs: [sector(1)] })).toBeUndefined();
    expect(inner.started).toEqual(["write"]);
    expect(inner.flushes).toBe(0);
  });

  it("under blkdebug, a flush after a write passes flush_to_os but not flush_to_disk", () => {
    // libqos's rule: EIO on flush_to_disk (any state), then the request fails, as ide-test's retry_pci sets up.
    const rules = parseBlkdebugConfig('[inject-error]\nevent = "flush_to_disk"\nerrno = "5"\n');
    // Without cache=unsafe the rule fires on the flush after a write; with it, never.
    const plain = new BlkdebugBackend(new MemoryBackend(64), rules);
    plain.write(1, [sector(1)]);
    expect(() => plain.flush()).toThrow(IoError);
    expect(plain.injected).toBe(1);
    const inner = counting(false);
    const unsafe = new BlkdebugBackend(new NoFlushBackend(inner), rules);
    unsafe.write(1, [sector(1)]);
    unsafe.flush();
    expect(inner.flushes).toBe(0);
    expect(unsafe.injected).toBe(0);
    // With another medium between (fault injection): the flushes still stop at the OS below it.
    const deeper = new BlkdebugBackend(new FaultInjectingBackend(new NoFlushBackend(counting(false))), rules);
    expect(deeper.noFlush).toBe(true);
    deeper.write(1, [sector(1)]);
    deeper.flush();
    expect(deeper.injected).toBe(0);
    expect(plain.noFlush).toBe(false);
  });
});
