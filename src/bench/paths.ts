/**
 * The ways a workload reaches the image, each as a `Session` opened for one cell:
 *
 * - baselines: the same bytes with plain `node:fs` (readSync/writeSync at depth 1; `fs.read`/`fs.write`
 *   callbacks, libuv's thread pool, at any depth), with no emulation at all;
 * - IDE: the guest ATA driver on a vCPU, every register access an ioreq exit to the PIIX IDE device model,
 *   data by 16-bit PIO, 32-bit PIO, REP INSW/OUTSW or Bus Master DMA; one command in flight per channel;
 * - PV: the guest's blkfront and dom0's blkback over the shared ring with grants and event channels, with
 *   the ring size, indirect descriptors, persistent grants and request merging as variables.
 *
 * Device models sit on a storage engine (sync or async) over the raw image or the null disk; a counting
 * wrapper around the engine records how many storage requests the guest's I/Os became.
 *
 * The emulated paths are built exactly as a user's program builds them, with the public API of the package's
 * entry point (`buildMachine`, `openAtaPath`, `openPvPath`; test/bench/paths-api.test.ts keeps it so) and the
 * defaults a user gets: guest RAM is the default (page-aligned) RAM, not memory prepared for the benchmark.
 * The baselines read into and write from page-aligned buffers too, so neither side gains from alignment.
 */
import fs from "node:fs";

import type { AtaVia } from "../guest/ata-driver.ts";
import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import type { GuestRam } from "../hypervisor/memory.ts";
import { buildMachine } from "../machine/builder.ts";
import { openAtaPath, openPvPath } from "../machine/disk-path.ts";
import { allocAligned, makeEngine, NullBackend, openImage, TapEngine } from "../storage/index.ts";
import type { BlockBackend } from "../storage/types.ts";
import type { Blkfront } from "../xenblk/blkfront.ts";
import { fillPattern, type OffsetSource, SECTOR } from "./offsets.ts";
import type {
  BackendKind,
  CacheState,
  EngineKind,
  PathSpec,
  PathVariant,
  PvSettings,
  Workload,
} from "./types.ts";

/** One path opened for one cell. */
export interface Session {
  /** The hypervisor whose counters see this path's exits (null for the baselines). */
  readonly hv: Hypervisor | null;
  /** One write buffer per queue slot, `blockSize` bytes each, filled with patterned data. */
  readonly bufs: Uint8Array[];
  /** Read `sectors` at `lba` into slot `slot`'s view of the data; resolves to the bytes read. */
  read(lba: number, sectors: number, slot: number): Uint8Array | Promise<Uint8Array>;
  write(lba: number, data: Uint8Array, slot: number): void | Promise<void>;
  /** Storage requests submitted so far (after any merging), or null when the path has no engine. */
  storageRequests(): number | null;
  /** Whether the memory the data lands in starts on a page boundary (guest RAM, or the baseline's buffers). */
  readonly ramAligned: boolean;
  /** A driver loop of the path's own (the libuv baseline keeps callbacks in flight without promises). */
  loop?(op: "read" | "write", sectors: number, next: OffsetSource, deadline: number): Promise<number>;
  close(): Promise<void>;
}

export interface ImageRef {
  path: string;
  bytes: number;
}

const PV_VARIANTS: Partial<Record<PathVariant, PvSettings>> = {
  pv: { ringPages: 1, indirect: 32, persistent: true, merge: false },
  "pv-ring16": { ringPages: 16, indirect: 32, persistent: true, merge: false },
  "pv-noindirect": { ringPages: 1, indirect: 0, persistent: true, merge: false },
  "pv-nopersistent": { ringPages: 1, indirect: 32, persistent: false, merge: false },
  "pv-merge": { ringPages: 1, indirect: 32, persistent: true, merge: true },
};

const IDE_VIA: Partial<Record<PathVariant, AtaVia>> = {
  pio16: "pio",
  pio32: "pio32",
  rep: "rep",
  dma: "dma",
};

