/**
 * Property: whatever a malicious frontend puts in its ring, blkback answers every request exactly once with the
 * status Linux blkback gives it (dispatch_rw_block_io / dispatch_discard_io / dispatch_other_io order: op, segment
 * count, segment bounds, read-only vbd, range, grant map), or halts that ring for good when req_prod runs more
 * than a ring ahead; other rings keep working. Memory safety is checked against the guest's pages: pages never
 * granted to dom0 (and pages granted to another domain) keep a canary, read-only grants and write sources keep
 * their bytes, a failed request leaves every page untouched, and the disk changes only where an answered-OK write
 * or discard put data.
 *
 * Each case is a batch of requests over two queues of one of eight connected frontends (sync/async engine x
 * persistent grants on/off x read-write/read-only vbd), kept across cases; a halted ring retires its frontend.
 *
 * Every host also runs an honest guest, domain 2 (test/fuzz/pv-peer.ts), with its own RAM, disk, blkback and
 * blkfront. Every PEER_EVERY-th case it writes and reads known patterns while domain 1's case runs, and must get
 * its data back intact; after every case its RAM (whole, or its canary pages after a round) and its disk must
 * be exactly as its own I/O left them. Domain 1 also names refs that are live only in domain 2's table ("peer"):
 * blkback must refuse them like any ungranted ref.
 */
import fc from "fast-check";
import { PAGE_SIZE, XenHost } from "../../../src/hypervisor/index.ts";
import { AsyncEngine, MemoryBackend, SyncEngine } from "../../../src/storage/index.ts";
import {
  BLKIF_OP_DISCARD,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  BlkifRequest,
  MAX_INDIRECT_SEGMENTS,
  decodeRequest,
  encodeSegment,
} from "../../../src/xenblk/abi.ts";
import { rawFrontend, req, tick } from "../../xenblk/helpers.ts";
import { PeerGuest } from "./pv-peer.ts";
import { FirstFailure } from "./runner.ts";

const SECTORS = 512; // disk size in 512-byte sectors: small, so ranges past the end are common
const CANARY = 0xc5;
const N_SRC = 4;
const N_DST = 4;
const N_RO = 2;
const N_IND = 8;

type GrantKind = "src" | "dst" | "ro" | "foreign" | "peer" | "revoked" | "never" | "beyond";
/**
 * Refs blkback must refuse: granted to another domain (7), live only in the neighbour domain 2's table (its
 * ring and canary pages), revoked, never granted, beyond the table.
 */
const BAD_KINDS: GrantKind[] = ["foreign", "peer", "revoked", "never", "beyond"];
/** Domain 2 runs an I/O round during every PEER_EVERY-th case. */
const PEER_EVERY = 4;

export interface SegSpec {
  kind: GrantKind;
  page: number;
  first: number;
  last: number;
}

export type ReqSpec =
  | { t: "rw"; op: number; sector: bigint; segs: SegSpec[]; nrSegments?: number }
  | { t: "indirect"; op: number; sector: bigint; segs: SegSpec[]; nrSegments: number; indKind: GrantKind }
  | { t: "discard"; sector: bigint; nr: bigint; flag: number }
  | { t: "unknown"; op: number };

export interface Cfg {
  async: boolean;
  persistent: boolean;
  readOnly: boolean;
}

export type PvCase =
  | { t: "batch"; cfg: Cfg; reqs: { q: number; spec: ReqSpec }[]; scribble: boolean; idHi: number }
  | { t: "raw"; cfg: Cfg; slots: { q: number; bytes: Uint8Array }[] }
  | { t: "overrun"; cfg: Cfg; ahead: number };

// ---- generators -----------------------------------------------------------------------------------------

const bounds = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .integer({ min: 0, max: 7 })
      .chain((f) => fc.tuple(fc.constant(f), fc.integer({ min: f, max: 7 }))),
  },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })) },
);

function segArb(good: GrantKind[]): fc.Arbitrary<SegSpec> {
  const kind = fc.oneof(
    { weight: 10, arbitrary: fc.constantFrom(...good) },
    { weight: 1, arbitrary: fc.constantFrom(...BAD_KINDS) },
  );
  return fc
    .record({ kind, page: fc.nat({ max: 3 }), b: bounds })
    .map(({ kind, page, b }) => ({ kind, page, first: b[0], last: b[1] }));
}

