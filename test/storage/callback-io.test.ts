// The callback form of async I/O (CallbackIo) and how the async engine uses it: same bytes and errors as the
// promise methods, completion always later from the event loop, and one onReady per burst of host completions.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { AsyncEngine } from "../../src/storage/engine.ts";
import { createImage } from "../../src/storage/image.ts";
import { MemoryBackend } from "../../src/storage/memory.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import {
  type BlockBackend,
  type CallbackIo,
  type IoCallback,
  type IoCompletion,
  type IoError,
  SECTOR_SIZE,
} from "../../src/storage/types.ts";
import { pattern, sleep, tempDir } from "./helpers.ts";

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
  b: CallbackIo,
  write: boolean,
  sector: number,
  bufs: Uint8Array[],
): Promise<IoError | undefined> {
  return new Promise((resolve, reject) => {
    let returned = false;
    let calls = 0;
    b.startIo(write, sector, bufs, (err) => {
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
      expect(await startIo(b, true, 8, [data])).toBeUndefined();
      expect(fs.readFileSync(file).subarray(8 * SECTOR_SIZE, 14 * SECTOR_SIZE)).toEqual(Buffer.from(data));

      const parts = [pattern(SECTOR_SIZE, 32), pattern(3 * SECTOR_SIZE, 33)];
      expect(await startIo(b, true, 20, parts)).toBeUndefined();
      const onDisk = fs.readFileSync(file);
      expect(onDisk.subarray(20 * SECTOR_SIZE, 21 * SECTOR_SIZE)).toEqual(Buffer.from(parts[0]!));
      expect(onDisk.subarray(21 * SECTOR_SIZE, 24 * SECTOR_SIZE)).toEqual(Buffer.from(parts[1]!));

      const back = new Uint8Array(6 * SECTOR_SIZE);
      expect(await startIo(b, false, 8, [back])).toBeUndefined();
      expect(back).toEqual(data);
      const guest = new Uint8Array(new SharedArrayBuffer(8 * SECTOR_SIZE));
      const v1 = guest.subarray(4 * SECTOR_SIZE, 7 * SECTOR_SIZE);
      const v2 = guest.subarray(0, SECTOR_SIZE);
      expect(await startIo(b, false, 21, [v1, v2])).toBeUndefined();
      expect(v1).toEqual(parts[1]);
      expect(v2).toEqual(new Uint8Array(SECTOR_SIZE)); // sector 24 was never written
    } finally {
      b.close();
    }
  });

  it("refuses what the promise methods refuse, later and without touching the image", async () => {
    const file = image(16);
    const b = RawImageBackend.open(file);
    try {
      const range = await startIo(b, true, 15, [new Uint8Array(2 * SECTOR_SIZE).fill(7)]);
      expect(range?.code).toBe("ERANGE");
      expect(range?.sector).toBe(16); // the first sector past the end
      expect((await startIo(b, false, 0, [new Uint8Array(100)]))?.code).toBe("EINVAL");
      expect(fs.statSync(file).size).toBe(16 * SECTOR_SIZE);
      expect(fs.readFileSync(file).every((x) => x === 0)).toBe(true);
    } finally {
      b.close();
    }
    expect((await startIo(b, false, 0, [new Uint8Array(SECTOR_SIZE)]))?.code).toBe("EIO"); // closed
  });

  it("a read-only image refuses writes with EROFS", async () => {
    const file = image(4);
    const b = RawImageBackend.open(file, { readOnly: true, lock: false });
    try {
      expect((await startIo(b, true, 0, [new Uint8Array(SECTOR_SIZE)]))?.code).toBe("EROFS");
    } finally {
      b.close();
    }
  });
});

/**
 * A medium that offers CallbackIo and holds every callback transfer until the test finishes it. Its promise
 * methods, declared in the same class as startIo (which is what lets the engine use startIo), go to memory.
 */
class HeldMedium implements BlockBackend, CallbackIo {
  readonly sectorSize = SECTOR_SIZE;
  readonly sectorCount = 64;
  readonly readOnly = false;
  readonly describe = "held";
  private readonly mem = new MemoryBackend(new Uint8Array(64 * SECTOR_SIZE));
  readonly held: { write: boolean; sector: number; bufs: readonly Uint8Array[]; done: IoCallback }[] = [];

  startIo(write: boolean, sector: number, bufs: readonly Uint8Array[], done: IoCallback): void {
    this.held.push({ write, sector, bufs, done });
  }
  /** Finish every held transfer (reads get `fill`) in one go, as libuv hands over a burst of completions. */
  finishAll(fill: number): void {
    for (const t of this.held.splice(0)) {
      if (!t.write) for (const buf of t.bufs) buf.fill(fill);
      t.done(undefined);
    }
  }

  readSync(sector: number, buf: Uint8Array): void {
    this.mem.readSync(sector, buf);
  }
  writeSync(sector: number, buf: Uint8Array): void {
    this.mem.writeSync(sector, buf);
  }
  flushSync(): void {}
  discardSync(sector: number, count: number): void {
    this.mem.discardSync(sector, count);
  }
  read(sector: number, buf: Uint8Array): Promise<void> {
    return this.mem.read(sector, buf);
  }
  write(sector: number, buf: Uint8Array): Promise<void> {
    return this.mem.write(sector, buf);
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  discard(sector: number, count: number): Promise<void> {
    return this.mem.discard(sector, count);
  }
  close(): void {}
}

describe("AsyncEngine over a CallbackIo backend", () => {
  it("runs reads and writes through startIo and flush/discard through the promise methods", async () => {
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

  it("calls a wrapper's own read, not the startIo it inherits from the medium it wraps", async () => {
    const file = image(16);
    const raw = RawImageBackend.open(file);
    try {
      let reads = 0;
      const counted: BlockBackend = Object.create(raw, {
        read: {
          value: (sector: number, buf: Uint8Array) => {
            reads++;
            return raw.read(sector, buf);
          },
        },
      });
      const e = new AsyncEngine(counted);
      e.submit({ op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(SECTOR_SIZE)] });
      await e.drain();
      expect(reads).toBe(1);
    } finally {
      raw.close();
    }
  });
});
