// One behavioural suite for every engine × medium pair: what a device model may rely on whichever it gets.
import fs from "node:fs";
import path from "node:path";

import { afterAll, afterEach, describe, expect, it } from "vitest";

import { AsyncEngine, SyncEngine, performSync } from "../../src/storage/engine.ts";
import { FaultInjectingBackend } from "../../src/storage/fault.ts";
import { createImage } from "../../src/storage/image.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { createQcow2, Qcow2Backend } from "../../src/storage/qcow2/index.ts";
import { RawImageBackend } from "../../src/storage/raw.ts";
import {
  type BlockBackend,
  type IoCallback,
  type IoCompletion,
  type IoEngine,
  type MediumRequest,
  SECTOR_SIZE,
} from "../../src/storage/types.ts";
import { pattern, run, sleep, tempDir } from "./helpers.ts";

const SECTORS = 256;

/** A medium plus an independent way to look at and change its bytes (not through the backend under test). */
interface Medium {
  backend: BlockBackend;
  peek(sector: number, count: number): Uint8Array;
  poke(sector: number, data: Uint8Array): void;
  close(): void;
}

interface MediumKind {
  name: string;
  make(opts?: { readOnly?: boolean }): Medium;
}

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let imageNo = 0;

const raw: MediumKind = {
  name: "raw file",
  make(opts = {}) {
    const file = path.join(dir, `disk${imageNo++}.img`);
    createImage(file, SECTORS * SECTOR_SIZE);
    const backend = RawImageBackend.open(file, { readOnly: opts.readOnly });
    return {
      backend,
      peek(sector, count) {
        const fd = fs.openSync(file, "r");
        const out = new Uint8Array(count * SECTOR_SIZE);
        fs.readSync(fd, out, 0, out.length, sector * SECTOR_SIZE);
        fs.closeSync(fd);
        return out;
      },
      poke(sector, data) {
        const fd = fs.openSync(file, "r+");
        fs.writeSync(fd, data, 0, data.length, sector * SECTOR_SIZE);
        fs.closeSync(fd);
      },
      close: () => backend.close(),
    };
  },
};

const memory: MediumKind = {
  name: "memory",
  make(opts = {}) {
    const data = new Uint8Array(SECTORS * SECTOR_SIZE);
    const backend = new MemoryBackend(data, { readOnly: opts.readOnly });
    return {
      backend,
      peek: (sector, count) => data.slice(sector * SECTOR_SIZE, (sector + count) * SECTOR_SIZE),
      poke: (sector, bytes) => data.set(bytes, sector * SECTOR_SIZE),
      close: () => backend.close(),
    };
  },
};

/**
 * A qcow2 image (4 KiB clusters), every cluster allocated before the test so that pokes never allocate: peek and
 * poke go through a second, independent opening of the file, after the medium under test has written its
 * metadata out (a flush), so they see the file's bytes as qemu-img would.
 */
const qcow2: MediumKind = {
  name: "qcow2 image",
  make(opts = {}) {
    const file = path.join(dir, `disk${imageNo++}.qcow2`);
    createQcow2(file, { size: SECTORS * SECTOR_SIZE, clusterSize: 4096 });
    const fill = Qcow2Backend.open(file);
    fill.write(0, [new Uint8Array(SECTORS * SECTOR_SIZE)]);
    fill.close();
    const backend = Qcow2Backend.open(file, { readOnly: opts.readOnly });
    const other = (readOnly: boolean): Qcow2Backend => {
      if (!backend.readOnly) backend.flush();
      return Qcow2Backend.open(file, { readOnly, lock: false });
    };
    return {
      backend,
      peek(sector, count) {
        const o = other(true);
        const out = new Uint8Array(count * SECTOR_SIZE);
        o.read(sector, [out]);
        o.close();
        return out;
      },
      poke(sector, data) {
        const o = other(false);
        o.write(sector, [data]);
        o.close();
      },
      close: () => backend.close(),
    };
  },
};

/**
 * The seam: a medium written in a few lines against the narrow interface, with only the required members (a
 * sparse map of sectors; no validation, no async form). The engines make it behave like the others.
 */
