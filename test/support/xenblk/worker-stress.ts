/**
 * A blkif ring under load across threads: a frontend worker and a backend worker share one guest memory
 * (SharedArrayBuffer), one shared ring (ring.ts, Atomics on the header) and event channels (the Atomics
 * ports of worker-transport.ts, or the host's Xen event channels), and push a large number of requests
 * through with random sizes, random completion order and random notify timing. Everything is checked:
 *
 * - no lost or duplicated request: the ring-level backend sees sequence numbers 1, 2, 3, ... in ring order
 *   (the sequence number travels in the high half of the 64-bit id, the ring slot in the low half); with
 *   blkback, a lost request shows as a stall and a duplicated one as a second answer;
 * - no lost, duplicated or misdirected response: each response must name an outstanding slot carrying that
 *   very sequence number and operation, and every request is answered exactly once;
 * - no corrupted data: every written sector carries a stamp (sequence number, sector, check word) that the
 *   ring-level backend verifies before it stores the sector, and that the frontend verifies on every read
 *   against its model of the disk; at the end the whole disk is compared with that model;
 * - no lost notification: a side that wakes from a timed-out sleep with work on the ring reports it.
 *
 * Two backends:
 * - `backend: "ring"`: a ring-level backend (BackRing + decodeRequest + encodeResponse over a disk array) with
 *   the Atomics event channel of worker-transport.ts. It consumes as Linux blkback does (drain to req_prod,
 *   RING_FINAL_CHECK_FOR_REQUESTS before sleeping) but holds requests and completes them in random order,
 *   pushing responses one at a time (QEMU xen-block style) or in random batches, and checks the request
 *   sequence and the written data itself. By default every page goes through grant table v1
 *   (hypervisor/grant-table.ts, its state shared by both threads): the frontend grants and revokes, the
 *   backend maps and unmaps with Xen's checks; with `grants: false` grant references are plain guest frame
 *   numbers and only the ring transport is exercised.
 * - `backend: "blkback"`: the real backend data path (blkback-io.ts) on its worker, over the host's shared
 *   grant tables and event channels (hypervisor/xen-shared.ts), storage through the async engine on a memory
 *   disk whose completions are shuffled, so blkback answers out of order as it does under real AIO.
 */

import { isMainThread, parentPort, workerData } from "node:worker_threads";
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RSP_OKAY,
  type BlkifAbi,
  BlkifRequest,
  BlkifResponse,
  blkifLayout,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
} from "../../../src/xenblk/abi.ts";
import { zeroCounts } from "../../../src/hypervisor/accounting.ts";
import {
  GNTMAP_host_map,
  GNTMAP_readonly,
  GNTST_okay,
  GrantMapper,
  GrantTable,
  GuestGrantTable,
} from "../../../src/hypervisor/grant-table.ts";
import { GuestRam } from "../../../src/hypervisor/memory.ts";
import { BackRing, FrontRing, RING_PAGE_SIZE, ringSize, sharedRingInit } from "../../../src/xenblk/ring.ts";
import {
  AtomicEventChannels,
  type AtomicPortStats,
  spawnWorker,
  workerResult,
} from "../../../src/machine/worker-transport.ts";
import { BlkbackIo } from "../../../src/xenblk/blkback-io.ts";
import { EventChannelDomain, type EventChannels } from "../../../src/hypervisor/event-channel.ts";
import { XenHost } from "../../../src/hypervisor/xen-host.ts";
import { type XenSharedState, attachXenShared, xenSharedState } from "../../../src/hypervisor/xen-shared.ts";
import { AsyncEngine, MemoryBackend, performSync } from "../../../src/storage/index.ts";
import type { BlockBackend, IoCallback, MediumRequest } from "../../../src/storage/types.ts";

export interface StressConfig {
  /** Requests to push through (reads, writes and a few flushes). */
  requests: number;
  abi: BlkifAbi;
  /** Ring pages (1..16, a power of two). */
  ringPages: number;
  /** Random seed (both sides derive their own streams from it). */
  seed: number;
  /** Largest request in sectors (1..88). */
  maxSectors: number;
  /** Disk size in sectors. */
  diskSectors: number;
  /** Initial ring index (near 2^32 to cross the wrap during the run). */
  ringStart: number;
  /** Give up when a side makes no progress for this long. */
  stallMs: number;
  /** Before sleeping, a side polls its event for a random number of iterations up to this. */
  maxSpin: number;
  /**
   * Go through grant table v1 as real drivers do: the frontend grants the ring and every data page (read-only
   * for writes) in its table in guest memory and revokes each grant when the response arrives; the backend maps
   * every page it touches (Xen's checks, in-use flags) and unmaps it before answering. The table's state is
   * shared by the two threads. When false, grant references are plain guest frame numbers.
   */
  grants: boolean;
  /** Which backend serves the ring (see above). */
  backend: "ring" | "blkback";
}

