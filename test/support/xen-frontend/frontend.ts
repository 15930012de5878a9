/**
 * Runs `blkfront.c` (Xen's own ring.h/blkif.h macros, compiled to wasm32) as a guest's block frontend, with the
 * guest's physical memory as the module's linear memory.
 *
 * Split of work, as in a real guest kernel:
 * - In C (the driver proper): SHARED_RING_INIT/FRONT_RING_INIT on the ring pages, granting the ring and every
 *   data page by writing `grant_entry_v1` records into the guest's grant table, building requests in ring
 *   slots, RING_PUSH_REQUESTS_AND_CHECK_NOTIFY (the notify is an imported EVTCHNOP_send), consuming responses
 *   with RING_COPY_RESPONSE + RING_FINAL_CHECK_FOR_RESPONSES, and revoking grants.
 * - In this TypeScript glue (the kernel services around the driver): allocating the guest pages, handing the
 *   grant-table frames to the hypervisor (GNTTABOP_setup_table), EVTCHNOP_alloc_unbound and binding the
 *   upcall to the C interrupt handler, and the xenbus negotiation through xenstore (transaction with retry).
 */

import { GuestRam, PAGE_SIZE } from "../../../src/hypervisor/memory.ts";
import type { XenHost } from "../../../src/hypervisor/xen-host.ts";
import { type BlkifAbi, XenbusState } from "../../../src/xenblk/abi.ts";
import { XVDA, switchState, vbdPaths, waitForState } from "../../../src/xenblk/xenbus.ts";
import { XF_LOW_MEMORY } from "./build.ts";

/** Errors the C functions return. */
export const XF_EAGAIN = -11;
export const XF_EINVAL = -22;
export const XF_EIO = -5;
export const XF_EBUSY = -16;

interface XfExports {
  xf_init(
    sring: number,
    pages: number,
    start: number,
    gnttab: number,
    entries: number,
    be: number,
    refs: number,
  ): number;
  xf_set_evtchn(port: number): void;
  xf_set_indirect_area(gpa: number): void;
  xf_queue_indirect(
    op: number,
    sectorLo: number,
    sectorHi: number,
    buf: number,
    nrSectors: number,
    maxSegs: number,
    tag: number,
  ): number;
  xf_queue(
    op: number,
    sectorLo: number,
    sectorHi: number,
    buf: number,
    nrSectors: number,
    tag: number,
  ): number;
  xf_push(): number;
  xf_poll(out: number, max: number): number;
  xf_outstanding(): number;
  xf_free_requests(): number;
  xf_stat(which: number): number;
  xf_layout(out: number): number;
  __heap_base: WebAssembly.Global;
}

/** A wasm memory to be the guest's RAM: shared, fixed size (its buffer is a SharedArrayBuffer). */
export function createGuestWasmMemory(bytes: number): WebAssembly.Memory {
  if (bytes % 65536 !== 0) throw new RangeError(`guest RAM for a wasm memory must be a multiple of 64 KiB`);
  const pages = bytes / 65536;
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

/** Guest RAM over a shared wasm memory (the same bytes the module sees as its linear memory). */
export function guestRamOf(memory: WebAssembly.Memory): GuestRam {
  const buf = memory.buffer as unknown;
  if (!(buf instanceof SharedArrayBuffer)) throw new TypeError("guest RAM needs a shared WebAssembly.Memory");
  return new GuestRam(buf.byteLength, { buffer: buf });
}

/** The bare module: the C functions over a memory, without any Xen plumbing (layout checks, unit use). */
export class XenBlkfrontModule {
  readonly x: XfExports;
  constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, evtchnSend: (port: number) => void) {
    const inst = new WebAssembly.Instance(module, { env: { memory, xen_evtchn_send: evtchnSend } });
    this.x = inst.exports as unknown as XfExports;
    const heapBase = Number(this.x.__heap_base.value);
    if (heapBase > XF_LOW_MEMORY) {
      throw new RangeError(
        `frontend statics end at 0x${heapBase.toString(16)}, above the reserved low memory`,
      );
    }
  }

  static compile(bytes: Uint8Array<ArrayBuffer>): WebAssembly.Module {
    return new WebAssembly.Module(bytes);
  }

  /** The struct layout the header gave, written at `scratchGpa` (see xf_layout in blkfront.c for the order). */
  layout(ram: GuestRam, scratchGpa: number): number[] {
    const n = this.x.xf_layout(scratchGpa);
    return Array.from({ length: n }, (_, i) => ram.dv.getUint32(scratchGpa + 4 * i, true));
  }
}