class SparseMedium implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly describe = "sparse";
  readonly sectors = new Map<number, Uint8Array>();
  constructor(
    readonly sectorCount: number,
    readonly readOnly = false,
  ) {}
  read(sector: number, bufs: readonly Uint8Array[]): void {
    for (const buf of bufs)
      for (let off = 0; off < buf.length; off += SECTOR_SIZE)
        buf.set(this.sectors.get(sector++) ?? new Uint8Array(SECTOR_SIZE), off);
  }
  write(sector: number, bufs: readonly Uint8Array[]): void {
    for (const buf of bufs)
      for (let off = 0; off < buf.length; off += SECTOR_SIZE)
        this.sectors.set(sector++, buf.slice(off, off + SECTOR_SIZE));
  }
  flush(): void {}
  discard(sector: number, count: number): void {
    for (let i = 0; i < count; i++) this.sectors.delete(sector + i);
  }
  close(): void {}
}

const sparse: MediumKind = {
  name: "a minimal test medium",
  make(opts = {}) {
    const backend = new SparseMedium(SECTORS, opts.readOnly);
    return {
      backend,
      peek(sector, count) {
        const out = new Uint8Array(count * SECTOR_SIZE);
        backend.read(sector, [out]);
        return out;
      },
      poke(sector, data) {
        for (let off = 0; off < data.length; off += SECTOR_SIZE)
          backend.sectors.set(sector + off / SECTOR_SIZE, data.slice(off, off + SECTOR_SIZE));
      },
      close: () => backend.close(),
    };
  },
};

const engines = [
  { name: "sync", make: (b: BlockBackend): IoEngine => new SyncEngine(b) },
  { name: "async", make: (b: BlockBackend): IoEngine => new AsyncEngine(b) },
];

