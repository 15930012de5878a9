/**
 * A hand-driven frontend for backend tests: it sets up rings, grants and xenstore keys exactly as told (also
 * wrongly), writes arbitrary requests into ring slots and reads responses back. Nothing here validates.
 */
import { expect } from "vitest";

import { type GuestRam, PAGE_SIZE, XenHost } from "../../src/hypervisor/index.ts";
import type { GuestGrantTable } from "../../src/hypervisor/grant-table.ts";
import { AsyncEngine, MemoryBackend, SyncEngine } from "../../src/storage/index.ts";
import type { IoEngine } from "../../src/storage/types.ts";
import {
  type BlkifAbi,
  type BlkifLayout,
  BlkifRequest,
  BlkifResponse,
  XenbusState,
  blkifLayout,
  decodeResponse,
  encodeRequest,
} from "../../src/xenblk/abi.ts";
import { Blkback, type BlkbackOptions } from "../../src/xenblk/blkback.ts";
import { FrontRing, SharedRing, ringNeedsNotify, sharedRingInit } from "../../src/xenblk/ring.ts";
import { XVDA, switchState, toolstackAddDisk, vbdPaths, waitForState } from "../../src/xenblk/xenbus.ts";

export const tick = () => new Promise<void>((r) => setImmediate(r));

export function makeEngine(kind: "sync" | "async", sectors = 8192, readOnly = false) {
  const backend = new MemoryBackend(sectors, { readOnly });
  const engine: IoEngine = kind === "sync" ? new SyncEngine(backend) : new AsyncEngine(backend);
  return { backend, engine };
}

export interface RawQueue {
  /** Index bookkeeping (and, for a contiguous ring, the ring itself). */
  ring: FrontRing;
  port: number;
  refs: number[];
  gpa: number;
  /** Scattered ring: the real pages (the header lives in page 0; `ring.view` is a private shadow). */
  pageViews?: Uint8Array[];
  sring?: SharedRing;
}

export interface RawFrontendOptions {
  engine?: IoEngine;
  engineKind?: "sync" | "async";
  /** `protocol` key; null = do not write it. Default x86_64-abi. */
  protocol?: BlkifAbi | string | null;
  /** The layout the frontend actually uses (default follows protocol; absent protocol → x86_32). */
  layout?: BlkifAbi;
  pages?: number;
  /** Write ring-page-order even for 1 page (the trap) / write it but publish `ring-ref` only. */
  forceOrderKey?: boolean;
  orderValue?: string;
  refKeyStyle?: "auto" | "plain" | "numbered";
  queues?: number;
  persistent?: boolean;
  mode?: "w" | "r";
  back?: Partial<BlkbackOptions>;
  /** Do not wait for Connected. */
  noWait?: boolean;
  host?: XenHost;
  /** Ring pages NOT consecutive in guest memory (one unused page between each). */
  scatter?: boolean;
  /** More frontend keys, written in the same transaction. */
  extra?: Record<string, string>;
}

