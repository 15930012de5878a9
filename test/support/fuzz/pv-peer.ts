/**
 * An honest neighbour for the PV ring fuzzing: guest domain 2 on the same Xen host as the malicious domain 1
 * (one hypervisor, one xenstore, one set of event channels and grant tables), with its own RAM, its own disk,
 * its own blkback instance and the real blkfront, doing ordinary I/O while domain 1 misbehaves.
 *
 * Isolation is checked from domain 2's side:
 *   - its I/O completes, and reads return exactly what its own writes (and nobody else's) put on its disk;
 *   - between its own I/O rounds nothing changes in its RAM, a single byte (ring, grant table, data pages and
 *     two canary pages it granted to dom0 but never uses for I/O): whatever blkback does for domain 1 must not
 *     reach domain 2's frames, even through refs that are live in domain 2's table;
 *   - its disk holds exactly what its writes put there.
 * `foreignRefs` are refs live in domain 2's table (its ring, and the canary grants, one read-only) that are
 * invalid in domain 1's: a domain-1 request naming one must fail like any ungranted ref.
 */
import {
  DOM0,
  Domain,
  type GrantTable,
  GuestRam,
  PAGE_SIZE,
  type XenHost,
} from "../../../src/hypervisor/index.ts";
import { AsyncEngine, MemoryBackend, SyncEngine } from "../../../src/storage/index.ts";
import type { IoEngine } from "../../../src/storage/types.ts";
import { Blkback } from "../../../src/xenblk/blkback.ts";
import { Blkfront } from "../../../src/xenblk/blkfront.ts";
import { toolstackAddDisk } from "../../../src/xenblk/xenbus.ts";

export const PEER_DOM = 2;
/** Domain 2's RAM: small, so comparing all of it after every case is cheap. */
const PEER_RAM = 256 * 1024;
/** Domain 2's disk in sectors (its I/O stays in the lower half for writes, reads span it all). */
const PEER_SECTORS = 256;
const PEER_CANARY = 0x5a;
/**
 * Grant refs domain 2 holds before its blkfront starts, so its ring and data grants sit at refs domain 1's
 * frontend (which takes refs from 8 up, a few dozen of them) never fills.
 */
const PEER_REF_FLOOR = 512;

const CANARY_PAGES = Buffer.alloc(2 * PAGE_SIZE, PEER_CANARY);
const PEER_DISK = new Uint8Array(PEER_SECTORS * 512).map((_, i) => (i * 11 + (i >> 9) * 3 + 0x21) & 0xff);
/** Domain 2's writes take windows of this (never equal to the initial disk contents: different strides). */
const WRITE_PATTERN = new Uint8Array(96 * 512 + 1024).map((_, i) => (i * 7 + (i >> 10) * 5 + 0x80) & 0xff);

export class PeerIsolationError extends Error {}

function fail(what: string): never {
  throw new PeerIsolationError(`domain ${PEER_DOM}: ${what}`);
}

export interface PeerStats {
  rounds: number;
  sectorsWritten: number;
  sectorsRead: number;
}

export class PeerGuest {
  readonly stats: PeerStats = { rounds: 0, sectorsWritten: 0, sectorsRead: 0 };
  /** Refs granted to dom0 in domain 2's table that domain 1's table leaves invalid. */
  readonly foreignRefs: number[];
  private readonly snapshot: Buffer;
  private readonly shadow: Uint8Array;
  private readonly ramBuf: Buffer;
  private readonly diskBuf: Buffer;
  private round: Promise<void> | null = null;

  private constructor(
    readonly ram: GuestRam,
    readonly disk: MemoryBackend,
    readonly engine: IoEngine,
    readonly front: Blkfront,
    readonly back: Blkback,
    foreignRefs: number[],
    readonly canaryGpa: number,
  ) {
    this.foreignRefs = foreignRefs;
    this.ramBuf = Buffer.from(ram.u8.buffer, ram.u8.byteOffset, ram.u8.length);
    this.diskBuf = Buffer.from(disk.data.buffer, disk.data.byteOffset, disk.data.length);
    this.snapshot = Buffer.from(ram.u8);
    this.shadow = disk.data.slice();
  }