for (const mk of [raw, qcow2, memory, sparse]) {
  for (const ek of engines) {
    describe(`${ek.name} engine on ${mk.name}`, () => {
      const open: Medium[] = [];
      const medium = (opts?: { readOnly?: boolean }): Medium => {
        const m = mk.make(opts);
        open.push(m);
        return m;
      };
      afterEach(() => {
        for (const m of open.splice(0)) m.close();
      });

      it("reports its kind and backend", () => {
        const m = medium();
        const e = ek.make(m.backend);
        expect(e.kind).toBe(ek.name);
        expect(e.backend).toBe(m.backend);
        expect(m.backend.sectorCount).toBe(SECTORS);
        expect(m.backend.sectorSize).toBe(512);
      });

      it("writes sector N at byte N*512 and reads it back", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        const data = pattern(5 * SECTOR_SIZE, 1);
        expect(await run(e, { op: "write", tag: 7, sector: 10, bufs: [data] })).toEqual({ tag: 7 });
        expect(m.peek(10, 5)).toEqual(data);
        expect(m.peek(9, 1)).toEqual(new Uint8Array(SECTOR_SIZE)); // neighbours untouched
        expect(m.peek(15, 1)).toEqual(new Uint8Array(SECTOR_SIZE));

        const back = new Uint8Array(5 * SECTOR_SIZE);
        expect(await run(e, { op: "read", tag: 8, sector: 10, bufs: [back] })).toEqual({ tag: 8 });
        expect(back).toEqual(data);
      });

      it("reads and writes the last sector of the medium", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        const data = pattern(SECTOR_SIZE, 2);
        expect(
          (await run(e, { op: "write", tag: 1, sector: SECTORS - 1, bufs: [data] })).error,
        ).toBeUndefined();
        expect(m.peek(SECTORS - 1, 1)).toEqual(data);
      });

      it("scatter-gather: buffers are consecutive sectors on disk", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        const a = pattern(SECTOR_SIZE, 3);
        const b = pattern(3 * SECTOR_SIZE, 4);
        const c = pattern(2 * SECTOR_SIZE, 5);
        expect((await run(e, { op: "write", tag: 1, sector: 20, bufs: [a, b, c] })).error).toBeUndefined();
        expect(m.peek(20, 1)).toEqual(a);
        expect(m.peek(21, 3)).toEqual(b);
        expect(m.peek(24, 2)).toEqual(c);

        // Read the same six sectors into differently split views of one guest-memory-like buffer.
        const disk = pattern(6 * SECTOR_SIZE, 6);
        m.poke(40, disk);
        const guest = new Uint8Array(new SharedArrayBuffer(16 * SECTOR_SIZE));
        const v1 = guest.subarray(8 * SECTOR_SIZE, 10 * SECTOR_SIZE);
        const v2 = guest.subarray(0, 4 * SECTOR_SIZE);
        expect((await run(e, { op: "read", tag: 2, sector: 40, bufs: [v1, v2] })).error).toBeUndefined();
        expect(v1).toEqual(disk.subarray(0, 2 * SECTOR_SIZE));
        expect(v2).toEqual(disk.subarray(2 * SECTOR_SIZE));
      });

      it("refuses buffers that are not whole sectors, with an error completion and no change", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        const bad = [
          { op: "write" as const, tag: 1, sector: 0, bufs: [pattern(100, 1)] },
          { op: "write" as const, tag: 2, sector: 0, bufs: [pattern(SECTOR_SIZE, 1), pattern(513, 2)] },
          { op: "write" as const, tag: 3, sector: 0, bufs: [new Uint8Array(0)] },
          { op: "write" as const, tag: 4, sector: 0, bufs: [] },
          { op: "read" as const, tag: 5, sector: 0 },
        ];
        for (const req of bad) {
          expect(() => e.submit(req)).not.toThrow();
        }
        await e.drain();
        const out: IoCompletion[] = [];
        expect(e.reap(out)).toBe(bad.length);
        expect(out.map((c) => c.tag).sort()).toEqual([1, 2, 3, 4, 5]);
        for (const c of out) expect(c.error?.code).toBe("EINVAL");
        expect(m.peek(0, 2)).toEqual(new Uint8Array(2 * SECTOR_SIZE));
      });

      it("refuses requests outside the medium with ERANGE and writes nothing", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        const two = pattern(2 * SECTOR_SIZE, 9);
        // [request start, first failing sector]: the first sector past the end, or 0 for a nonsense number.
        const cases: [number, number][] = [
          [SECTORS, SECTORS],
          [SECTORS - 1, SECTORS],
          [SECTORS + 5, SECTORS + 5],
          [-1, 0],
          [1.5, 1],
          [Number.NaN, 0],
        ];
        for (const [sector, failing] of cases) {
          const c = await run(e, { op: "write", tag: 1, sector, bufs: [two] });
          expect(c.error?.code).toBe("ERANGE");
          expect(c.error?.name).toBe("IoError");
          expect(c.error?.sector).toBe(failing);
        }
        expect(m.peek(SECTORS - 1, 1)).toEqual(new Uint8Array(SECTOR_SIZE));
        const r = await run(e, {
          op: "read",
          tag: 2,
          sector: SECTORS - 1,
          bufs: [new Uint8Array(2 * SECTOR_SIZE)],
        });
        expect(r.error?.code).toBe("ERANGE");
        const d = await run(e, { op: "discard", tag: 3, sector: 10, count: SECTORS });
        expect(d.error?.code).toBe("ERANGE");
        const u = await run(e, { op: "bogus" as never, tag: 4, sector: 0 });
        expect(u.error?.code).toBe("EINVAL");
      });

      it("flushes", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        await run(e, { op: "write", tag: 1, sector: 3, bufs: [pattern(SECTOR_SIZE, 1)] });
        expect(await run(e, { op: "flush", tag: 2, sector: 0 })).toEqual({ tag: 2 });
      });

      it("discarded sectors read as zeroes, neighbours keep their data", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        const data = pattern(20 * SECTOR_SIZE, 11);
        m.poke(100, data);
        expect(await run(e, { op: "discard", tag: 1, sector: 104, count: 8 })).toEqual({ tag: 1 });
        const back = new Uint8Array(20 * SECTOR_SIZE);
        await run(e, { op: "read", tag: 2, sector: 100, bufs: [back] });
        const expected = data.slice();
        expected.fill(0, 4 * SECTOR_SIZE, 12 * SECTOR_SIZE);
        expect(back).toEqual(expected);
        expect(m.peek(104, 8)).toEqual(new Uint8Array(8 * SECTOR_SIZE));
      });

      it("discard up to the end of the medium keeps its size and zeroes the tail", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        m.poke(SECTORS - 10, pattern(10 * SECTOR_SIZE, 12));
        expect(
          (await run(e, { op: "discard", tag: 1, sector: SECTORS - 6, count: 6 })).error,
        ).toBeUndefined();
        expect(m.peek(SECTORS - 10, 4)).toEqual(pattern(10 * SECTOR_SIZE, 12).subarray(0, 4 * SECTOR_SIZE));
        expect(m.peek(SECTORS - 6, 6)).toEqual(new Uint8Array(6 * SECTOR_SIZE));
        const last = new Uint8Array(SECTOR_SIZE);
        expect(
          (await run(e, { op: "read", tag: 2, sector: SECTORS - 1, bufs: [last] })).error,
        ).toBeUndefined();
        expect(m.backend.sectorCount).toBe(SECTORS);
      });

      it("a read-only medium refuses writes and discards with EROFS but reads", async () => {
        const m = medium({ readOnly: true });
        const e = ek.make(m.backend);
        expect(m.backend.readOnly).toBe(true);
        m.poke(0, pattern(SECTOR_SIZE, 13));
        const w = await run(e, { op: "write", tag: 1, sector: 0, bufs: [new Uint8Array(SECTOR_SIZE)] });
        expect(w.error?.code).toBe("EROFS");
        const d = await run(e, { op: "discard", tag: 2, sector: 0, count: 1 });
        expect(d.error?.code).toBe("EROFS");
        expect(m.peek(0, 1)).toEqual(pattern(SECTOR_SIZE, 13));
        const back = new Uint8Array(SECTOR_SIZE);
        expect((await run(e, { op: "read", tag: 3, sector: 0, bufs: [back] })).error).toBeUndefined();
        expect(back).toEqual(pattern(SECTOR_SIZE, 13));
      });

      it("never calls onReady from inside submit; inflight counts unreaped requests", async () => {
        const m = medium();
        const e = ek.make(m.backend);
        let calls = 0;
        e.onReady = () => calls++;
        e.submit({ op: "write", tag: 1, sector: 0, bufs: [pattern(SECTOR_SIZE, 1)] });
        e.submit({ op: "read", tag: 2, sector: 0, bufs: [new Uint8Array(SECTOR_SIZE)] });
        expect(calls).toBe(0);
        expect(e.inflight).toBe(2);
        await e.drain();
        await sleep(0);
        expect(calls).toBeGreaterThanOrEqual(1);
        expect(e.inflight).toBe(2); // completed but not reaped
        const out: IoCompletion[] = [];
        expect(e.reap(out)).toBe(2);
        expect(e.inflight).toBe(0);
        expect(e.reap(out)).toBe(0);
      });

      if (ek.name === "sync") {
        it("completes inside submit", () => {
          const m = medium();
          const e = ek.make(m.backend);
          e.submit({ op: "write", tag: 5, sector: 1, bufs: [pattern(SECTOR_SIZE, 5)] });
          const out: IoCompletion[] = [];
          expect(e.reap(out)).toBe(1);
          expect(out[0]).toEqual({ tag: 5 });
          expect(m.peek(1, 1)).toEqual(pattern(SECTOR_SIZE, 5));
        });

        it("does not call onReady for completions already reaped right after submit", async () => {
          const m = medium();
          const e = ek.make(m.backend);
          let calls = 0;
          e.onReady = () => calls++;
          e.submit({ op: "flush", tag: 1, sector: 0 });
          expect(e.reap([])).toBe(1);
          await sleep(0);
          expect(calls).toBe(0);
        });
      } else {
        it("turns a backend that throws instead of rejecting into an error completion", async () => {
          const m = medium();
          const boom = (): never => {
            throw new Error("boom");
          };
          // Throwing from its sync read (the medium without startIo), or from startIo itself.
          const brokenSync: BlockBackend = Object.create(m.backend, {
            read: { value: boom },
            startIo: { value: undefined },
          });
          const brokenStart: BlockBackend = Object.create(m.backend, { startIo: { value: boom } });
          for (const broken of [brokenSync, brokenStart]) {
            const e = new AsyncEngine(broken);
            expect(() =>
              e.submit({ op: "read", tag: 9, sector: 3, bufs: [new Uint8Array(SECTOR_SIZE)] }),
            ).not.toThrow();
            expect(e.reap([])).toBe(0);
            await e.drain();
            const out: IoCompletion[] = [];
            e.reap(out);
            const c = out[0];
            expect(c?.tag).toBe(9);
            expect(c?.error?.code).toBe("EIO");
            expect(c?.error?.sector).toBe(3);
          }
        });

        it("has nothing to reap before the event loop runs", () => {
          const m = medium();
          const e = ek.make(m.backend);
          e.submit({ op: "write", tag: 5, sector: 1, bufs: [pattern(SECTOR_SIZE, 5)] });
          e.submit({ op: "read", tag: 6, sector: SECTORS, bufs: [new Uint8Array(SECTOR_SIZE)] }); // invalid
          expect(e.reap([])).toBe(0);
          expect(e.inflight).toBe(2);
          return e.drain();
        });

        it("completes concurrent requests out of submission order, each exactly once", async () => {
          const m = medium();
          // Slow sectors [0, 8): a request there finishes after later-submitted ones elsewhere.
          const slow = new FaultInjectingBackend(m.backend, [{ op: "read", from: 0, to: 8, latencyMs: 40 }]);
          const e = new AsyncEngine(slow);
          const order: number[] = [];
          e.onReady = () => {
            const out: IoCompletion[] = [];
            e.reap(out);
            for (const c of out) {
              expect(c.error).toBeUndefined();
              order.push(c.tag);
            }
          };
          m.poke(0, pattern(SECTOR_SIZE, 21));
          m.poke(50, pattern(SECTOR_SIZE, 22));
          const slowBuf = new Uint8Array(SECTOR_SIZE);
          const fastBuf = new Uint8Array(SECTOR_SIZE);
          e.submit({ op: "read", tag: 1, sector: 0, bufs: [slowBuf] });
          e.submit({ op: "read", tag: 2, sector: 50, bufs: [fastBuf] });
          e.submit({ op: "write", tag: 3, sector: 60, bufs: [pattern(SECTOR_SIZE, 23)] });
          expect(e.inflight).toBe(3);
          await e.drain();
          await sleep(0);
          expect(order.indexOf(1)).toBe(2); // the slow one is last
          expect(order.slice().sort()).toEqual([1, 2, 3]);
          expect(slowBuf).toEqual(pattern(SECTOR_SIZE, 21));
          expect(fastBuf).toEqual(pattern(SECTOR_SIZE, 22));
          expect(e.inflight).toBe(0);
        });

        it("queues requests beyond maxInflight and runs them all", async () => {
          const m = medium();
          let running = 0;
          let peak = 0;
          const inner = m.backend;
          // Each write takes 2 ms of its own, so the engine's limit is what bounds how many run at once.
          const counting: BlockBackend = Object.create(inner, {
            startIo: {
              value: (r: MediumRequest, done: IoCallback) => {
                running++;
                peak = Math.max(peak, running);
                setTimeout(() => {
                  inner.write(r.sector, r.bufs);
                  running--;
                  done(undefined);
                }, 2);
              },
            },
          });
          const e = new AsyncEngine(counting, { maxInflight: 3 });
          for (let i = 0; i < 12; i++) {
            e.submit({ op: "write", tag: i, sector: i, bufs: [pattern(SECTOR_SIZE, 100 + i)] });
          }
          expect(e.inflight).toBe(12);
          await e.drain();
          expect(peak).toBe(3);
          const out: IoCompletion[] = [];
          expect(e.reap(out)).toBe(12);
          expect(out.map((c) => c.tag).sort((a, b) => a - b)).toEqual([...Array(12).keys()]);
          for (let i = 0; i < 12; i++) expect(m.peek(i, 1)).toEqual(pattern(SECTOR_SIZE, 100 + i));
        });

        it("does not let a reused request object change a queued request", async () => {
          const m = medium();
          const e = new AsyncEngine(m.backend, { maxInflight: 1 });
          const req = { op: "write" as const, tag: 1, sector: 5, bufs: [pattern(SECTOR_SIZE, 31)] };
          e.submit(req);
          req.tag = 2;
          req.sector = 6;
          req.bufs[0] = pattern(SECTOR_SIZE, 32);
          e.submit(req);
          await e.drain();
          expect(m.peek(5, 1)).toEqual(pattern(SECTOR_SIZE, 31));
          expect(m.peek(6, 1)).toEqual(pattern(SECTOR_SIZE, 32));
        });
      }
    });
  }
}

