// The async capability of a medium (`startIo`) and how the async engine uses it: same bytes and errors as the
// sync methods, completion always later from the event loop, one onReady per burst of host completions, and
// wrappers that forward or omit the capability deliberately.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { AsyncEngine } from "../../src/storage/engine.ts";
import { FaultInjectingBackend } from "../../src/storage/fault.ts";
import { createImage } from "../../src/storage/image.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import {
  type BlockBackend,
  type IoCallback,
  type IoCompletion,
  type IoError,
  type IoOp,
  type MediumRequest,
  SECTOR_SIZE,
} from "../../src/storage/types.ts";
import { pattern, run, sleep, tempDir } from "./helpers.ts";

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let imageNo = 0;

function image(sectors: number): string {
  const file = path.join(dir, `cb${imageNo++}.img`);
  createImage(file, sectors * SECTOR_SIZE);
  return file;
}

/** Run `startIo` and resolve with its error; fails if `done` is called inside `startIo` or more than once. */
function startIo(
  b: BlockBackend,
  op: IoOp,
  sector: number,
  bufs: Uint8Array[] = [],
  count = 0,
): Promise<IoError | undefined> {
  return new Promise((resolve, reject) => {
    let returned = false;
    let calls = 0;
    b.startIo!({ op, sector, count, bufs }, (err) => {
      calls++;
      if (!returned) reject(new Error("done was called inside startIo"));
      else if (calls > 1) reject(new Error("done was called twice"));
      else setImmediate(() => resolve(err)); // a second call, if any, lands before this
    });
    returned = true;
  });
}

describe("RawImageBackend.startIo", () => {
  it("writes and reads sector N at byte N*512, one buffer or several", async () => {
    const file = image(64);
    const b = RawImageBackend.open(file);
    try {
      const data = pattern(6 * SECTOR_SIZE, 31);
      expect(await startIo(b, "write", 8, [data])).toBeUndefined();
      expect(fs.readFileSync(file).subarray(8 * SECTOR_SIZE, 14 * SECTOR_SIZE)).toEqual(Buffer.from(data));

      const parts = [pattern(SECTOR_SIZE, 32), pattern(3 * SECTOR_SIZE, 33)];
      expect(await startIo(b, "write", 20, parts)).toBeUndefined();
      const onDisk = fs.readFileSync(file);
      expect(onDisk.subarray(20 * SECTOR_SIZE, 21 * SECTOR_SIZE)).toEqual(Buffer.from(parts[0]!));
      expect(onDisk.subarray(21 * SECTOR_SIZE, 24 * SECTOR_SIZE)).toEqual(Buffer.from(parts[1]!));

      const back = new Uint8Array(6 * SECTOR_SIZE);
      expect(await startIo(b, "read", 8, [back])).toBeUndefined();
      expect(back).toEqual(data);
      const guest = new Uint8Array(new SharedArrayBuffer(8 * SECTOR_SIZE));
      const v1 = guest.subarray(4 * SECTOR_SIZE, 7 * SECTOR_SIZE);
      const v2 = guest.subarray(0, SECTOR_SIZE);
      expect(await startIo(b, "read", 21, [v1, v2])).toBeUndefined();
      expect(v1).toEqual(parts[1]);
      expect(v2).toEqual(new Uint8Array(SECTOR_SIZE)); // sector 24 was never written
    } finally {
      b.close();
    }
  });

  it("flush is an fdatasync and discard writes zeroes in chunks, both off the main thread", async () => {
    const file = image(2048);
    const b = RawImageBackend.open(file);
    try {
      expect(await startIo(b, "flush", 0)).toBeUndefined();
      const data = pattern(2048 * SECTOR_SIZE, 34);
      fs.writeFileSync(file, data);
      // 700 sectors: more than one 256 KiB zero chunk.
      expect(await startIo(b, "discard", 100, [], 700)).toBeUndefined();
      expect(await startIo(b, "discard", 1000, [], 0)).toBeUndefined();
      const onDisk = new Uint8Array(fs.readFileSync(file));
      expect(onDisk.subarray(0, 100 * SECTOR_SIZE)).toEqual(data.subarray(0, 100 * SECTOR_SIZE));
      expect(onDisk.subarray(100 * SECTOR_SIZE, 800 * SECTOR_SIZE).every((x) => x === 0)).toBe(true);
      expect(onDisk.subarray(800 * SECTOR_SIZE)).toEqual(data.subarray(800 * SECTOR_SIZE));
      // Up to the end of the image: truncated and re-extended, same size.
      expect(await startIo(b, "discard", 2040, [], 8)).toBeUndefined();
      expect(fs.statSync(file).size).toBe(2048 * SECTOR_SIZE);
      expect(new Uint8Array(fs.readFileSync(file)).subarray(2040 * SECTOR_SIZE).every((x) => x === 0)).toBe(
        true,
      );
    } finally {
      b.close();
    }
  });

  it("through the async engine, refuses what the sync path refuses, later and without touching the image", async () => {
    const file = image(16);
    const b = RawImageBackend.open(file);
    const e = new AsyncEngine(b);
    expect(e.usesStartIo).toBe(true);
    try {
      const range = await run(e, {
        op: "write",
        tag: 1,
        sector: 15,
        bufs: [new Uint8Array(2 * SECTOR_SIZE).fill(7)],
      });
      expect(range.error?.code).toBe("ERANGE");
      expect(range.error?.sector).toBe(16); // the first sector past the end
      expect((await run(e, { op: "read", tag: 2, sector: 0, bufs: [new Uint8Array(100)] })).error?.code).toBe(
        "EINVAL",
      );
      expect(fs.statSync(file).size).toBe(16 * SECTOR_SIZE);
      expect(fs.readFileSync(file).every((x) => x === 0)).toBe(true);
    } finally {
      b.close();
    }
    expect((await startIo(b, "read", 0, [new Uint8Array(SECTOR_SIZE)]))?.code).toBe("EIO"); // closed
    expect((await run(e, { op: "flush", tag: 3, sector: 0 })).error?.code).toBe("EIO");
  });

  it("a read-only image refuses writes with EROFS", async () => {
    const file = image(4);
    const b = RawImageBackend.open(file, { readOnly: true, lock: false });
    try {
      const w = await run(new AsyncEngine(b), {
        op: "write",
        tag: 1,
        sector: 0,
        bufs: [new Uint8Array(SECTOR_SIZE)],
      });
      expect(w.error?.code).toBe("EROFS");
    } finally {
      b.close();
    }
  });
});