export interface WasmBlkfrontOptions {
  host: XenHost;
  /** The compiled module for `abi`. */
  module: WebAssembly.Module;
  /** The guest's memory: `host.hv.mem` must be a GuestRam over this memory's buffer. */
  memory: WebAssembly.Memory;
  abi: BlkifAbi;
  frontDom?: number;
  backDom?: number;
  devid?: number;
  /** Ring pages (1, 2, 4, 8, 16); capped by the backend's max-ring-page-order. Default 1. */
  ringPages?: number;
  /** Initial ring index (FRONT_RING_ATTACH); a value near 2^32 exercises index wrap-around. Default 0. */
  ringStart?: number;
  /** Grant-table frames handed to the hypervisor (512 refs each). Default 4. */
  grantFrames?: number;
  timeoutMs?: number;
}

export interface XfCompletion {
  tag: number;
  /** The ring slot the request used (the low half of its id). */
  slot: number;
  status: number;
  op: number;
}

const COMPLETION_SIZE = 16;

/** A connected wasm frontend. */
export class WasmBlkfront {
  readonly fe: XenBlkfrontModule;
  readonly host: XenHost;
  readonly frontDom: number;
  readonly backDom: number;
  readonly paths: { frontend: string; backend: string };
  readonly abi: BlkifAbi;
  readonly ram: GuestRam;
  ringSize = 0;
  ringPages = 1;
  port = 0;
  /** From the backend after Connected. */
  sectors = 0;
  sectorSize = 512;
  featureFlushCache = false;
  featureBarrier = false;
  featureDiscard = false;
  /** feature-max-indirect-segments (0 = the backend offers no indirect requests). */
  maxIndirectSegments = 0;
  /** Every completion goes here (set before I/O). */
  onCompletion: ((c: XfCompletion) => void) | null = null;
  /** Upcalls taken (event-channel deliveries to the frontend). */
  upcalls = 0;
  /** A protocol error the C driver reported (it is then dead, as Linux blkfront disables the device). */
  error: number | null = null;
  private completionGpa = 0;
  private readonly maxCompletions = PAGE_SIZE / COMPLETION_SIZE;
  private readonly waiters = new Map<number, (c: XfCompletion) => void>();
  private nextTag = 1;

  private constructor(o: WasmBlkfrontOptions, ram: GuestRam) {
    this.host = o.host;
    this.frontDom = o.frontDom ?? 1;
    this.backDom = o.backDom ?? 0;
    this.abi = o.abi;
    this.ram = ram;
    this.paths = vbdPaths(this.frontDom, this.backDom, o.devid ?? XVDA);
    this.fe = new XenBlkfrontModule(o.module, o.memory, (port) => this.host.evtchn.send(this.frontDom, port));
  }

  /** Allocate, grant, negotiate (talk_to_blkback), and wait for the backend to connect. */
  static async connect(o: WasmBlkfrontOptions): Promise<WasmBlkfront> {
    const ram = o.host.hv.mem as GuestRam;
    if (!("buffer" in ram) || ram.buffer !== o.memory.buffer) {
      throw new Error("the hypervisor's guest RAM must be the wasm memory's buffer");
    }
    const f = new WasmBlkfront(o, ram);
    await f.talkToBlkback(o);
    return f;
  }