export const DEFAULT_STRESS: StressConfig = {
  requests: 1_000_000,
  abi: "x86_64-abi",
  ringPages: 1,
  seed: 1,
  maxSectors: 88,
  diskSectors: 88 * 1024,
  ringStart: 0xffffffff - 1000,
  stallMs: 10_000,
  maxSpin: 2_000,
  grants: true,
  backend: "ring",
};

export interface SideReport {
  role: "frontend" | "backend";
  ok: boolean;
  errors: string[];
  /** Frontend: requests issued and completed; backend: consumed and answered. */
  issued: number;
  completed: number;
  reads: number;
  writes: number;
  flushes: number;
  sectors: number;
  /** Pushes whose event-index check asked for a notification (= event sends). */
  notifies: number;
  pushes: number;
  /** FINAL_CHECK found work after re-arming the event index (the race the macro closes). */
  finalCheckRaces: number;
  /** Requests answered in an order different from the one they were issued in. */
  reordered: number;
  ms: number;
}

export interface StressReport {
  config: StressConfig;
  frontend: SideReport;
  backend: SideReport;
  /** Sectors whose final disk contents differ from the frontend's model. */
  diskMismatches: number;
  /** Atomics event-channel counters (ring backend only): frontend -> backend and backend -> frontend. */
  toBackend: AtomicPortStats | null;
  toFrontend: AtomicPortStats | null;
  ms: number;
  requestsPerSecond: number;
}

// ---- shared layout ----------------------------------------------------------------------------------------

const RING_GPA = 0x1_0000;
/** The guest's grant table: 16 frames (8192 refs) after the largest ring. */
const GNT_GPA = 0x2_0000;
const GNT_FRAMES = 16;
const FRONT_DOM = 1;
const BACK_DOM = 0;
const BUF_GPA = 0x10_0000;
const PAGES_PER_SLOT = BLKIF_MAX_SEGMENTS_PER_REQUEST;
const SECTOR = 512;
const SECTORS_PER_PAGE = 8;
/** Requests target disjoint regions of this many sectors so completion order never changes the outcome. */
const REGION = 88;
const MAGIC = 0x5842_4c4b; // "XBLK"

// Control words.
const C_STOP = 0;
const C_PROGRESS_FE = 1;
const C_PROGRESS_BE = 2;
/** Grant refs of the ring pages (grants mode), published by the frontend before it starts. */
const C_RING_REFS = 4;
const C_WORDS = C_RING_REFS + 16;

const PORT_TO_BACKEND = 0;
const PORT_TO_FRONTEND = 1;

interface Shared {
  ram: SharedArrayBuffer;
  /** Where the ring and the data buffers (11 pages per ring slot) are in guest memory. */
  ringGpa: number;
  bufGpa: number;
  disk: SharedArrayBuffer;
  /** Frontend's model: the sequence number of the write that last stored each sector (0 = never). */
  model: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  evt: SharedArrayBuffer;
  /** Ring backend: the grant table's shared (hypervisor-side) state. */
  grantState: SharedArrayBuffer | null;
  /** blkback: the host's shared state, and the frontend's unbound event-channel port. */
  xen: XenSharedState | null;
  frontPort: number;
}

interface WorkerInput {
  kind: "xenblk-stress";
  role: "frontend" | "backend";
  config: StressConfig;
  shared: Shared;
}

/** Bytes of data buffers: 11 pages per ring slot. */
function bufBytes(c: StressConfig): number {
  return ringSize(c.ringPages, blkifLayout(c.abi).entrySize) * PAGES_PER_SLOT * RING_PAGE_SIZE;
}

/** One end of an event channel as a driver loop sees it. */
interface EventEnd {
  /** Kick the peer. */
  send(): void;
  /** Take a pending event without blocking. */
  poll(): boolean;
  /** Spin, then sleep until an event comes or `timeoutMs` passes; true when an event was taken. */
  wait(spin: number, timeoutMs: number): boolean;
}

function atomicEnd(evt: AtomicEventChannels, sendPort: number, recvPort: number): EventEnd {
  return {
    send: () => evt.send(sendPort),
    poll: () => evt.poll(recvPort),
    wait: (spin, timeoutMs) => evt.wait(recvPort, spin, timeoutMs),
  };
}

/**
 * A Xen event channel of the shared host state: EVTCHNOP_send to the peer; receiving is the guest's own
 * pending bit for the port, and sleeping is blocking on its vcpu_info upcall word (what evtchn_do_upcall
 * clears before scanning).
 */
function xenEnd(ev: EventChannels, dom: number, port: number): EventEnd {
  const d = ev.domain(dom);
  const take = (): boolean => {
    if (!d.isPending(port)) return false;
    d.clearPending(port);
    return true;
  };
  return {
    send: () => ev.send(dom, port),
    poll: take,
    wait: (spin, timeoutMs) => {
      for (let i = 0; i < spin; i++) if (take()) return true;
      d.takeUpcall();
      if (take()) return true;
      Atomics.wait(d.w, EventChannelDomain.UPCALL_WORD, 0, timeoutMs);
      return take();
    },
  };
}