export async function rawFrontend(o: RawFrontendOptions = {}) {
  const host = o.host ?? new XenHost({ ramSize: 32 * 1024 * 1024 });
  const mem = host.hv.mem as GuestRam;
  const engine = o.engine ?? makeEngine(o.engineKind ?? "sync").engine;
  const paths = vbdPaths(1, 0, XVDA);
  toolstackAddDisk(host, { frontDom: 1, mode: o.mode ?? "w" });
  const back = new Blkback({ host, engine, frontDom: 1, ...o.back });
  const gt: GuestGrantTable = host.guestGrantTable(1, 8);
  const xs = host.xs(1);
  const pages = o.pages ?? 1;
  const nq = o.queues ?? 1;
  const protocol = o.protocol === undefined ? "x86_64-abi" : o.protocol;
  const layoutAbi: BlkifAbi =
    o.layout ?? (protocol === "x86_64-abi" || protocol === "x86_32-abi" ? protocol : "x86_32-abi");
  const layout: BlkifLayout = blkifLayout(layoutAbi);
  await waitForState(xs, paths.backend, (s) => s === XenbusState.InitWait);
  const queues: RawQueue[] = [];
  for (let q = 0; q < nq; q++) {
    const port = () => host.evtchn.allocUnbound(1, 0);
    if (o.scatter) {
      const gpas = Array.from({ length: pages }, () => {
        const g = host.domain(1).pages.alloc(2 * PAGE_SIZE); // the second page stays unused: a gap
        mem.u8.fill(0, g, g + PAGE_SIZE);
        return g;
      });
      const pageViews = gpas.map((g) => mem.u8.subarray(g, g + PAGE_SIZE));
      sharedRingInit(pageViews[0]!);
      const ring = FrontRing.init(
        new Uint8Array(new SharedArrayBuffer(pages * PAGE_SIZE)),
        layout.entrySize,
        pages,
      );
      const refs = gpas.map((g) => gt.grantAccess(0, g / PAGE_SIZE, false));
      queues.push({
        ring,
        port: port(),
        refs,
        gpa: gpas[0]!,
        pageViews,
        sring: new SharedRing(pageViews[0]!),
      });
      continue;
    }
    const gpa = host.domain(1).pages.alloc(pages * PAGE_SIZE);
    const view = mem.u8.subarray(gpa, gpa + pages * PAGE_SIZE);
    view.fill(0);
    const ring = FrontRing.init(view, layout.entrySize, pages);
    const refs = Array.from({ length: pages }, (_, i) => gt.grantAccess(0, gpa / PAGE_SIZE + i, false));
    queues.push({ ring, port: port(), refs, gpa });
  }
  const fe = paths.frontend;
  const style = o.refKeyStyle ?? "auto";
  xs.transaction((t) => {
    if (pages > 1 || o.forceOrderKey)
      xs.write(`${fe}/ring-page-order`, o.orderValue ?? String(Math.log2(pages)), t);
    if (nq > 1) xs.write(`${fe}/multi-queue-num-queues`, String(nq), t);
    queues.forEach((q, i) => {
      const dir = nq > 1 ? `${fe}/queue-${i}` : fe;
      const numbered = style === "numbered" || (style === "auto" && (pages > 1 || o.forceOrderKey));
      if (numbered) q.refs.forEach((r, k) => xs.write(`${dir}/ring-ref${k}`, String(r), t));
      else xs.write(`${dir}/ring-ref`, String(q.refs[0]), t);
      xs.write(`${dir}/event-channel`, String(q.port), t);
    });
    if (protocol !== null) xs.write(`${fe}/protocol`, protocol, t);
    xs.write(`${fe}/feature-persistent`, o.persistent === false ? "0" : "1", t);
    for (const [k, v] of Object.entries(o.extra ?? {})) xs.write(`${fe}/${k}`, v, t);
  });
  switchState(xs, fe, XenbusState.Initialised);
  if (!o.noWait) await waitForState(xs, paths.backend, (s) => s === XenbusState.Connected);

  const rsp = new BlkifResponse();
  const api = {
    host,
    mem,
    back,
    engine,
    gt,
    xs,
    paths,
    layout,
    queues,
    /** Allocate `n` pages of guest memory filled with `fill`. */
    pages(n: number, fill = 0): number {
      const gpa = host.domain(1).pages.alloc(n * PAGE_SIZE);
      mem.u8.fill(fill, gpa, gpa + n * PAGE_SIZE);
      return gpa;
    },
    grant(gpa: number, readonly = false, dom = 0): number {
      return gt.grantAccess(dom, gpa / PAGE_SIZE, readonly);
    },
    /** Write requests into queue `q`'s next slots (whole slot, as real frontends) and push + notify. */
    push(reqs: BlkifRequest[], q = 0, notify = true): void {
      const Q = queues[q]!;
      if (Q.pageViews) {
        // Scattered ring: build each slot in the shadow, copy it to the pages it spans, publish in page 0.
        for (const r of reqs) {
          const off = Q.ring.nextRequest();
          encodeRequest(layout, Q.ring.view, off, r);
          scatterCopy(Q.pageViews, off, Q.ring.view.subarray(off, off + layout.entrySize), true);
        }
        const s = Q.sring!;
        const old = s.reqProd;
        const nu = Q.ring.reqProdPvt;
        s.reqProd = nu;
        if (notify && ringNeedsNotify(old, nu, s.reqEvent)) host.evtchn.send(1, Q.port);
        return;
      }
      for (const r of reqs) encodeRequest(layout, Q.ring.view, Q.ring.nextRequest(), r);
      const must = Q.ring.pushRequestsAndCheckNotify();
      if (notify && must) host.evtchn.send(1, Q.port);
    },
    kick(q = 0): void {
      host.evtchn.send(1, queues[q]!.port);
    },
    /** Consume all responses of queue `q`. */
    responses(q = 0): { id: bigint; op: number; status: number }[] {
      const Q = queues[q]!;
      const out: { id: bigint; op: number; status: number }[] = [];
      const sring = Q.sring ?? Q.ring.sring;
      const tmp = new Uint8Array(16);
      while (Q.ring.rspCons !== sring.rspProd) {
        const off = Q.ring.nextResponse();
        if (Q.pageViews) {
          scatterCopy(Q.pageViews, off, tmp, false);
          decodeResponse(tmp, 0, rsp);
        } else decodeResponse(Q.ring.view, off, rsp);
        out.push({ id: rsp.id, op: rsp.operation, status: rsp.status });
      }
      sring.rspEvent = (Q.ring.rspCons + 1) >>> 0;
      return out;
    },
    /** Let event-channel upcalls and storage completions run until the backend is idle. */
    async settle(): Promise<void> {
      for (let i = 0; i < 5; i++) {
        await tick();
        await engine.drain();
      }
      await tick();
    },
  };
  return api;
}