  private async talkToBlkback(o: WasmBlkfrontOptions): Promise<void> {
    const host = this.host;
    const dom = host.domain(this.frontDom);
    const timeout = o.timeoutMs ?? 10_000;
    const xs = host.xs(this.frontDom);
    const { frontend, backend } = this.paths;

    // The grant table: the guest's own frames, handed over once; the C driver owns every entry in them.
    const table = host.grantTable(this.frontDom);
    if (!table) throw new Error(`domain ${this.frontDom} has no grant table`);
    const frames = o.grantFrames ?? 4;
    let tableGpa: number;
    if (table.nrFrames === 0) {
      tableGpa = dom.pages.alloc(frames * PAGE_SIZE);
      this.ram.u8.fill(0, tableGpa, tableGpa + frames * PAGE_SIZE);
      const st = host.setupGrantTable(
        this.frontDom,
        Array.from({ length: frames }, (_, i) => tableGpa / PAGE_SIZE + i),
      );
      if (st !== 0) throw new Error(`gnttab_setup_table: status ${st}`);
    } else {
      tableGpa = table.entryGpa(0);
      for (let i = 1; i < table.nrFrames; i++) {
        if (table.entryGpa(i * 512) !== tableGpa + i * PAGE_SIZE)
          throw new Error("grant table frames not contiguous");
      }
    }

    // Wait for the backend to be ready for our transport parameters; take its ring size limit.
    await waitForState(
      xs,
      backend,
      (s) => s === XenbusState.InitWait || s === XenbusState.Connected,
      timeout,
    );
    const maxOrder = xs.readInt(`${backend}/max-ring-page-order`) ?? 0;
    let pages = o.ringPages ?? 1;
    while (pages > 1 << maxOrder) pages >>= 1;
    this.ringPages = pages;

    const sringGpa = dom.pages.alloc(pages * PAGE_SIZE);
    const refsGpa = dom.pages.alloc(PAGE_SIZE);
    this.completionGpa = dom.pages.alloc(PAGE_SIZE);
    const size = this.fe.x.xf_init(
      sringGpa,
      pages,
      (o.ringStart ?? 0) >>> 0,
      tableGpa,
      table.nrEntries,
      this.backDom,
      refsGpa,
    );
    if (size < 0) throw new Error(`xf_init failed: ${size}`);
    this.ringSize = size;
    // One indirect page per ring slot (used only if the backend offers indirect requests).
    this.fe.x.xf_set_indirect_area(dom.pages.alloc(size * PAGE_SIZE));
    const refs = Array.from({ length: pages }, (_, i) => this.ram.dv.getUint32(refsGpa + 4 * i, true));

    this.port = host.evtchn.allocUnbound(this.frontDom, this.backDom);
    this.fe.x.xf_set_evtchn(this.port);
    host.evtchn.bindHandler(this.frontDom, this.port, () => this.interrupt());

    // Linux blkfront's transaction: ring-page-order only for a multi-page ring (then ring-ref%u).
    xs.transaction((t) => {
      if (pages > 1) {
        xs.write(`${frontend}/ring-page-order`, String(Math.log2(pages)), t);
        refs.forEach((r, i) => xs.write(`${frontend}/ring-ref${i}`, String(r), t));
      } else {
        xs.write(`${frontend}/ring-ref`, String(refs[0]), t);
      }
      xs.write(`${frontend}/event-channel`, String(this.port), t);
      xs.write(`${frontend}/protocol`, this.abi, t);
      // The C driver revokes every grant at completion: no persistent grants.
      xs.write(`${frontend}/feature-persistent`, "0", t);
    });
    switchState(xs, frontend, XenbusState.Initialised);

    const st = await waitForState(
      xs,
      backend,
      (s) => s === XenbusState.Connected || s >= XenbusState.Closing,
      timeout,
    );
    if (st !== XenbusState.Connected) throw new Error(`backend went to state ${st} instead of Connected`);
    this.sectors = xs.readInt(`${backend}/sectors`) ?? 0;
    this.sectorSize = xs.readInt(`${backend}/sector-size`) ?? 512;
    this.featureFlushCache = xs.readInt(`${backend}/feature-flush-cache`) === 1;
    this.featureBarrier = xs.readInt(`${backend}/feature-barrier`) === 1;
    this.featureDiscard = xs.readInt(`${backend}/feature-discard`) === 1;
    this.maxIndirectSegments = xs.readInt(`${backend}/feature-max-indirect-segments`) ?? 0;
    switchState(xs, frontend, XenbusState.Connected);
  }

  /** The event-channel upcall: run the C interrupt handler and hand out what it completed. */
  interrupt(): void {
    this.upcalls++;
    this.poll();
  }