const sectorArb = fc.oneof(
  { weight: 10, arbitrary: fc.bigInt({ min: 0n, max: BigInt(SECTORS - 1) }) },
  { weight: 2, arbitrary: fc.bigInt({ min: BigInt(SECTORS - 20), max: BigInt(SECTORS + 4) }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
  { weight: 1, arbitrary: fc.constantFrom((1n << 64n) - 1n, (1n << 53n) - 1n, 1n << 53n, 0x200000n << 32n) },
);

// Reads land in "dst" pages, writes come from "src" pages: within one batch a write's source is never a read's
// target, so every byte has one well-defined expected value (or a small set of them, for overlapping I/O).
const readSegs = segArb(["dst", "dst", "dst", "ro"]);
const writeSegs = segArb(["src", "src", "ro"]);

const countArb = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 11 }) },
  { weight: 1, arbitrary: fc.integer({ min: 12, max: 255 }) },
);

const rwArb: fc.Arbitrary<ReqSpec> = fc
  .record({
    op: fc.constantFrom(BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER),
    sector: sectorArb,
    n: countArb,
    flushData: fc.boolean(),
  })
  .chain(({ op, sector, n, flushData }) => {
    const flushLike = op === BLKIF_OP_FLUSH_DISKCACHE || op === BLKIF_OP_WRITE_BARRIER;
    const count = flushLike && !flushData ? 0 : n;
    const k = Math.min(count, 11);
    return fc
      .array(op === BLKIF_OP_READ ? readSegs : writeSegs, { minLength: k, maxLength: k })
      .map((segs) => ({ t: "rw", op, sector, segs, nrSegments: count }) as ReqSpec);
  });

const indirectArb: fc.Arbitrary<ReqSpec> = fc
  .record({
    op: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(BLKIF_OP_READ, BLKIF_OP_WRITE) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
    ),
    sector: sectorArb,
    n: fc.oneof(
      { weight: 10, arbitrary: fc.integer({ min: 1, max: 40 }) },
      { weight: 1, arbitrary: fc.constantFrom(0, MAX_INDIRECT_SEGMENTS, MAX_INDIRECT_SEGMENTS + 1) },
      { weight: 1, arbitrary: fc.integer({ min: MAX_INDIRECT_SEGMENTS + 1, max: 0xffff }) },
    ),
    // "ro": the session's own indirect page (granted read-only; read-write under persistent grants).
    indKind: fc.oneof(
      { weight: 10, arbitrary: fc.constant<GrantKind>("ro") },
      { weight: 1, arbitrary: fc.constantFrom(...BAD_KINDS) },
    ),
  })
  .chain(({ op, sector, n, indKind }) => {
    const k = Math.min(n, 40);
    return fc
      .array(op === BLKIF_OP_READ ? readSegs : writeSegs, { minLength: k, maxLength: k })
      .map((segs) => ({ t: "indirect", op, sector, nrSegments: n, indKind, segs }) as ReqSpec);
  });

const discardArb: fc.Arbitrary<ReqSpec> = fc.record({
  t: fc.constant("discard" as const),
  sector: sectorArb,
  nr: fc.oneof(
    { weight: 8, arbitrary: fc.bigInt({ min: 0n, max: 24n }) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
  ),
  flag: fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
  ),
});

const unknownArb: fc.Arbitrary<ReqSpec> = fc.record({
  t: fc.constant("unknown" as const),
  op: fc.oneof(fc.constant(4), fc.integer({ min: 7, max: 255 })),
});

const reqSpecArb = fc.oneof(
  { weight: 10, arbitrary: rwArb },
  { weight: 4, arbitrary: indirectArb },
  { weight: 2, arbitrary: discardArb },
  { weight: 1, arbitrary: unknownArb },
);

const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  async: fc.boolean(),
  persistent: fc.boolean(),
  readOnly: fc.oneof(
    { weight: 5, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
});