const LABELS: Record<PathVariant, string> = {
  "fs-sync": "node:fs readSync/writeSync, page-aligned buffers",
  "fs-libuv": "node:fs callbacks (libuv pool), page-aligned buffers",
  pio16: "IDE PIO 16-bit",
  pio32: "IDE PIO 32-bit",
  rep: "IDE PIO REP INSW/OUTSW",
  dma: "IDE Bus Master DMA",
  pv: "PV 1-page ring",
  "pv-ring16": "PV 16-page ring",
  "pv-noindirect": "PV no indirect",
  "pv-nopersistent": "PV no persistent grants",
  "pv-merge": "PV with merging",
};

const BACKEND_LABELS: Record<BackendKind, string> = {
  raw: "",
  null: ", null disk",
  readsync: ", the baseline's readSync as its disk",
};

/** Blkif slots in a ring of `pages` pages (32 per 4 KiB page for the 112-byte x86_64 entries). */
const SLOTS_PER_PAGE = 32;

export function pathSpec(
  variant: PathVariant,
  engine: EngineKind | null,
  backend: BackendKind = "raw",
): PathSpec {
  const pv = PV_VARIANTS[variant];
  if (variant === "fs-sync" || variant === "fs-libuv") {
    return {
      id: variant,
      family: "baseline",
      variant,
      engine: null,
      backend: "raw",
      maxQd: variant === "fs-sync" ? 1 : 64,
      label: LABELS[variant],
    };
  }
  if (!engine) throw new RangeError(`${variant} needs a storage engine`);
  const family = pv ? "pv" : "ide";
  const prefix = family === "ide" ? `ide-${variant}` : variant;
  return {
    id: `${prefix}/${engine}/${backend}`,
    family,
    variant,
    engine,
    backend,
    maxQd: pv ? pv.ringPages * SLOTS_PER_PAGE : 1,
    label: `${LABELS[variant]}, ${engine}${BACKEND_LABELS[backend]}`,
    ...(pv ? { pv } : {}),
  };
}

/** The baseline's buffers: page-aligned (as guest RAM is), so the comparison is not about alignment. */
function slotBuffers(blockSize: number, qd: number): Uint8Array[] {
  const all = allocAligned(blockSize * qd, false);
  const bufs: Uint8Array[] = [];
  for (let i = 0; i < qd; i++) {
    bufs.push(fillPattern(all.subarray(i * blockSize, (i + 1) * blockSize), i * (blockSize / SECTOR), 0xb0));
  }
  return bufs;
}

/** Whether a machine's RAM is known to start on a page boundary (the default RAM is). */
function ramAligned(hv: Hypervisor): boolean {
  return (hv.mem as Partial<GuestRam>).pageAligned === true;
}

function openBackend(image: ImageRef, backend: BackendKind, cache: CacheState, w: Workload): BlockBackend {
  if (backend === "null") return new NullBackend(image.bytes / SECTOR);
  if (backend === "readsync") return new BaselineReadDisk(image, w.blockSize, cache === "cold");
  return openImage(image.path, { direct: cache === "cold", lock: false });
}

/**
 * A medium whose read is the baseline's own storage call: `readSync` of the requested bytes of the image into a
 * page-aligned buffer of its own (the guest's buffers are left as they are). A path over it does the protocol's
 * work and, where the device model makes its storage request, exactly the system call the baseline makes: the
 * floor in place (src/bench/interleave.ts). Reads only: the floors are measured on read workloads.
 */
class BaselineReadDisk implements BlockBackend {
  readonly sectorSize = SECTOR;
  readonly sectorCount: number;
  /** Writable as the null disk and the image are, so the device is set up the same way over all three. */
  readonly readOnly = false;
  readonly describe = "baseline readSync";
  private readonly fd: number;
  private readonly own: Uint8Array;

  constructor(image: ImageRef, blockSize: number, direct: boolean) {
    this.sectorCount = image.bytes / SECTOR;
    this.fd = fs.openSync(image.path, fs.constants.O_RDONLY | (direct ? fs.constants.O_DIRECT : 0));
    this.own = allocAligned(blockSize, false);
  }