  /** Run xf_poll until it has nothing more; returns the number of completions. */
  poll(): number {
    let total = 0;
    for (;;) {
      const n = this.fe.x.xf_poll(this.completionGpa, this.maxCompletions);
      if (n < 0) {
        this.error = n;
        for (const w of this.waiters.values()) w({ tag: -1, slot: -1, status: n, op: -1 });
        this.waiters.clear();
        return total;
      }
      const dv = this.ram.dv;
      for (let i = 0; i < n; i++) {
        const b = this.completionGpa + i * COMPLETION_SIZE;
        const c: XfCompletion = {
          tag: dv.getUint32(b, true),
          slot: dv.getUint32(b + 4, true),
          status: dv.getInt32(b + 8, true),
          op: dv.getUint32(b + 12, true),
        };
        const w = this.waiters.get(c.tag);
        if (w) {
          this.waiters.delete(c.tag);
          w(c);
        }
        this.onCompletion?.(c);
      }
      total += n;
      if (n < this.maxCompletions) return total;
    }
  }

  /**
   * Queue a request (not yet visible to the backend). Returns the slot, or XF_EAGAIN when the ring or the
   * grant refs are exhausted, or another negative error.
   */
  queue(op: number, sector: number, bufGpa: number, nrSectors: number, tag: number): number {
    const hi = Math.floor(sector / 4294967296);
    return this.fe.x.xf_queue(op, sector >>> 0, hi >>> 0, bufGpa, nrSectors, tag >>> 0);
  }

  /**
   * Queue a BLKIF_OP_INDIRECT read or write of up to `maxIndirectSegments` pages (one indirect page). Returns
   * the slot or a negative error, as `queue`.
   */
  queueIndirect(op: number, sector: number, bufGpa: number, nrSectors: number, tag: number): number {
    const hi = Math.floor(sector / 4294967296);
    return this.fe.x.xf_queue_indirect(
      op,
      sector >>> 0,
      hi >>> 0,
      bufGpa,
      nrSectors,
      this.maxIndirectSegments,
      tag >>> 0,
    );
  }

  /** One indirect request, queued and pushed; resolves with its completion. */
  ioIndirect(op: number, sector: number, bufGpa: number, nrSectors: number): Promise<XfCompletion> {
    const tag = this.nextTag++ >>> 0;
    const slot = this.queueIndirect(op, sector, bufGpa, nrSectors, tag);
    if (slot < 0) return Promise.reject(new Error(`xf_queue_indirect: ${slot}`));
    const p = new Promise<XfCompletion>((resolve) => this.waiters.set(tag, resolve));
    this.push();
    return p;
  }

  /** Publish queued requests; true when the backend was notified. */
  push(): boolean {
    return this.fe.x.xf_push() !== 0;
  }

  /** One request, queued and pushed; resolves with its completion. */
  io(op: number, sector: number, bufGpa: number, nrSectors: number): Promise<XfCompletion> {
    const tag = this.nextTag++ >>> 0;
    const slot = this.queue(op, sector, bufGpa, nrSectors, tag);
    if (slot < 0) return Promise.reject(new Error(`xf_queue: ${slot}`));
    const p = new Promise<XfCompletion>((resolve) => this.waiters.set(tag, resolve));
    this.push();
    return p;
  }

  get outstanding(): number {
    return this.fe.x.xf_outstanding();
  }
  get freeRequests(): number {
    return this.fe.x.xf_free_requests();
  }
  stats(): {
    pushes: number;
    notifies: number;
    responses: number;
    finalCheckMore: number;
    freeGrefs: number;
    reqProdPvt: number;
    rspCons: number;
  } {
    const s = (i: number) => this.fe.x.xf_stat(i) >>> 0;
    return {
      pushes: s(0),
      notifies: s(1),
      responses: s(2),
      finalCheckMore: s(3),
      freeGrefs: s(4),
      reqProdPvt: s(6),
      rspCons: s(7),
    };
  }

  /** Mini-OS shutdown: Closing, wait for the backend to close, Closed; then release the event channel. */
  async close(timeoutMs = 10_000): Promise<void> {
    const xs = this.host.xs(this.frontDom);
    const { frontend, backend } = this.paths;
    switchState(xs, frontend, XenbusState.Closing);
    await waitForState(xs, backend, (s) => s >= XenbusState.Closing, timeoutMs);
    switchState(xs, frontend, XenbusState.Closed);
    await waitForState(xs, backend, (s) => s === XenbusState.Closed, timeoutMs);
    this.host.evtchn.unbindHandler(this.frontDom, this.port);
    try {
      this.host.evtchn.close(this.frontDom, this.port);
    } catch {
      /* the backend's close already freed it towards us */
    }
  }
}