/**
 * A medium whose `startIo` holds every read and write until the test finishes it (flush and discard it
 * completes itself, in a microtask). Its sync methods go to memory.
 */
class HeldMedium implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly sectorCount = 64;
  readonly readOnly = false;
  readonly describe = "held";
  private readonly mem = new MemoryBackend(new Uint8Array(64 * SECTOR_SIZE));
  readonly held: { write: boolean; sector: number; bufs: readonly Uint8Array[]; done: IoCallback }[] = [];

  startIo(req: MediumRequest, done: IoCallback): void {
    if (req.op === "read" || req.op === "write")
      this.held.push({ write: req.op === "write", sector: req.sector, bufs: req.bufs, done });
    else void Promise.resolve().then(() => done(undefined));
  }
  /** Finish every held transfer (reads get `fill`) in one go, as libuv hands over a burst of completions. */
  finishAll(fill: number): void {
    for (const t of this.held.splice(0)) {
      if (!t.write) for (const buf of t.bufs) buf.fill(fill);
      t.done(undefined);
    }
  }

  read(sector: number, bufs: readonly Uint8Array[]): void {
    this.mem.read(sector, bufs);
  }
  write(sector: number, bufs: readonly Uint8Array[]): void {
    this.mem.write(sector, bufs);
  }
  flush(): void {}
  discard(sector: number, count: number): void {
    this.mem.discard(sector, count);
  }
  close(): void {}
}