export const pvCaseArb: fc.Arbitrary<PvCase> = fc.oneof(
  {
    weight: 40,
    arbitrary: fc.record({
      t: fc.constant("batch" as const),
      cfg: cfgArb,
      reqs: fc.array(fc.record({ q: fc.nat({ max: 1 }), spec: reqSpecArb }), { minLength: 1, maxLength: 8 }),
      scribble: fc.boolean(),
      idHi: fc.nat(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("raw" as const),
      cfg: cfgArb,
      slots: fc.array(
        fc.record({
          q: fc.nat({ max: 1 }),
          bytes: fc.uint8Array({ minLength: 112, maxLength: 112 }).chain((b) =>
            // Mostly a known operation in byte 0, so the random rest reaches the per-op checks.
            fc.integer({ min: 0, max: 9 }).map((op) => {
              if (op < 7) b[0] = op;
              return b;
            }),
          ),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("overrun" as const),
      cfg: cfgArb,
      ahead: fc.integer({ min: 33, max: 0xffff }),
    }),
  },
);

// ---- the world ------------------------------------------------------------------------------------------

type Front = Awaited<ReturnType<typeof rawFrontend>>;

interface Session {
  f: Front;
  cfg: Cfg;
  backend: MemoryBackend;
  /** What the disk must hold. */
  shadow: Uint8Array;
  /** Scratch: the disk before a batch's writes, and the dst pages before its reads. */
  shadowBefore: Uint8Array;
  dstBefore: Uint8Array;
  refs: Record<GrantKind | "ind", number[]>;
  /** Guest-physical address of each page of a kind (bad kinds: the canary pages). */
  gpas: Record<"src" | "dst" | "ro" | "ind", number[]>;
  canaryGpa: number;
  /** The honest neighbour on the same host. */
  peer: PeerGuest;
  /** Expected bytes of the pages the backend must never change. */
  srcBytes: Uint8Array;
  roBytes: Uint8Array;
}

export interface PvStats {
  cases: number;
  requests: number;
  okay: number;
  error: number;
  eopnotsupp: number;
  ringsHalted: number;
  rawSlots: number;
  scribbled: number;
  /** I/O rounds domain 2 completed (and checked) during domain 1's cases. */
  peerRounds: number;
}

export function zeroPvStats(): PvStats {
  return {
    cases: 0,
    requests: 0,
    okay: 0,
    error: 0,
    eopnotsupp: 0,
    ringsHalted: 0,
    rawSlots: 0,
    scribbled: 0,
    peerRounds: 0,
  };
}

class Failure extends Error {}

const CANARY_PAGES = new Uint8Array(4 * PAGE_SIZE).fill(CANARY);
/** Every session's disk starts as this. */
const DISK_IMAGE = new Uint8Array(SECTORS * 512).map((_, i) => (i * 7 + (i >> 9)) & 0xff);
/** Contents of the src (1), dst (2) and ro (3) pages when a session starts. */
const PAGE_PATTERNS = [0, 1, 2, 3].map((seed) =>
  new Uint8Array(4 * PAGE_SIZE).map((_, i) => ((i * 31 + seed) ^ (i >> 8)) & 0xff),
);
const CANARY_SECTOR = Buffer.alloc(512, CANARY);

/** A Buffer over the same bytes (compare ranges without allocating views). */
function buf(a: Uint8Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.length);
}

/** Bytes [aOff, aOff+len) of `a` equal bytes [bOff, bOff+len) of `b`. */
function same(a: Buffer, aOff: number, b: Uint8Array, bOff: number, len = 512): boolean {
  return a.compare(b, bOff, bOff + len, aOff, aOff + len) === 0;
}

/** Let the event-channel upcall and storage completions run until the backend has answered everything. */
async function settle(f: Front): Promise<void> {
  await tick();
  if (f.engine.kind === "sync") return;
  for (let i = 0; i < 3 && f.engine.inflight > 0; i++) {
    await f.engine.drain();
    await tick();
  }
  await tick();
}
function check(cond: boolean, what: () => string): asserts cond {
  if (!cond) throw new Failure(what());
}

function cfgKey(c: Cfg): string {
  return `${c.async ? "async" : "sync"}/${c.persistent ? "persistent" : "map"}/${c.readOnly ? "r" : "w"}`;
}

export class PvRingWorld {
  private sessions = new Map<string, Session>();
  readonly stats = zeroPvStats();
  readonly first = new FirstFailure();
  private seq = 0;

  private async session(cfg: Cfg): Promise<Session> {
    const key = cfgKey(cfg);
    const have = this.sessions.get(key);
    if (have) return have;
    const backend = new MemoryBackend(DISK_IMAGE.slice());
    if (cfg.readOnly) (backend as { readOnly: boolean }).readOnly = true;
    const engine = cfg.async ? new AsyncEngine(backend) : new SyncEngine(backend);
    const f = await rawFrontend({
      // 512 KiB: the frontend allocates from its upper half, and every session is a fresh host (a halted ring
      // retires its frontend), so a small RAM keeps that cheap.
      host: new XenHost({ ramSize: 512 * 1024 }),
      engine,
      queues: 2,
      persistent: cfg.persistent,
      mode: cfg.readOnly ? "r" : "w",
    });
    const rnd = (n: number, seed: number) => {
      const gpa = f.pages(n, 0);
      f.mem.u8.set(PAGE_PATTERNS[seed]!.subarray(0, n * PAGE_SIZE), gpa);
      return gpa;
    };
    const canaryGpa = f.pages(4, CANARY);
    const src = rnd(N_SRC, 1);
    const dst = rnd(N_DST, 2);
    const ro = rnd(N_RO, 3);
    const ind = f.pages(N_IND, 0);
    const pageList = (base: number, n: number) => Array.from({ length: n }, (_, i) => base + i * PAGE_SIZE);
    const gpas = {
      src: pageList(src, N_SRC),
      dst: pageList(dst, N_DST),
      ro: pageList(ro, N_RO),
      ind: pageList(ind, N_IND),
    };
    const peer = await PeerGuest.attach(f.host, cfg.async, f.gt.table);
    const revoked = f.grant(canaryGpa + PAGE_SIZE);
    f.gt.endAccessRef(revoked);
    const refs: Record<GrantKind | "ind", number[]> = {
      src: gpas.src.map((g) => f.grant(g)),
      dst: gpas.dst.map((g) => f.grant(g)),
      ro: gpas.ro.map((g) => f.grant(g, true)),
      foreign: [f.grant(canaryGpa, false, 7), f.grant(canaryGpa + 2 * PAGE_SIZE, true, 7)],
      peer: peer.foreignRefs,
      revoked: [revoked],
      never: [4000, 4095],
      beyond: [1 << 20, 0xffffffff],
      // Indirect pages: read-only, unless persistent grants are on, where Linux blkback maps them as persistent
      // grants (always writable) and so a read-only grant of one fails; blkfront then grants them read-write.
      ind: gpas.ind.map((g) => f.grant(g, !cfg.persistent)),
    };
    const s: Session = {
      f,
      cfg,
      backend,
      shadow: backend.data.slice(),
      shadowBefore: backend.data.slice(),
      dstBefore: new Uint8Array(N_DST * PAGE_SIZE),
      refs,
      gpas,
      canaryGpa,
      peer,
      srcBytes: f.mem.u8.slice(src, src + N_SRC * PAGE_SIZE),
      roBytes: f.mem.u8.slice(ro, ro + N_RO * PAGE_SIZE),
    };
    this.sessions.set(key, s);
    return s;
  }

  private ref(s: Session, kind: GrantKind, page: number): number {
    const list = s.refs[kind];
    return list[page % list.length]!;
  }

  /** The fixed pages the backend must never change. */
  private checkStaticPages(s: Session, what: string): void {
    const u8 = buf(s.f.mem.u8);
    check(
      u8.compare(CANARY_PAGES, 0, CANARY_PAGES.length, s.canaryGpa, s.canaryGpa + CANARY_PAGES.length) === 0,
      () => `${what}: a page never granted to dom0 was written`,
    );
    const ro = s.gpas.ro[0]!;
    check(
      u8.compare(s.roBytes, 0, s.roBytes.length, ro, ro + s.roBytes.length) === 0,
      () => `${what}: a read-only grant was written through`,
    );
  }

  async run(c: PvCase): Promise<void> {
    this.stats.cases++;
    const s = await this.session(c.cfg);
    // A round left running by a case that failed (fast-check replays cases while shrinking): let it end.
    if (s.peer.busy) await s.peer.finish(tick).catch(() => {});
    // Domain 2's I/O runs during domain 1's traffic: started first, waited for once domain 1 has settled.
    const round = this.stats.cases % PEER_EVERY === 0;
    if (round) s.peer.startRound(this.stats.cases / PEER_EVERY);
    if (c.t === "overrun") await this.overrun(c);
    else if (c.t === "raw") await this.raw(c);
    else await this.batch(c);
    if (round) {
      await s.peer.finish(tick);
      this.stats.peerRounds++;
    }
    s.peer.checkUntouched(`${c.t} ${cfgKey(c.cfg)}`, !round);
  }

  private async batch(c: Extract<PvCase, { t: "batch" }>): Promise<void> {
    const s = await this.session(c.cfg);
    const { f } = s;
    const u8 = f.mem.u8;
    const dstBase = s.gpas.dst[0]!;
    const dstBefore = s.dstBefore;
    dstBefore.set(u8.subarray(dstBase, dstBase + N_DST * PAGE_SIZE));
    type Expect = { id: bigint; op: number; status: number };
    const expected: Expect[][] = [[], []];
    // Effects of requests that must succeed: reads (disk sector -> dst slot), writes (src slot -> disk sector).
    const reads: { sector: number; gpa: number }[] = [];
    const writes = new Map<number, Uint8Array[]>(); // disk sector -> candidate contents
    const zero = new Uint8Array(512);
    let indNext = 0;
    const built: { q: number; r: BlkifRequest }[] = [];
    for (const [i, { q, spec }] of c.reqs.entries()) {
      const id = (BigInt(c.idHi) << 32n) | BigInt(++this.seq * 16 + i);
      const e = this.expect(s, spec, id, indNext);
      if (spec.t === "indirect") indNext++;
      expected[q]!.push({ id, op: e.op, status: e.status });
      if (e.status === BLKIF_RSP_OKAY && e.data) {
        let sector = e.data.sector;
        for (const seg of e.data.segs) {
          for (let k = seg.first; k <= seg.last; k++, sector++) {
            const gpa = this.pageGpa(s, seg.kind, seg.page) + k * 512;
            if (e.data.dir === "read") reads.push({ sector, gpa });
            else {
              const list = writes.get(sector) ?? [];
              list.push(u8.subarray(gpa, gpa + 512));
              writes.set(sector, list);
            }
          }
        }
      }
      if (e.status === BLKIF_RSP_OKAY && e.discard) {
        for (let k = 0; k < e.discard.n; k++) {
          const list = writes.get(e.discard.sector + k) ?? [];
          list.push(zero);
          writes.set(e.discard.sector + k, list);
        }
      }
      built.push({ q, r: e.req });
    }
    for (const q of [0, 1]) {
      const mine = built.filter((b) => b.q === q).map((b) => b.r);
      if (mine.length) f.push(mine, q);
    }
    const before = f.back.stats.requests;
    if (c.scribble && c.cfg.async) {
      // Rewrite everything past the id in the slots the backend has taken (sector, segments, indirect refs):
      // what it validated is its private copy, so nothing may change.
      for (let i = 0; i < 20 && f.back.stats.requests < before + built.length; i++) await Promise.resolve();
      if (f.back.stats.requests === before + built.length) {
        this.stats.scribbled++;
        for (const q of [0, 1]) {
          const Q = f.queues[q]!;
          const n = built.filter((b) => b.q === q).length;
          for (let k = 1; k <= n; k++) {
            const off = Q.ring.requestOffset((Q.ring.reqProdPvt - k) >>> 0);
            Q.ring.view.fill(0xee, off + 16, off + f.layout.entrySize);
          }
        }
      }
    }
    await settle(f);
    for (const q of [0, 1]) {
      const got = f.responses(q);
      const want = expected[q]!;
      const key = (x: Expect) => `${x.id}:${x.op}:${x.status}`;
      check(
        got.length === want.length && [...got.map(key)].sort().join() === [...want.map(key)].sort().join(),
        () =>
          `queue ${q} (${cfgKey(c.cfg)}): responses ${JSON.stringify(got.map(key))}, expected ${JSON.stringify(want.map(key))}`,
      );
      for (const w of want) {
        this.stats.requests++;
        if (w.status === BLKIF_RSP_OKAY) this.stats.okay++;
        else if (w.status === BLKIF_RSP_ERROR) this.stats.error++;
        else this.stats.eopnotsupp++;
      }
    }
    this.checkStaticPages(s, cfgKey(c.cfg));
    const srcGpa = s.gpas.src[0]!;
    check(
      buf(u8).compare(s.srcBytes, 0, s.srcBytes.length, srcGpa, srcGpa + s.srcBytes.length) === 0,
      () => `${cfgKey(c.cfg)}: a write's source page was changed`,
    );
    // Disk: unchanged except where an OK write or discard covered a sector, and then one of their contents.
    // Each covered sector is checked against its candidates and then taken into the reference as it is, so
    // one comparison of the whole disk checks every other sector.
    const disk = buf(s.backend.data);
    const shadowBefore = writes.size > 0 ? s.shadowBefore : s.shadow;
    if (writes.size > 0) {
      shadowBefore.set(s.shadow);
      for (const [sec, cands] of writes) {
        const at = sec * 512;
        check(
          cands.some((x) => same(disk, at, x, 0)),
          () => `${cfgKey(c.cfg)}: disk sector ${sec} holds data no write put there`,
        );
        s.shadow.set(disk.subarray(at, at + 512), at);
      }
    }
    if (disk.compare(s.shadow) !== 0) {
      let sec = 0;
      while (same(disk, sec * 512, s.shadow, sec * 512)) sec++;
      check(false, () => `${cfgKey(c.cfg)}: disk sector ${sec} changed with no write to it`);
    }
    // Read targets: a slot an OK read covered holds the disk's old or new contents (or a racing write's);
    // every other byte of the dst pages is untouched.
    const covered = new Map<number, number[]>();
    for (const r of reads) covered.set(r.gpa, [...(covered.get(r.gpa) ?? []), r.sector]);
    const mem = buf(u8);
    if (
      covered.size > 0 ||
      mem.compare(dstBefore, 0, dstBefore.length, dstBase, dstBase + dstBefore.length) !== 0
    ) {
      for (let off = 0; off < N_DST * PAGE_SIZE; off += 512) {
        const gpa = dstBase + off;
        const secs = covered.get(gpa);
        if (!secs) {
          check(
            same(mem, gpa, dstBefore, off),
            () =>
              `${cfgKey(c.cfg)}: guest page bytes at ${gpa.toString(16)} changed with no OK read into them`,
          );
          continue;
        }
        const ok = secs.some(
          (sec) =>
            same(mem, gpa, shadowBefore, sec * 512) ||
            same(mem, gpa, disk, sec * 512) ||
            (writes.get(sec) ?? []).some((x) => same(mem, gpa, x, 0)),
        );
        check(ok, () => `${cfgKey(c.cfg)}: read into ${gpa.toString(16)} returned data not on the disk`);
      }
    }
    check(f.back.stats.ringsHalted === 0, () => `${cfgKey(c.cfg)}: a ring was halted by valid indices`);
  }

  private pageGpa(s: Session, kind: GrantKind, page: number): number {
    if (kind === "src" || kind === "dst" || kind === "ro") return s.gpas[kind][page % s.gpas[kind].length]!;
    return s.canaryGpa;
  }

  /** Build the request for `spec` and the status Linux blkback answers it with. */
  private expect(
    s: Session,
    spec: ReqSpec,
    id: bigint,
    indSlot: number,
  ): {
    req: BlkifRequest;
    op: number;
    status: number;
    data?: { dir: "read" | "write"; sector: number; segs: SegSpec[] };
    discard?: { sector: number; n: number };
  } {
    const cfg = s.cfg;
    if (spec.t === "unknown") {
      return { req: req({ operation: spec.op, id }), op: spec.op, status: BLKIF_RSP_EOPNOTSUPP };
    }
    if (spec.t === "discard") {
      const r = req({
        operation: BLKIF_OP_DISCARD,
        id,
        sector: spec.sector,
        nrSectors: spec.nr,
        flag: spec.flag,
      });
      const end = spec.sector + spec.nr;
      const bad =
        cfg.readOnly ||
        (spec.nr > 0n && (spec.sector >= 1n << 53n || spec.nr >= 1n << 53n || end > BigInt(SECTORS)));
      if (bad) return { req: r, op: BLKIF_OP_DISCARD, status: BLKIF_RSP_ERROR };
      return {
        req: r,
        op: BLKIF_OP_DISCARD,
        status: BLKIF_RSP_OKAY,
        discard: { sector: Number(spec.sector), n: Number(spec.nr) },
      };
    }
    const indirect = spec.t === "indirect";
    const op = spec.op;
    const r = new BlkifRequest();
    r.id = id;
    r.sector = spec.sector;
    const nseg = spec.t === "indirect" ? spec.nrSegments : (spec.nrSegments ?? spec.segs.length);
    let indOk = true;
    if (indirect) {
      r.operation = BLKIF_OP_INDIRECT;
      r.indirectOp = op;
      r.nrSegments = nseg;
      const gpa = s.gpas.ind[indSlot % N_IND]!;
      s.f.mem.u8.fill(0, gpa, gpa + PAGE_SIZE);
      spec.segs.forEach((g, i) =>
        encodeSegment(s.f.mem.u8, gpa + i * 8, this.ref(s, g.kind, g.page), g.first, g.last),
      );
      r.indirectGrefs[0] =
        spec.indKind === "ro" ? s.refs.ind[indSlot % N_IND]! : this.ref(s, spec.indKind, 0);
      indOk = spec.indKind === "ro";
    } else {
      r.operation = op;
      r.nrSegments = nseg;
      spec.segs.forEach((g, i) => r.setSegment(i, this.ref(s, g.kind, g.page), g.first, g.last));
    }
    const fail = { req: r, op, status: BLKIF_RSP_ERROR };
    if (indirect && op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) return fail;
    const flushLike = op === BLKIF_OP_FLUSH_DISKCACHE || op === BLKIF_OP_WRITE_BARRIER;
    if ((nseg === 0 && !flushLike) || (!indirect && nseg > 11) || (indirect && nseg > MAX_INDIRECT_SEGMENTS))
      return fail;
    if (!indOk) return fail;
    // Indirect segments past the 40 we generate read as zeroes from the page: gref 0, sectors 0..0.
    const segs: SegSpec[] = [...spec.segs];
    let nsec = 0;
    for (let i = 0; i < nseg; i++) {
      const g = segs[i];
      const first = g ? g.first : 0;
      const last = g ? g.last : 0;
      if (last >= 8 || last < first) return fail;
      nsec += last - first + 1;
    }
    if (op !== BLKIF_OP_READ && cfg.readOnly) return fail;
    if (nsec > 0 && (spec.sector >= 0x200000n << 32n || spec.sector + BigInt(nsec) > BigInt(SECTORS)))
      return fail;
    if (nseg > segs.length) return fail; // gref 0 is a reserved entry, never granted: the map fails
    const writable = op === BLKIF_OP_READ;
    for (const g of segs.slice(0, nseg)) {
      if (BAD_KINDS.includes(g.kind)) return fail;
      if (g.kind === "ro" && (writable || cfg.persistent)) return fail;
    }
    return {
      req: r,
      op,
      status: BLKIF_RSP_OKAY,
      ...(nseg > 0
        ? {
            data: {
              dir: writable ? "read" : "write",
              sector: Number(spec.sector),
              segs: segs.slice(0, nseg),
            },
          }
        : {}),
    };
  }

  /** Random bytes in whole slots: one response each, with the slot's id; memory rules as always. */
  private async raw(c: Extract<PvCase, { t: "raw" }>): Promise<void> {
    const s = await this.session(c.cfg);
    const { f } = s;
    const ids: bigint[][] = [[], []];
    const tmp = new BlkifRequest();
    for (const { q, bytes } of c.slots) {
      const Q = f.queues[q]!;
      const off = Q.ring.nextRequest();
      Q.ring.view.set(bytes.subarray(0, f.layout.entrySize), off);
      decodeRequest(f.layout, Q.ring.view, off, tmp);
      ids[q]!.push(tmp.id);
      this.stats.rawSlots++;
    }
    for (const q of [0, 1]) {
      if (ids[q]!.length === 0) continue;
      f.queues[q]!.ring.pushRequestsAndCheckNotify();
      f.kick(q);
    }
    await settle(f);
    for (const q of [0, 1]) {
      const got = f.responses(q);
      check(
        got
          .map((g) => g.id)
          .sort()
          .join() === [...ids[q]!].sort().join(),
        () => `raw slots on queue ${q}: answered ids ${got.map((g) => g.id).join()}, sent ${ids[q]!.join()}`,
      );
      for (const g of got) {
        check(
          [BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP].includes(g.status),
          () => `status ${g.status}`,
        );
        this.stats.requests++;
        if (g.status === BLKIF_RSP_OKAY) this.stats.okay++;
        else if (g.status === BLKIF_RSP_ERROR) this.stats.error++;
        else this.stats.eopnotsupp++;
      }
    }
    this.checkStaticPages(s, `raw ${cfgKey(c.cfg)}`);
    // A random read may land in any page granted writable (src/dst); no canary byte may ever reach the disk.
    const disk = buf(s.backend.data);
    for (let sec = 0; sec < SECTORS; sec++) {
      check(
        !same(disk, sec * 512, CANARY_SECTOR, 0),
        () => `raw: disk sector ${sec} holds an ungranted page's bytes`,
      );
    }
    // Granted pages may legitimately have changed: take the new state as the reference.
    const u8 = f.mem.u8;
    u8.set(s.srcBytes, s.gpas.src[0]!);
    s.shadow.set(disk);
  }

  /** req_prod more than a ring ahead of rsp_prod: that ring halts for good, the other queue goes on. */
  private async overrun(c: Extract<PvCase, { t: "overrun" }>): Promise<void> {
    const s = await this.session(c.cfg);
    const { f } = s;
    const q0 = f.queues[0]!;
    const halted = f.back.stats.ringsHalted;
    const rspBefore = q0.ring.sring.rspProd;
    q0.ring.sring.reqProd = (q0.ring.sring.rspProd + c.ahead) >>> 0;
    f.kick(0);
    await settle(f);
    check(f.back.stats.ringsHalted === halted + 1, () => `req_prod ${c.ahead} ahead did not halt the ring`);
    const dst = s.gpas.dst[0]!;
    const id = BigInt(++this.seq);
    f.push([req({ operation: BLKIF_OP_READ, id, sector: 8, segs: [[s.refs.dst[0]!, 0, 7]] })], 1);
    await settle(f);
    const got = f.responses(1);
    check(
      got.length === 1 && got[0]!.id === id && got[0]!.status === BLKIF_RSP_OKAY,
      () => `queue 1 after queue 0 halted: ${JSON.stringify(got.map((g) => [String(g.id), g.status]))}`,
    );
    check(
      Buffer.compare(f.mem.u8.subarray(dst, dst + 512), s.backend.data.subarray(8 * 512, 9 * 512)) === 0,
      () => "queue 1 read wrong data after queue 0 halted",
    );
    check(q0.ring.sring.rspProd === rspBefore, () => "the halted ring produced responses");
    this.checkStaticPages(s, "overrun");
    this.stats.ringsHalted++;
    this.sessions.delete(cfgKey(c.cfg)); // that frontend's ring 0 is gone for good
  }
}

/** The property over `world` (one world per run: sessions are reused across cases). */
export function pvRingProperty(world: PvRingWorld) {
  return fc.asyncProperty(pvCaseArb, (c) => world.first.guard(c, () => world.run(c)));
}