/**
 * After a sleep that timed out: if the peer left work on the ring, it must also have sent the event (the
 * event-index protocol guarantees it). Give an in-flight send time to land (the peer may be descheduled between
 * publishing and sending); if none comes, a notification was lost.
 */
function lostNotification(evt: EventEnd, work: () => number): boolean {
  if (work() === 0) return false;
  const t = performance.now();
  while (performance.now() - t < 2000) if (evt.poll()) return false;
  return true;
}

/** xorshift32 with a stream id. */
function rng(seed: number): (n: number) => number {
  let x = (seed * 0x9e3779b1) >>> 0 || 0x1234567;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

function checkWord(seq: number, sector: number): number {
  return (Math.imul(seq, 0x85ebca6b) ^ Math.imul(sector, 0xc2b2ae35) ^ MAGIC) >>> 0;
}

// ---- frontend ---------------------------------------------------------------------------------------------

function runFrontend(cfg: StressConfig, sh: Shared): SideReport {
  const t0 = performance.now();
  const L = blkifLayout(cfg.abi);
  const ram = new Uint8Array(sh.ram);
  const words = new Uint32Array(sh.ram);
  const model = new Uint32Array(sh.model);
  const ctl = new Int32Array(sh.ctl);
  const view = new Uint8Array(sh.ram, sh.ringGpa, cfg.ringPages * RING_PAGE_SIZE);
  let evt: EventEnd;
  let gnt: GuestGrantTable | null = null;
  if (sh.xen) {
    // The guest kernel's side of the shared host: its grant table and its event-channel port.
    const peer = attachXenShared(sh.xen);
    gnt = new GuestGrantTable(peer.grantTable(FRONT_DOM)!);
    evt = xenEnd(peer.evtchn, FRONT_DOM, sh.frontPort);
  } else {
    evt = atomicEnd(new AtomicEventChannels(sh.evt), PORT_TO_BACKEND, PORT_TO_FRONTEND);
    if (cfg.grants) {
      const mem = new GuestRam(sh.ram.byteLength, { buffer: sh.ram });
      gnt = new GuestGrantTable(GrantTable.attach(FRONT_DOM, mem, sh.grantState!));
    }
  }
  sharedRingInit(view);
  const front = FrontRing.attachAt(view, L.entrySize, cfg.ringStart, cfg.ringPages);
  const s = front.sring;
  s.reqProd = cfg.ringStart;
  s.rspProd = cfg.ringStart;
  s.reqEvent = (cfg.ringStart + 1) >>> 0;
  s.rspEvent = (cfg.ringStart + 1) >>> 0;
  const rep = newReport("frontend");
  const err = (m: string): void => {
    if (rep.errors.length < 20) rep.errors.push(m);
  };
  const rand = rng(cfg.seed * 2 + 1);
  const size = front.size;
  const freeSlots: number[] = [];
  for (let i = size - 1; i >= 0; i--) freeSlots.push(i);
  const slotSeq = new Uint32Array(size);
  const slotOp = new Uint8Array(size);
  const slotSector = new Float64Array(size);
  const slotCount = new Uint32Array(size);
  const slotFirst = new Uint32Array(size);
  const slotBusy = new Uint8Array(size);
  const slotGrefs = new Uint32Array(size * PAGES_PER_SLOT);
  const slotNseg = new Uint8Array(size);
  const regions = Math.floor(cfg.diskSectors / REGION);
  const regionBusy = new Uint8Array(regions);
  const req = new BlkifRequest();
  const rsp = new BlkifResponse();
  if (gnt) {
    for (let p = 0; p < cfg.ringPages; p++) {
      Atomics.store(ctl, C_RING_REFS + p, gnt.grantAccess(BACK_DOM, (sh.ringGpa >>> 12) + p, false));
    }
  }
  // Tell the backend where the ring starts (it attaches at rsp_prod, as Linux blkback does) and go.
  Atomics.store(ctl, C_PROGRESS_FE, 1);
  Atomics.notify(ctl, C_PROGRESS_FE);

  let seq = 0;
  let lastSeqDone = 0;
  const issue = (): void => {
    const slot = freeSlots.pop()!;
    seq++;
    let region = rand(regions);
    while (regionBusy[region]) region = (region + 1) % regions;
    regionBusy[region] = 1;
    const pick = rand(100);
    const op = pick < 2 ? BLKIF_OP_FLUSH_DISKCACHE : pick < 51 ? BLKIF_OP_READ : BLKIF_OP_WRITE;
    req.clear();
    req.operation = op;
    req.idLo = slot;
    req.idHi = seq;
    req.handle = 51712;
    slotSeq[slot] = seq;
    slotOp[slot] = op;
    slotBusy[slot] = 1;
    slotSector[slot] = region * REGION;
    slotCount[slot] = 0;
    slotNseg[slot] = 0;
    if (op !== BLKIF_OP_FLUSH_DISKCACHE) {
      const n = 1 + rand(cfg.maxSectors);
      const first = rand(Math.min(SECTORS_PER_PAGE, REGION - n + 1));
      const sector = region * REGION + rand(REGION - n + 1);
      slotSector[slot] = sector;
      slotCount[slot] = n;
      slotFirst[slot] = first;
      req.sector = sector;
      const base = sh.bufGpa + slot * PAGES_PER_SLOT * RING_PAGE_SIZE;
      let k = 0;
      let seg = 0;
      while (k < n) {
        const f = seg === 0 ? first : 0;
        const l = Math.min(SECTORS_PER_PAGE - 1, f + (n - k) - 1);
        const gfn = (base >>> 12) + seg;
        // The backend only reads the page of a write: grant it read-only.
        const gref = gnt ? gnt.grantAccess(BACK_DOM, gfn, op === BLKIF_OP_WRITE) : gfn;
        slotGrefs[slot * PAGES_PER_SLOT + seg] = gref;
        req.setSegment(seg, gref, f, l);
        for (let sct = f; sct <= l; sct++, k++) {
          const w = (base + seg * RING_PAGE_SIZE + sct * SECTOR) >>> 2;
          if (op === BLKIF_OP_WRITE) {
            words[w] = seq;
            words[w + 1] = sector + k;
            words[w + 2] = checkWord(seq, sector + k);
            words[w + 3] = MAGIC;
          } else {
            // A read must overwrite this: leave a stamp no write ever produces.
            words[w] = 0xffffffff;
            words[w + 3] = 0;
          }
        }
        seg++;
      }
      req.nrSegments = seg;
      slotNseg[slot] = seg;
      rep.sectors += n;
    }
    encodeRequest(L, view, front.nextRequest(), req);
    rep.issued++;
    if (op === BLKIF_OP_READ) rep.reads++;
    else if (op === BLKIF_OP_WRITE) rep.writes++;
    else rep.flushes++;
  };

  const complete = (): void => {
    const off = front.nextResponse();
    decodeResponse(view, off, rsp);
    const slot = rsp.idLo;
    if (!(slot < size) || !slotBusy[slot] || slotSeq[slot] !== rsp.idHi) {
      err(`response for slot ${slot} seq ${rsp.idHi}: no such outstanding request`);
      return;
    }
    const op = slotOp[slot]!;
    if (rsp.operation !== op) err(`seq ${rsp.idHi}: response operation ${rsp.operation}, request ${op}`);
    if (rsp.status !== BLKIF_RSP_OKAY) err(`seq ${rsp.idHi}: status ${rsp.status}`);
    const sector = slotSector[slot]!;
    const n = slotCount[slot]!;
    const mySeq = slotSeq[slot]!;
    if (mySeq !== lastSeqDone + 1) rep.reordered++;
    lastSeqDone = mySeq;
    if (gnt) {
      // The backend answered, so it must have unmapped: revoking cannot find the grant still in use.
      for (let k = 0; k < slotNseg[slot]!; k++) {
        if (!gnt.tryEndAccess(slotGrefs[slot * PAGES_PER_SLOT + k]!)) {
          err(`seq ${mySeq}: grant ${slotGrefs[slot * PAGES_PER_SLOT + k]} still mapped after the response`);
        }
      }
    }
    if (op === BLKIF_OP_WRITE) {
      for (let k = 0; k < n; k++) model[sector + k] = mySeq;
    } else if (op === BLKIF_OP_READ) {
      const base = sh.bufGpa + slot * PAGES_PER_SLOT * RING_PAGE_SIZE + slotFirst[slot]! * SECTOR;
      for (let k = 0; k < n; k++) {
        const w = (base + k * SECTOR) >>> 2;
        const want = model[sector + k]!;
        const ok =
          want === 0
            ? words[w] === 0 && words[w + 1] === 0 && words[w + 2] === 0 && words[w + 3] === 0
            : words[w] === want &&
              words[w + 1] === sector + k &&
              words[w + 2] === checkWord(want, sector + k) &&
              words[w + 3] === MAGIC;
        if (!ok) {
          err(
            `seq ${mySeq}: read of sector ${sector + k} returned stamp ${words[w]}/${words[w + 1]}, expected write ${want}`,
          );
          break;
        }
      }
    }
    regionBusy[Math.floor(sector / REGION)] = 0;
    slotBusy[slot] = 0;
    freeSlots.push(slot);
    rep.completed++;
  };

  let lastProgress = performance.now();
  while (rep.completed < cfg.requests && rep.errors.length === 0) {
    // Produce a random batch (random notify timing: sometimes one request per push, sometimes many).
    let batch = Math.min(1 + rand(rand(4) === 0 ? size : 4), cfg.requests - rep.issued, front.freeRequests());
    const produced = batch > 0;
    while (batch-- > 0) issue();
    if (produced) {
      if (rand(8) === 0) for (let spin = rand(2000); spin > 0; spin--) Atomics.load(ctl, C_STOP);
      rep.pushes++;
      if (front.pushRequestsAndCheckNotify()) {
        rep.notifies++;
        evt.send();
      }
    }
    // Consume responses (blkif_interrupt).
    if (front.responseProdOverflow(s.rspProd)) {
      err(`backend published rsp_prod ${s.rspProd} beyond ring (rsp_cons ${front.rspCons})`);
      break;
    }
    let got = 0;
    while (front.unconsumedResponses() > 0) {
      complete();
      got++;
    }
    if (got) {
      lastProgress = performance.now();
      Atomics.store(ctl, C_PROGRESS_FE, rep.completed);
      continue;
    }
    const canProduce = rep.issued < cfg.requests && front.freeRequests() > 0;
    if (canProduce) continue;
    // Nothing to do until the backend answers: re-arm rsp_event and sleep if still nothing. A stale event
    // (sent while we were busy) is dropped first: the check below sees whatever it announced, and from here
    // on a pending event can only come from a push after the check.
    evt.poll();
    const more = front.finalCheckForResponses();
    if (more > 0) {
      rep.finalCheckRaces++;
      continue;
    }
    if (!evt.wait(rand(cfg.maxSpin + 1), 1000)) {
      if (lostNotification(evt, () => front.unconsumedResponses())) {
        err(`lost notification: responses ${front.rspCons}..${s.rspProd} waiting, rsp_event ${s.rspEvent}`);
      } else if (performance.now() - lastProgress > cfg.stallMs) {
        err(`stalled: ${rep.completed}/${cfg.requests} completed, ${size - freeSlots.length} outstanding`);
      }
    }
  }
  Atomics.store(ctl, C_STOP, 1);
  evt.send();
  rep.ok = rep.errors.length === 0 && rep.completed === cfg.requests;
  rep.ms = performance.now() - t0;
  return rep;
}

// ---- backend ----------------------------------------------------------------------------------------------

function runRingBackend(cfg: StressConfig, sh: Shared): SideReport {
  const t0 = performance.now();
  const L = blkifLayout(cfg.abi);
  const ram = new Uint8Array(sh.ram);
  const words = new Uint32Array(sh.ram);
  const disk = new Uint8Array(sh.disk);
  const ctl = new Int32Array(sh.ctl);
  const evt = atomicEnd(new AtomicEventChannels(sh.evt), PORT_TO_FRONTEND, PORT_TO_BACKEND);
  // Wait for the frontend to initialise the ring, then attach where its responses stand (BACK_RING_ATTACH).
  while (Atomics.load(ctl, C_PROGRESS_FE) === 0) Atomics.wait(ctl, C_PROGRESS_FE, 0, 100);
  // Grants mode: dom0's grant operations on the guest's table (the same shared state as the guest's thread).
  const guestTable = cfg.grants
    ? GrantTable.attach(FRONT_DOM, new GuestRam(sh.ram.byteLength, { buffer: sh.ram }), sh.grantState!)
    : null;
  const mapper = guestTable
    ? new GrantMapper(BACK_DOM, (d) => (d === FRONT_DOM ? guestTable : undefined), {
        acct: { counts: zeroCounts() },
        hypercall: () => {},
      })
    : null;
  let ringGpa = sh.ringGpa;
  if (mapper) {
    // Map the ring pages by their grant refs, as connect_ring does; they must come out contiguous.
    for (let p = 0; p < cfg.ringPages; p++) {
      const m = mapper.map({
        dom: FRONT_DOM,
        ref: Atomics.load(ctl, C_RING_REFS + p),
        flags: GNTMAP_host_map,
      });
      if (m.status !== GNTST_okay) throw new Error(`mapping ring page ${p}: status ${m.status}`);
      if (p === 0) ringGpa = m.gpa;
      else if (m.gpa !== ringGpa + p * RING_PAGE_SIZE) throw new Error(`ring pages not contiguous`);
    }
  }
  const view = new Uint8Array(sh.ram, ringGpa, cfg.ringPages * RING_PAGE_SIZE);
  const probe = new BackRing(view, L.entrySize, cfg.ringPages);
  const back = BackRing.attachAt(view, L.entrySize, probe.sring.rspProd, cfg.ringPages);
  const rep = newReport("backend");
  const err = (m: string): void => {
    if (rep.errors.length < 20) rep.errors.push(m);
  };
  const rand = rng(cfg.seed * 2 + 2);
  const pool: BlkifRequest[] = Array.from({ length: back.size }, () => new BlkifRequest());
  const held: BlkifRequest[] = [];
  let expectSeq = 1;

  /** Serve one request: check and move its data, then write its response (not yet pushed). */
  const serve = (r: BlkifRequest): void => {
    const op = r.operation;
    let status = BLKIF_RSP_OKAY;
    if (op === BLKIF_OP_READ || op === BLKIF_OP_WRITE) {
      let pos = r.sector * SECTOR;
      let sector = r.sector;
      for (let i = 0; i < r.nrSegments; i++) {
        const f = r.segFirst[i]!;
        const l = r.segLast[i]!;
        if (l >= SECTORS_PER_PAGE || l < f) {
          err(`seq ${r.idHi}: bad segment ${f}..${l}`);
          status = -1;
          break;
        }
        let page = r.segGref[i]! * RING_PAGE_SIZE;
        let handle = -1;
        if (mapper) {
          // Map only what the request names, writable only for a read (we write the guest's page).
          const m = mapper.map({
            dom: FRONT_DOM,
            ref: r.segGref[i]!,
            flags: GNTMAP_host_map | (op === BLKIF_OP_WRITE ? GNTMAP_readonly : 0),
          });
          if (m.status !== GNTST_okay) {
            err(`seq ${r.idHi}: grant ${r.segGref[i]} did not map (status ${m.status})`);
            status = -1;
            break;
          }
          page = m.gpa;
          handle = m.handle;
        }
        const a = page + f * SECTOR;
        const len = (l - f + 1) * SECTOR;
        if (op === BLKIF_OP_WRITE) {
          for (let k = 0; k <= l - f; k++) {
            const w = (a + k * SECTOR) >>> 2;
            if (
              words[w] !== r.idHi ||
              words[w + 1] !== sector + k ||
              words[w + 2] !== checkWord(r.idHi, sector + k)
            ) {
              err(
                `seq ${r.idHi}: write data for sector ${sector + k} carries stamp ${words[w]}/${words[w + 1]}`,
              );
              status = -1;
              break;
            }
          }
          disk.set(ram.subarray(a, a + len), pos);
        } else {
          ram.set(disk.subarray(pos, pos + len), a);
        }
        if (handle >= 0) mapper!.unmap(handle);
        pos += len;
        sector += l - f + 1;
        rep.sectors += l - f + 1;
      }
      if (op === BLKIF_OP_READ) rep.reads++;
      else rep.writes++;
    } else if (op === BLKIF_OP_FLUSH_DISKCACHE) {
      rep.flushes++;
    } else {
      err(`seq ${r.idHi}: unexpected operation ${op}`);
    }
    encodeResponse(view, back.nextResponse(), r.idLo, r.idHi, op, status);
    rep.completed++;
  };

  const push = (): void => {
    rep.pushes++;
    if (back.pushResponsesAndCheckNotify()) {
      rep.notifies++;
      evt.send();
    }
  };

  let lastProgress = performance.now();
  for (;;) {
    if (rep.errors.length) break;
    // __do_block_io_op: consume everything the frontend published.
    const rp = back.sring.reqProd;
    if (back.requestProdOverflow(rp)) {
      err(`frontend published req_prod ${rp}, more than the ring holds past rsp_prod_pvt ${back.rspProdPvt}`);
      break;
    }
    let consumed = 0;
    while (back.reqCons !== rp) {
      if (back.requestConsOverflow()) break;
      const r = pool.pop();
      if (!r) {
        err(`more requests than ring slots in flight`);
        break;
      }
      decodeRequest(L, view, back.nextRequest(), r);
      if (r.idHi !== expectSeq)
        err(`request seq ${r.idHi} where ${expectSeq} was next (lost or duplicated request)`);
      expectSeq = (r.idHi + 1) >>> 0;
      held.push(r);
      rep.issued++;
      consumed++;
    }
    // Complete a random subset in random order; at least one when nothing new came in.
    if (held.length) {
      let k = rand(held.length + 1);
      if (k === 0 && consumed === 0) k = 1;
      const batched = rand(2) === 0;
      while (k-- > 0) {
        const i = rand(held.length);
        const r = held[i]!;
        held[i] = held[held.length - 1]!;
        held.pop();
        serve(r);
        pool.push(r);
        if (!batched) push();
      }
      if (batched) push();
      lastProgress = performance.now();
      Atomics.store(ctl, C_PROGRESS_BE, rep.completed);
      continue;
    }
    if (consumed) continue;
    evt.poll(); // as the frontend: drop a stale event before the final check
    const more = back.finalCheckForRequests();
    if (more > 0) {
      rep.finalCheckRaces++;
      continue;
    }
    if (Atomics.load(ctl, C_STOP) !== 0) break;
    if (!evt.wait(rand(cfg.maxSpin + 1), 1000)) {
      if (lostNotification(evt, () => back.unconsumedRequests())) {
        err(
          `lost notification: requests ${back.reqCons}..${back.sring.reqProd} waiting, req_event ${back.sring.reqEvent}`,
        );
      } else if (performance.now() - lastProgress > cfg.stallMs) {
        err(`stalled: ${rep.completed} answered, req_prod ${back.sring.reqProd}, req_cons ${back.reqCons}`);
      }
    }
  }
  rep.ok = rep.errors.length === 0;
  rep.ms = performance.now() - t0;
  return rep;
}

function newReport(role: SideReport["role"]): SideReport {
  return {
    role,
    ok: false,
    errors: [],
    issued: 0,
    completed: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    sectors: 0,
    notifies: 0,
    pushes: 0,
    finalCheckRaces: 0,
    reordered: 0,
    ms: 0,
  };
}

// ---- blkback backend -------------------------------------------------------------------------------------

/**
 * A memory disk whose asynchronous requests complete after a random number of event-loop turns, so that the
 * async engine (and blkback behind it) completes requests out of order, as real AIO does.
 */
class ShuffledCompletionDisk implements BlockBackend {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly readOnly = false;
  readonly describe = "memory (shuffled completions)";
  constructor(
    private readonly inner: MemoryBackend,
    private readonly rand: (n: number) => number,
  ) {
    this.sectorSize = inner.sectorSize;
    this.sectorCount = inner.sectorCount;
  }
  read(sector: number, bufs: readonly Uint8Array[]): void {
    this.inner.read(sector, bufs);
  }
  write(sector: number, bufs: readonly Uint8Array[]): void {
    this.inner.write(sector, bufs);
  }
  flush(): void {}
  discard(sector: number, count: number): void {
    this.inner.discard(sector, count);
  }
  /** The async engine's path: each request runs after 0 to 3 extra turns of the event loop. */
  startIo(req: MediumRequest, done: IoCallback): void {
    let hops = this.rand(4);
    const step = (): void => {
      if (hops-- > 0) setImmediate(step);
      else done(performSync(this.inner, req));
    };
    void Promise.resolve().then(step);
  }
  close(): void {}
}

/**
 * blkback's data path on this worker: attach the ring from the frontend's grant refs and port, serve from the
 * event loop (upcalls via `listen`), and report when the driver says stop.
 */
function runBlkbackBackend(cfg: StressConfig, sh: Shared): Promise<SideReport> {
  const t0 = performance.now();
  const ctl = new Int32Array(sh.ctl);
  while (Atomics.load(ctl, C_PROGRESS_FE) === 0) Atomics.wait(ctl, C_PROGRESS_FE, 0, 100);
  const peer = attachXenShared(sh.xen!);
  const media = new ShuffledCompletionDisk(new MemoryBackend(new Uint8Array(sh.disk)), rng(cfg.seed * 2 + 2));
  const io = new BlkbackIo({
    name: "stress",
    engine: new AsyncEngine(media, { maxInflight: 64 }),
    grants: peer.grants(BACK_DOM),
    evtchn: peer.evtchn,
    frontDom: FRONT_DOM,
    backDom: BACK_DOM,
    frontMem: peer.mem,
    layout: blkifLayout(cfg.abi),
    readOnly: false,
    // The frontend revokes every grant at completion: no persistent grants.
    persistent: false,
  });
  const refs = Array.from({ length: cfg.ringPages }, (_, p) => Atomics.load(ctl, C_RING_REFS + p));
  io.attachRing({ refs, remotePort: sh.frontPort });
  const stopListening = peer.evtchn.listen(BACK_DOM);
  return new Promise<SideReport>((resolve) => {
    parentPort!.on("message", (m: unknown) => {
      if (m !== "stop") return;
      stopListening();
      const st = io.stats;
      const rep = newReport("backend");
      rep.issued = st.requests;
      rep.completed = st.responses;
      rep.reads = st.reads;
      rep.writes = st.writes;
      rep.flushes = st.flushes;
      rep.notifies = st.notifies;
      if (st.errors || st.eopnotsupp)
        rep.errors.push(`blkback answered ${st.errors} errors, ${st.eopnotsupp} EOPNOTSUPP`);
      if (st.ringsHalted) rep.errors.push(`blkback halted the ring`);
      rep.ok = rep.errors.length === 0;
      rep.ms = performance.now() - t0;
      resolve(rep);
    });
    parentPort!.postMessage("ready");
  });
}

// ---- driver -----------------------------------------------------------------------------------------------

/** Run the stress: frontend and backend each on its own worker thread. */
export async function runRingStress(partial: Partial<StressConfig> = {}): Promise<StressReport> {
  const config: StressConfig = { ...DEFAULT_STRESS, ...partial };
  if (!(config.maxSectors >= 1 && config.maxSectors <= REGION))
    throw new RangeError(`maxSectors must be 1..${REGION}`);
  const slots = ringSize(config.ringPages, blkifLayout(config.abi).entrySize);
  if (Math.floor(config.diskSectors / REGION) < 2 * slots) {
    // Regions must outnumber the requests in flight, so a free ring slot always finds a free region.
    throw new RangeError(`diskSectors must be at least ${REGION * 2 * slots} for a ${slots}-slot ring`);
  }
  const common = {
    disk: new SharedArrayBuffer(config.diskSectors * SECTOR),
    model: new SharedArrayBuffer(config.diskSectors * 4),
    ctl: new SharedArrayBuffer(C_WORDS * 4),
    evt: new AtomicEventChannels(2).buffer,
  };
  let shared: Shared;
  if (config.backend === "blkback") {
    // A Xen host whose guest RAM is shared: the guest's grant table, ring and buffers in its own pages.
    const host = new XenHost({ ramSize: 0x100_0000 + (GNT_FRAMES + 16) * RING_PAGE_SIZE + bufBytes(config) });
    host.guestGrantTable(FRONT_DOM, GNT_FRAMES);
    const pages = host.domain(FRONT_DOM).pages;
    const ringGpa = pages.alloc(config.ringPages * RING_PAGE_SIZE);
    const bufGpa = pages.alloc(bufBytes(config));
    const frontPort = host.evtchn.allocUnbound(FRONT_DOM, BACK_DOM);
    const mem = host.hv.mem as GuestRam;
    shared = {
      ...common,
      ram: mem.buffer as SharedArrayBuffer,
      ringGpa,
      bufGpa,
      grantState: null,
      xen: xenSharedState(host),
      frontPort,
    };
  } else {
    const ram = new SharedArrayBuffer(BUF_GPA + bufBytes(config));
    // The guest's grant table: frames of its own memory handed to the hypervisor (GNTTABOP_setup_table).
    const table = GrantTable.create(FRONT_DOM, new GuestRam(ram.byteLength, { buffer: ram }), GNT_FRAMES);
    const gntStatus = table.setup(Array.from({ length: GNT_FRAMES }, (_, i) => (GNT_GPA >>> 12) + i));
    if (gntStatus !== GNTST_okay) throw new Error(`grant table setup: status ${gntStatus}`);
    shared = {
      ...common,
      ram,
      ringGpa: RING_GPA,
      bufGpa: BUF_GPA,
      grantState: table.shared,
      xen: null,
      frontPort: 0,
    };
  }
  const url = new URL(import.meta.url);
  const t0 = performance.now();
  const input = (role: WorkerInput["role"]): WorkerInput => ({ kind: "xenblk-stress", role, config, shared });
  const be = spawnWorker(url, input("backend"));
  const fe = spawnWorker(url, input("frontend"));
  let frontend: SideReport;
  let backend: SideReport;
  try {
    if (config.backend === "blkback") {
      // blkback serves from its event loop until told to stop; it reports after the frontend is done.
      const first = workerResult<unknown>(be);
      frontend = await workerResult<SideReport>(fe);
      const m = await first;
      if (m === "ready") {
        const report = workerResult<SideReport>(be);
        be.postMessage("stop");
        backend = await report;
      } else {
        backend = m as SideReport; // it failed before serving
      }
    } else {
      [frontend, backend] = await Promise.all([workerResult<SideReport>(fe), workerResult<SideReport>(be)]);
    }
  } finally {
    await Promise.all([fe.terminate(), be.terminate()]);
  }
  const ms = performance.now() - t0;
  // The disk against the frontend's model: every sector holds the stamp of the last write to it, or zeroes.
  const words = new Uint32Array(shared.disk);
  const model = new Uint32Array(shared.model);
  let diskMismatches = 0;
  for (let s = 0; s < config.diskSectors; s++) {
    const w = s * (SECTOR / 4);
    const want = model[s]!;
    const ok =
      want === 0
        ? words[w] === 0 && words[w + 3] === 0
        : words[w] === want &&
          words[w + 1] === s &&
          words[w + 2] === checkWord(want, s) &&
          words[w + 3] === MAGIC;
    if (!ok) diskMismatches++;
  }
  const evt = new AtomicEventChannels(shared.evt);
  const ring = config.backend === "ring";
  return {
    config,
    frontend,
    backend,
    diskMismatches,
    toBackend: ring ? evt.stats(PORT_TO_BACKEND) : null,
    toFrontend: ring ? evt.stats(PORT_TO_FRONTEND) : null,
    ms,
    requestsPerSecond: (config.requests / Math.max(frontend.ms, 1)) * 1000,
  };
}

// ---- worker entry -----------------------------------------------------------------------------------------

if (!isMainThread && (workerData as WorkerInput | undefined)?.kind === "xenblk-stress") {
  const input = workerData as WorkerInput;
  const fail = (e: unknown): SideReport => {
    const report = newReport(input.role);
    report.errors.push(e instanceof Error ? (e.stack ?? e.message) : String(e));
    return report;
  };
  if (input.role === "backend" && input.config.backend === "blkback") {
    runBlkbackBackend(input.config, input.shared).then(
      (r) => parentPort!.postMessage(r),
      (e: unknown) => parentPort!.postMessage(fail(e)),
    );
  } else {
    let report: SideReport;
    try {
      report =
        input.role === "frontend"
          ? runFrontend(input.config, input.shared)
          : runRingBackend(input.config, input.shared);
    } catch (e) {
      report = fail(e);
    }
    parentPort!.postMessage(report);
  }
}