  read(sector: number, bufs: readonly Uint8Array[]): void {
    let bytes = 0;
    for (let i = 0; i < bufs.length; i++) bytes += bufs[i]!.length;
    fs.readSync(this.fd, this.own, 0, Math.min(bytes, this.own.length), sector * SECTOR);
  }
  write(): void {
    throw new RangeError("the baseline-read disk only reads");
  }
  flush(): void {}
  discard(): void {}
  close(): void {
    fs.closeSync(this.fd);
  }
}

export async function openSession(
  spec: PathSpec,
  w: Workload,
  cache: CacheState,
  image: ImageRef,
): Promise<Session> {
  if (spec.family === "baseline") return openBaseline(spec.variant, w, cache, image);
  const backend = openBackend(image, spec.backend, cache, w);
  try {
    const engine = new TapEngine(makeEngine(backend, spec.engine!, { maxInflight: 64 }));
    if (spec.family === "ide") return await openIde(spec.variant, engine, backend, w);
    return await openPv(spec.pv!, engine, backend, w);
  } catch (e) {
    backend.close();
    throw e;
  }
}

function openBaseline(variant: PathVariant, w: Workload, cache: CacheState, image: ImageRef): Session {
  const direct = cache === "cold";
  const fd = fs.openSync(image.path, fs.constants.O_RDWR | (direct ? fs.constants.O_DIRECT : 0));
  const bufs = slotBuffers(w.blockSize, w.qd);
  const len = w.blockSize;
  const session: Session = {
    hv: null,
    bufs,
    ramAligned: true,
    read(lba, sectors, slot) {
      const buf = bufs[slot]!;
      fs.readSync(fd, buf, 0, sectors * SECTOR, lba * SECTOR);
      return buf;
    },
    write(lba, data) {
      fs.writeSync(fd, data, 0, data.length, lba * SECTOR);
    },
    storageRequests: () => null,
    close: async () => fs.closeSync(fd),
  };
  if (variant === "fs-libuv") {
    session.read = (lba, sectors, slot) =>
      new Promise((resolve, reject) => {
        const buf = bufs[slot]!;
        fs.read(fd, buf, 0, sectors * SECTOR, lba * SECTOR, (err) => (err ? reject(err) : resolve(buf)));
      });
    session.write = (lba, data) =>
      new Promise((resolve, reject) => {
        fs.write(fd, data, 0, data.length, lba * SECTOR, (err) => (err ? reject(err) : resolve()));
      });
    // Keep `qd` callbacks in flight, each issuing the next from its completion: the cheapest way Node has.
    session.loop = (op, sectors, next, deadline) =>
      new Promise((resolve, reject) => {
        let ops = 0;
        let active = 0;
        let stop = false;
        let failed = false;
        const issue = (slot: number): void => {
          const buf = bufs[slot]!;
          const pos = next() * SECTOR;
          active++;
          const done = (err: NodeJS.ErrnoException | null): void => {
            active--;
            if (err) {
              stop = true;
              if (!failed) reject(err);
              failed = true;
              return;
            }
            ops++;
            if (!stop && performance.now() >= deadline) stop = true;
            if (!stop) issue(slot);
            else if (active === 0 && !failed) resolve(ops);
          };
          if (op === "read") fs.read(fd, buf, 0, len, pos, done);
          else fs.write(fd, buf, 0, len, pos, done);
        };
        void sectors;
        for (let s = 0; s < w.qd; s++) issue(s);
      });
  }
  return session;
}