describe("AsyncEngine over a medium with startIo", () => {
  it("runs every request through startIo; each completes when the medium says so", async () => {
    const m = new HeldMedium();
    const e = new AsyncEngine(m);
    const buf = new Uint8Array(SECTOR_SIZE);
    e.submit({ op: "read", tag: 1, sector: 3, bufs: [buf] });
    e.submit({ op: "write", tag: 2, sector: 4, bufs: [pattern(SECTOR_SIZE, 1), pattern(SECTOR_SIZE, 2)] });
    e.submit({ op: "flush", tag: 3, sector: 0 });
    expect(m.held.map((t) => [t.write, t.sector, t.bufs.length])).toEqual([
      [false, 3, 1],
      [true, 4, 2],
    ]);
    await sleep(0);
    const out: IoCompletion[] = [];
    e.reap(out);
    expect(out).toEqual([{ tag: 3 }]); // the flush; the held transfers are still running
    expect(e.inflight).toBe(2);
    m.finishAll(0xa5);
    await e.drain();
    expect(buf.every((x) => x === 0xa5)).toBe(true);
  });

  it("announces a burst of completions finished in one callback with a single onReady, never inside done", async () => {
    const m = new HeldMedium();
    const e = new AsyncEngine(m);
    const batches: number[] = [];
    e.onReady = () => {
      const out: IoCompletion[] = [];
      batches.push(e.reap(out));
    };
    for (let i = 0; i < 5; i++)
      e.submit({ op: "read", tag: i, sector: i, bufs: [new Uint8Array(SECTOR_SIZE)] });
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        m.finishAll(1);
        expect(batches).toEqual([]); // not from inside done
        resolve();
      }, 1),
    );
    await sleep(5);
    expect(batches).toEqual([5]);
  });

  it("copies the request: the caller may reuse its request object and buffer list at once", async () => {
    const m = new HeldMedium();
    const e = new AsyncEngine(m);
    const first = new Uint8Array(SECTOR_SIZE);
    const other = new Uint8Array(SECTOR_SIZE);
    const req = { op: "read" as const, tag: 1, sector: 2, bufs: [first] };
    e.submit(req);
    req.tag = 2;
    req.sector = 9;
    req.bufs[0] = other;
    expect(m.held[0]!.sector).toBe(2);
    expect(m.held[0]!.bufs[0]).toBe(first);
    m.finishAll(9);
    await e.drain();
    const out: IoCompletion[] = [];
    e.reap(out);
    expect(out).toEqual([{ tag: 1 }]);
    expect(other.every((x) => x === 0)).toBe(true);
  });

  it("a wrapper that omits startIo has its own read called; one that forwards it is driven through it", async () => {
    const file = image(16);
    const raw = RawImageBackend.open(file);
    try {
      let reads = 0;
      const counted: BlockBackend = Object.create(raw, {
        read: {
          value: (sector: number, bufs: readonly Uint8Array[]) => {
            reads++;
            raw.read(sector, bufs);
          },
        },
        startIo: { value: undefined },
      });
      const e = new AsyncEngine(counted);
      e.submit({ op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(SECTOR_SIZE)] });
      await e.drain();
      expect(reads).toBe(1);

      let started = 0;
      const forwarding: BlockBackend = Object.create(raw, {
        startIo: {
          value: (req: MediumRequest, done: IoCallback) => {
            started++;
            raw.startIo(req, done);
          },
        },
      });
      const f = new AsyncEngine(forwarding);
      f.submit({ op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(SECTOR_SIZE)] });
      f.submit({ op: "flush", tag: 2, sector: 0 });
      await f.drain();
      expect(started).toBe(2);
      expect(reads).toBe(1);
    } finally {
      raw.close();
    }
  });

  it("FaultInjectingBackend forwards startIo to the medium it wraps, after its latency", async () => {
    const m = new HeldMedium();
    const fault = new FaultInjectingBackend(m, [{ op: "read", from: 10, to: 11, latencyMs: 20 }]);
    const e = new AsyncEngine(fault);
    expect(e.usesStartIo).toBe(true);
    e.submit({ op: "read", tag: 1, sector: 3, bufs: [new Uint8Array(SECTOR_SIZE)] });
    e.submit({ op: "read", tag: 2, sector: 10, bufs: [new Uint8Array(SECTOR_SIZE)] });
    expect(m.held.map((t) => t.sector)).toEqual([3]);
    await sleep(40);
    expect(m.held.map((t) => t.sector)).toEqual([3, 10]);
    m.finishAll(1);
    await e.drain();
    const out: IoCompletion[] = [];
    e.reap(out);
    expect(out.map((c) => c.tag).sort()).toEqual([1, 2]);
    expect(fault.delayed).toBe(1);
  });
});