/** A request template. */
type ReqFields = Partial<Omit<BlkifRequest, "id" | "sector" | "nrSectors">> & {
  id?: number | bigint;
  sector?: number | bigint;
  nrSectors?: number | bigint;
  segs?: [number, number, number][];
};

export function req(fields: ReqFields): BlkifRequest {
  const r = new BlkifRequest();
  const { segs, ...rest } = fields;
  Object.assign(r, rest);
  if (segs) {
    r.nrSegments = fields.nrSegments ?? segs.length;
    segs.forEach(([g, f, l], i) => r.setSegment(i, g, f, l));
  }
  return r;
}

/** Copy between ring bytes [off, off+buf.length) spread over 4 KiB pages and `buf` (toPages or from them). */
function scatterCopy(pages: Uint8Array[], off: number, buf: Uint8Array, toPages: boolean): void {
  let done = 0;
  while (done < buf.length) {
    const page = pages[Math.floor((off + done) / PAGE_SIZE)]!;
    const at = (off + done) % PAGE_SIZE;
    const len = Math.min(buf.length - done, PAGE_SIZE - at);
    if (toPages) page.set(buf.subarray(done, done + len), at);
    else buf.set(page.subarray(at, at + len), done);
    done += len;
  }
}

/** A disk whose every sector starts with its own number, so a read from the wrong place shows. */
export function stampedDisk(sectors: number): MemoryBackend {
  const img = new Uint8Array(sectors * 512);
  const dv = new DataView(img.buffer);
  for (let s = 0; s < sectors; s++) dv.setUint32(s * 512, s, true);
  return new MemoryBackend(img);
}

/** Each sector of `buf` carries the stamp of sector `lba + i` (see stampedDisk). */
export function expectStamps(buf: Uint8Array, lba: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i < buf.length / 512; i++) expect(dv.getUint32(i * 512, true)).toBe(lba + i);
}
