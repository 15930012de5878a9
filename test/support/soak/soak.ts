/**
 * Soak: mixed requests over both disk paths, every sector checked against a shadow copy.
 *
 * PV: async engine, 4 queues with 2-page rings, indirect segments (requests up to 64 sectors = 8 pages, more than
 * the 11 direct segments), persistent grants, up to 48 requests in flight on disjoint block ranges, reads, writes,
 * flushes and discards, with random injected faults (EIO on reads, writes and flushes, and latency). IDE: one
 * command at a time through the guest driver (PIO, 32-bit PIO, REP INSW/OUTSW and DMA alternating), sync and
 * async engines, with injected EIO.
 *
 * The shadow is exact: a failed write leaves each of its sectors either old or new (a disk that wrote up to the
 * bad block), and the shadow keeps both until the sector is written again. Every read is compared with it, and
 * the whole medium at the end. Counted: lost (a sector older than the shadow), corrupted (matching nothing),
 * duplicated (a request answered twice, or more responses than requests).
 */
import { AtaDrive, AtaError, type AtaVia } from "../../../src/guest/ata-driver.ts";
import { Hypervisor } from "../../../src/hypervisor/hypervisor.ts";
import { createPc } from "../../../src/machine/pc.ts";
import { AsyncEngine, FaultInjectingBackend, MemoryBackend, SyncEngine } from "../../../src/storage/index.ts";
import { BlkfrontIoError } from "../../../src/xenblk/blkfront.ts";
import { createPvMachine } from "../../../src/machine/pv.ts";

export interface SoakOptions {
  requests: number;
  seed: number;
  /** Share of requests that go to IDE (default 0.1: IDE moves one command at a time). */
  ideShare?: number;
  /** Disk size in sectors (default 65536 = 32 MiB per path). */
  sectors?: number;
  log?: (line: string) => void;
}

export interface SoakResult {
  requests: number;
  pv: number;
  ide: number;
  faultsInjected: number;
  failedAsExpected: number;
  sectorsChecked: number;
  lost: number;
  corrupted: number;
  duplicated: number;
  /** Heap after GC (when --expose-gc), MiB: after the first tenth of the run and at the end. */
  heapEarlyMiB: number;
  heapEndMiB: number;
  ms: number;
}