  /**
   * Create domain 2 on `host`, the toolstack's vbd for it, its backend over its own disk, and connect its
   * blkfront. `frontTable` is domain 1's grant table: the foreign refs must be invalid there.
   */
  static async attach(host: XenHost, async: boolean, frontTable: GrantTable): Promise<PeerGuest> {
    const ram = new GuestRam(PEER_RAM);
    host.addDomain(new Domain({ id: PEER_DOM, name: "neighbour", mem: ram, allocStart: PAGE_SIZE }));
    const disk = new MemoryBackend(PEER_DISK.slice());
    const engine: IoEngine = async ? new AsyncEngine(disk) : new SyncEngine(disk);
    toolstackAddDisk(host, { frontDom: PEER_DOM, mode: "w" });
    const back = new Blkback({ host, engine, frontDom: PEER_DOM });
    const gt = host.guestGrantTable(PEER_DOM, 4);
    for (let i = 0; i < PEER_REF_FLOOR; i++) gt.claim();
    const canary = host.domain(PEER_DOM).pages.alloc(2 * PAGE_SIZE);
    ram.u8.fill(PEER_CANARY, canary, canary + 2 * PAGE_SIZE);
    const rw = gt.grantAccess(DOM0, canary / PAGE_SIZE, false);
    const ro = gt.grantAccess(DOM0, canary / PAGE_SIZE + 1, true);
    const front = await Blkfront.connect({ host, dom: PEER_DOM, maxIndirectSegments: 32, persistent: true });
    const ringRef = host.xs(DOM0).readInt(`${front.nodename}/ring-ref`);
    if (ringRef === undefined) fail("no ring-ref after connecting");
    const refs = [rw, ro, ringRef];
    for (const r of refs) {
      const at = frontTable.entryGpa(r);
      if (at >= 0 && frontTable.loadFlags(at) !== 0) fail(`ref ${r} is live in domain 1's table as well`);
    }
    return new PeerGuest(ram, disk, engine, front, back, refs, canary);
  }

  /**
   * Start one I/O round (writes then reads of known patterns, two streams at once; sizes up to 96 sectors, so
   * indirect requests too). It runs while the caller drives domain 1; `finish` waits for it and checks it.
   */
  startRound(n: number): void {
    if (this.round) fail("a round is already running");
    const wcount = 1 + ((n * 37) % 96);
    const wlba = (n * 53) % (PEER_SECTORS / 2 - wcount + 1);
    const rcount = 1 + ((n * 29) % 64);
    const rlba = PEER_SECTORS / 2 + ((n * 17) % (PEER_SECTORS / 2 - rcount + 1));
    // A different pattern each round: a window into a longer one.
    const at = ((n * 13) % 256) * 4;
    const data = WRITE_PATTERN.subarray(at, at + wcount * 512);
    const writeThenRead = (async () => {
      await this.front.write(wlba, data);
      this.shadow.set(data, wlba * 512);
      const back = await this.front.read(wlba, wcount);
      if (Buffer.compare(back, data) !== 0) fail(`read-back of its write at ${wlba} (+${wcount}) differs`);
    })();
    const read = (async () => {
      const got = await this.front.read(rlba, rcount);
      const want = this.shadow.subarray(rlba * 512, (rlba + rcount) * 512);
      if (Buffer.compare(got, want) !== 0) fail(`read at ${rlba} (+${rcount}) returned data it never wrote`);
    })();
    this.round = Promise.all([writeThenRead, read]).then(() => {
      this.stats.rounds++;
      this.stats.sectorsWritten += wcount;
      this.stats.sectorsRead += wcount + rcount;
    });
    // Checked in finish(); keep an early failure from surfacing as an unhandled rejection meanwhile.
    this.round.catch(() => {});
  }

  get busy(): boolean {
    return this.round !== null;
  }

  /** Wait for the running round (storage completions included), then take the new RAM state as reference. */
  async finish(tick: () => Promise<void>): Promise<void> {
    const round = this.round;
    if (!round) return;
    let done = false;
    let error: unknown = null;
    round.then(
      () => (done = true),
      (e: unknown) => ((done = true), (error = e)),
    );
    for (let i = 0; i < 200 && !done; i++) {
      await this.engine.drain();
      await tick();
    }
    this.round = null;
    if (error) throw error;
    if (!done) fail("its I/O did not complete");
    await this.front.idle();
    this.snapshot.set(this.ram.u8);
  }

  /**
   * Nothing done for domain 1 reached domain 2's RAM or disk. `whole`: no round ran in this case, so every byte
   * of RAM must equal the reference; after a round only the canary pages are known (the round's own data was
   * checked by its reads).
   */
  checkUntouched(what: string, whole: boolean): void {
    if (this.round) fail(`${what}: checked while its I/O runs`);
    const c = this.canaryGpa;
    if (this.ramBuf.compare(CANARY_PAGES, 0, CANARY_PAGES.length, c, c + CANARY_PAGES.length) !== 0)
      fail(`${what}: a page it granted to dom0 but never used for I/O was written`);
    if (whole && this.ramBuf.compare(this.snapshot) !== 0) {
      let at = 0;
      while (this.ramBuf[at] === this.snapshot[at]) at++;
      fail(`${what}: its memory changed at 0x${at.toString(16)} with no I/O of its own`);
    }
    if (this.diskBuf.compare(this.shadow) !== 0) {
      let at = 0;
      while (this.diskBuf[at] === this.shadow[at]) at++;
      fail(`${what}: its disk changed at sector ${at >> 9}, which it never wrote`);
    }
  }
}