async function openIde(variant: PathVariant, engine: TapEngine, backend: BlockBackend, w: Workload) {
  // As a user's program: describe the machine, build it, and let the guest's ATA driver find the drive.
  const m = buildMachine({
    ide: [{ position: "primary-master", medium: { engine } }],
    pc: { firmwareInit: true },
  });
  const hv = m.hv;
  const drive = (await openAtaPath(m, IDE_VIA[variant]!)).drive;
  // A kernel's buffers are in its own RAM: each slot is a DMA-able guest buffer, so the PRDs (or REP INSW's
  // destination) point at it and nothing is copied after the transfer.
  const bufs: Uint8Array[] = [];
  for (let i = 0; i < w.qd; i++) {
    bufs.push(fillPattern(drive.allocBuffer(w.blockSize), i * (w.blockSize / SECTOR), 0xb0));
  }
  const session: Session = {
    hv,
    bufs,
    ramAligned: ramAligned(hv),
    read: async (lba, sectors, slot) => {
      const out = bufs[slot]!.subarray(0, sectors * SECTOR);
      await drive.readInto(lba, out);
      return out;
    },
    write: (lba, data) => drive.write(lba, data),
    storageRequests: () => engine.submitted,
    close: async () => {
      await m.close();
      await engine.drain();
      backend.close();
    },
  };
  return session;
}

async function openPv(pv: PvSettings, engine: TapEngine, backend: BlockBackend, w: Workload) {
  // As a user's program: a machine with one PV disk on the engine, and the guest's blkfront connected to it.
  // The default RAM holds every slot's buffer (the guest's own pages) and the driver's pool and indirect
  // pages; a deeper queue of larger blocks gets more.
  const slotBytes = w.qd * w.blockSize;
  const m = buildMachine({
    pc: false,
    ...(slotBytes > 8 * 1024 * 1024 ? { ram: 32 * 1024 * 1024 + 2 * slotBytes } : {}),
    pv: [{ medium: { engine }, persistent: pv.persistent, merge: pv.merge }],
  });
  const path = await openPvPath(m, {
    ringPages: pv.ringPages,
    indirect: pv.indirect,
    persistent: pv.persistent,
    // Every slot's pages may stay granted (zero copy), within what one grant table holds beside the pool. Each
    // slot's buffer takes whole pages of its own (a 512-byte block one page).
    directPages: Math.min(8192, w.qd * Math.ceil(w.blockSize / 4096)),
  });
  const front = path.front;
  // A kernel reads into and writes from pages it owns: each slot's buffer is guest memory, granted as it is.
  const bufs: Uint8Array[] = [];
  for (let i = 0; i < w.qd; i++) {
    bufs.push(fillPattern(front.allocBuffer(w.blockSize), i * (w.blockSize / SECTOR), 0xb0));
  }
  const session: Session = {
    hv: m.hv,
    bufs,
    ramAligned: ramAligned(m.hv),
    read: async (lba, sectors, slot) => {
      const out = bufs[slot]!.subarray(0, sectors * SECTOR);
      await front.readInto(lba, out);
      return out;
    },
    write: (lba, data) => front.write(lba, data),
    storageRequests: () => engine.submitted,
    loop: (op, sectors, next, deadline) => pvLoop(front, bufs, op, sectors, next, deadline),
    close: async () => {
      await path.close();
      await m.close();
      await engine.drain();
      backend.close();
    },
  };
  return session;
}

/**
 * Keep one request per slot in flight with blkfront's callback API, each slot issuing its next request from
 * its completion (as the libuv baseline does with `fs.read` callbacks): no promise per request.
 */
function pvLoop(
  front: Blkfront,
  bufs: Uint8Array[],
  op: "read" | "write",
  sectors: number,
  next: OffsetSource,
  deadline: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let ops = 0;
    let active = 0;
    let stop = false;
    let failed = false;
    const views = bufs.map((b) => b.subarray(0, sectors * SECTOR));
    const fail = (e: unknown): void => {
      stop = true;
      if (!failed) reject(e);
      failed = true;
    };
    const issue = (slot: number): void => {
      active++;
      try {
        if (op === "read") front.submitRead(next(), views[slot]!, dones[slot]!);
        else front.submitWrite(next(), views[slot]!, dones[slot]!);
      } catch (e) {
        active--;
        fail(e);
      }
    };
    const dones = views.map((_, slot) => (err: Error | null): void => {
      active--;
      if (err) return fail(err);
      ops++;
      if (!stop && performance.now() >= deadline) stop = true;
      if (!stop) issue(slot);
      else if (active === 0 && !failed) resolve(ops);
    });
    for (let s = 0; s < bufs.length; s++) issue(s);
  });
}