class Rng {
  constructor(private s: number) {
    this.s = s >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
}

/** Per-sector expected version: one value, or after failed writes any of the versions they may have left. */
class Shadow {
  readonly ver: Uint32Array;
  /** Sectors under failed writes: every version the sector may now hold (the certain one first). */
  readonly maybe = new Map<number, number[]>();
  constructor(readonly sectors: number) {
    this.ver = new Uint32Array(sectors);
  }
  wrote(lba: number, count: number, v: number): void {
    this.ver.fill(v, lba, lba + count);
    for (let s = lba; s < lba + count; s++) this.maybe.delete(s);
  }
  failed(lba: number, count: number, v: number): void {
    for (let s = lba; s < lba + count; s++) {
      const list = this.maybe.get(s) ?? [this.ver[s]!];
      list.push(v);
      this.maybe.set(s, list);
    }
  }
  discarded(lba: number, count: number): void {
    this.wrote(lba, count, 0);
  }
  accepts(s: number, v: number): boolean {
    if (v === this.ver[s]) return true;
    return this.maybe.get(s)?.includes(v) ?? false;
  }
}

const MAGIC = 0x534f414b; // "SOAK"

function fill(buf: Uint8Array, lba: number, v: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  for (let o = 0; o < buf.length; o += 512) {
    dv.setUint32(o, MAGIC, true);
    dv.setUint32(o + 4, lba + o / 512, true);
    dv.setUint32(o + 8, v, true);
    for (let i = 12; i < 512; i += 4)
      dv.setUint32(o + i, (Math.imul(v, 0x9e3779b1) ^ (lba + o / 512) ^ i) >>> 0, true);
  }
}

/** Version a sector holds: 0 for zeroes (never written or discarded), -1 for anything else. */
function versionOf(s: Uint8Array, lba: number): number {
  const dv = new DataView(s.buffer, s.byteOffset, 512);
  if (dv.getUint32(0, true) !== MAGIC) {
    for (let i = 0; i < 512; i++) if (s[i] !== 0) return -1;
    return 0;
  }
  if (dv.getUint32(4, true) !== lba) return -1;
  const v = dv.getUint32(8, true);
  for (let i = 12; i < 512; i += 4)
    if (dv.getUint32(i, true) !== (Math.imul(v, 0x9e3779b1) ^ lba ^ i) >>> 0) return -1;
  return v;
}

interface Tally {
  sectorsChecked: number;
  lost: number;
  corrupted: number;
}

function checkSectors(sh: Shadow, data: Uint8Array, lba: number, t: Tally): void {
  for (let k = 0; k < data.length / 512; k++) {
    const s = lba + k;
    const got = versionOf(data.subarray(k * 512, k * 512 + 512), s);
    t.sectorsChecked++;
    if (got >= 0 && sh.accepts(s, got)) continue;
    if (got < 0) t.corrupted++;
    else t.lost++;
  }
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const sectors = o.sectors ?? 65536;
  const ideN = Math.round(o.requests * (o.ideShare ?? 0.1));
  const pvN = o.requests - ideN;
  const tally: Tally = { sectorsChecked: 0, lost: 0, corrupted: 0 };
  const gc = (globalThis as { gc?: () => void }).gc;
  const heap = () => {
    gc?.();
    return process.memoryUsage().heapUsed / 1048576;
  };
  let heapEarly = 0;
  const r: Omit<SoakResult, "ms" | "heapEarlyMiB" | "heapEndMiB"> = {
    requests: 0,
    pv: 0,
    ide: 0,
    faultsInjected: 0,
    failedAsExpected: 0,
    sectorsChecked: 0,
    lost: 0,
    corrupted: 0,
    duplicated: 0,
  };
  let version = 1;

  // ---- PV ----
  {
    const rng = new Rng(o.seed);
    const mem = new MemoryBackend(sectors);
    const fault = new FaultInjectingBackend(mem);
    const m = await createPvMachine({
      engine: new AsyncEngine(fault),
      queues: 4,
      ringPages: 2,
      indirect: 32,
    });
    const sh = new Shadow(sectors);
    const busy = new Uint8Array(sectors / 64); // 64-sector blocks in flight
    let inflight = 0;
    let issued = 0;
    let completions = 0;
    let failedUnexpectedly: unknown = null;
    const settled = new Set<number>();
    const start = (): void => {
      const id = issued++;
      const kind = rng.int(100);
      // Sporadic faults: each rule fires once (times: 1) somewhere on the disk, on the next matching request.
      if (rng.int(200) === 0) {
        const at = rng.int(sectors);
        const op = (["read", "write", "flush"] as const)[rng.int(3)]!;
        fault.addRule({ op, from: at, to: at + 1 + rng.int(64), times: 1 });
      }
      if (rng.int(400) === 0)
        fault.addRule({
          op: rng.int(2) ? "read" : "write",
          latencyMs: 1 + rng.int(4),
          times: 1 + rng.int(20),
        });
      const done = (ok: boolean) => {
        if (settled.has(id)) r.duplicated++;
        settled.add(id);
        completions++;
        inflight--;
        if (!ok) r.failedAsExpected++;
      };
      if (kind < 3) {
        inflight++;
        m.front.flush().then(
          () => done(true),
          (e: unknown) => (e instanceof BlkfrontIoError ? done(false) : (failedUnexpectedly = e)),
        );
        return;
      }
      // A free 64-sector block, and a range inside it.
      let blk = rng.int(busy.length);
      for (let i = 0; i < busy.length && busy[blk]; i++) blk = (blk + 1) % busy.length;
      if (busy[blk]) return;
      busy[blk] = 1;
      const count = 1 + (rng.int(4) === 0 ? rng.int(64) : rng.int(16));
      const lba = blk * 64 + rng.int(64 - count + 1);
      inflight++;
      const release = () => {
        busy[blk] = 0;
      };
      if (kind < 6) {
        m.front.discard(lba, count).then(
          () => {
            sh.discarded(lba, count);
            release();
            done(true);
          },
          (e: unknown) => {
            if (!(e instanceof BlkfrontIoError)) failedUnexpectedly = e;
            sh.failed(lba, count, 0);
            release();
            done(false);
          },
        );
      } else if (kind < 50) {
        const v = version++;
        const buf = new Uint8Array(count * 512);
        fill(buf, lba, v);
        m.front.write(lba, buf).then(
          () => {
            sh.wrote(lba, count, v);
            release();
            done(true);
          },
          (e: unknown) => {
            if (!(e instanceof BlkfrontIoError)) failedUnexpectedly = e;
            sh.failed(lba, count, v);
            release();
            done(false);
          },
        );
      } else {
        m.front.read(lba, count).then(
          (data) => {
            checkSectors(sh, data, lba, tally);
            release();
            done(true);
          },
          (e: unknown) => {
            if (!(e instanceof BlkfrontIoError)) failedUnexpectedly = e;
            release();
            done(false);
          },
        );
      }
    };
    while (issued < pvN) {
      while (inflight < 48 && issued < pvN) start();
      await new Promise<void>((res) => setImmediate(res));
      if (failedUnexpectedly) throw failedUnexpectedly;
      if (issued >= pvN / 10 && heapEarly === 0) heapEarly = heap();
      if (issued % 100_000 < 48) log(`soak pv: ${issued} requests`);
    }
    while (inflight > 0) await new Promise<void>((res) => setImmediate(res));
    if (failedUnexpectedly) throw failedUnexpectedly;
    if (completions !== pvN) r.duplicated += Math.abs(completions - pvN);
    // Responses the backend produced beyond one per request would be duplicates (it counts each).
    const responses = m.back.stats.responses;
    if (responses < pvN) tally.lost += pvN - responses;
    checkSectors(sh, mem.data, 0, tally);
    r.faultsInjected += fault.injectedTotal;
    r.pv = pvN;
    await m.close();
  }

  // ---- IDE ----
  if (ideN > 0) {
    const rng = new Rng(o.seed ^ 0x1de);
    const ideSectors = Math.min(sectors, 16384);
    let done = 0;
    for (const kind of ["sync", "async"] as const) {
      const n = kind === "sync" ? Math.ceil(ideN / 2) : ideN - Math.ceil(ideN / 2);
      const mem = new MemoryBackend(ideSectors);
      const fault = new FaultInjectingBackend(mem);
      const hv = new Hypervisor({ ramSize: 8 * 1024 * 1024 });
      createPc({
        hv,
        firmwareInit: true,
        primary: { master: { engine: kind === "sync" ? new SyncEngine(fault) : new AsyncEngine(fault) } },
      });
      const drives = (["pio", "pio32", "rep", "dma"] as AtaVia[]).map(
        (via) => new AtaDrive(hv.vcpu(0), { via, bufferSectors: 128, timeoutMs: 10_000 }),
      );
      for (const d of drives) await d.probe();
      const sh = new Shadow(ideSectors);
      for (let i = 0; i < n; i++, done++) {
        const d = drives[rng.int(drives.length)]!;
        if (rng.int(150) === 0) {
          const at = rng.int(ideSectors);
          fault.addRule({
            op: (["read", "write", "flush"] as const)[rng.int(3)]!,
            from: at,
            to: at + 1 + rng.int(32),
            times: 1,
          });
        }
        const count = 1 + rng.int(rng.int(8) === 0 ? 128 : 16);
        const lba = rng.int(ideSectors - count);
        const k = rng.int(100);
        try {
          if (k < 4) await d.flush();
          else if (k < 50) {
            const v = version++;
            const buf = new Uint8Array(count * 512);
            fill(buf, lba, v);
            try {
              await d.write(lba, buf);
              sh.wrote(lba, count, v);
            } catch (e) {
              sh.failed(lba, count, v);
              throw e;
            }
          } else checkSectors(sh, await d.read(lba, count), lba, tally);
        } catch (e) {
          if (!(e instanceof AtaError && e.kind === "device")) throw e;
          r.failedAsExpected++;
        }
        if (done % 20_000 === 0) log(`soak ide: ${done} commands`);
      }
      checkSectors(sh, mem.data, 0, tally);
      r.faultsInjected += fault.injectedTotal;
    }
    r.ide = ideN;
  }
  r.requests = r.pv + r.ide;
  r.sectorsChecked = tally.sectorsChecked;
  r.lost = tally.lost;
  r.corrupted = tally.corrupted;
  const heapEnd = heap();
  return {
    ...r,
    heapEarlyMiB: Math.round(heapEarly),
    heapEndMiB: Math.round(heapEnd),
    ms: Math.round(performance.now() - t0),
  };
}