describe("the async capability (startIo)", () => {
  /** A medium as an object literal, recording which of its methods each request reached. */
  function recording(withStartIo: boolean) {
    const inner = new SparseMedium(SECTORS);
    const seen: string[] = [];
    const medium: BlockBackend = {
      sectorSize: SECTOR_SIZE,
      sectorCount: SECTORS,
      readOnly: false,
      describe: "recording",
      read: (sector, bufs) => (seen.push("read"), inner.read(sector, bufs)),
      write: (sector, bufs) => (seen.push("write"), inner.write(sector, bufs)),
      flush: () => void seen.push("flush"),
      discard: (sector, count) => (seen.push("discard"), inner.discard(sector, count)),
      close: () => {},
    };
    if (withStartIo) {
      medium.startIo = (req, done) => {
        seen.push(`startIo ${req.op}`);
        setImmediate(() => done(performSync(inner, req)));
      };
    }
    return { medium, seen };
  }

  async function fourOps(e: IoEngine): Promise<Uint8Array> {
    const back = new Uint8Array(2 * SECTOR_SIZE);
    e.submit({ op: "write", tag: 1, sector: 5, bufs: [pattern(2 * SECTOR_SIZE, 61)] });
    e.submit({ op: "read", tag: 2, sector: 5, bufs: [back] });
    e.submit({ op: "flush", tag: 3, sector: 0 });
    e.submit({ op: "discard", tag: 4, sector: 100, count: 8 });
    await e.drain();
    const out: IoCompletion[] = [];
    expect(e.reap(out)).toBe(4);
    for (const c of out) expect(c.error).toBeUndefined();
    return back;
  }

  it("a medium with startIo is driven through it by the async engine, never through its sync methods", async () => {
    const { medium, seen } = recording(true);
    const e = new AsyncEngine(medium);
    expect(e.usesStartIo).toBe(true);
    const done = fourOps(e);
    expect(seen).toEqual(["startIo write", "startIo read", "startIo flush", "startIo discard"]);
    expect(e.reap([])).toBe(0); // completions come later, from the event loop
    expect(await done).toEqual(pattern(2 * SECTOR_SIZE, 61));
    expect(seen).toHaveLength(4);
    // The sync engine uses the sync methods whatever the medium offers.
    seen.length = 0;
    await fourOps(new SyncEngine(medium));
    expect(seen).toEqual(["write", "read", "flush", "discard"]);
  });

  it("a medium without startIo gets its sync methods called by the async engine, after submit returns", async () => {
    const { medium, seen } = recording(false);
    const e = new AsyncEngine(medium);
    expect(e.usesStartIo).toBe(false);
    const done = fourOps(e);
    expect(seen).toEqual([]);
    expect(e.reap([])).toBe(0);
    expect(await done).toEqual(pattern(2 * SECTOR_SIZE, 61));
    expect(seen).toEqual(["write", "read", "flush", "discard"]);
  });
});
