/**
 * A whole PV disk in one call: a Xen host (dom0 + guest 1), the toolstack's xenstore entries for xvda, the
 * backend in dom0 over the given storage engine, and the guest's blkfront connected to it.
 */

import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import { XenHost } from "../hypervisor/xen-host.ts";
import type { IoEngine } from "../storage/types.ts";
import type { BlkifAbi } from "./abi.ts";
import { Blkback, type BlkbackOptions } from "./blkback.ts";
import { Blkfront } from "./blkfront.ts";
import { type VbdPaths, XVDA, toolstackAddDisk } from "./xenbus.ts";

export interface PvMachineOptions {
  engine: IoEngine;
  /** Ring pages per queue the frontend asks for (1..16; the backend offers up to 16). Default 1. */
  ringPages?: number;
  /** Indirect segments per request (0 = none; default 32 as Linux blkfront; backend offers 256). */
  indirect?: number;
  /** Persistent grants on both ends (default true). */
  persistent?: boolean;
  /** Caller pages the frontend keeps persistently granted for zero copy (Blkfront's `directPages`). */
  directPages?: number;
  /** Queues (rings) the frontend asks for (default 1; the backend offers 4). */
  queues?: number;
  /** Use this hypervisor (its RAM is the guest's memory and its counters count the PV path). */
  hv?: Hypervisor;
  /** Ring layout the frontend publishes (default x86_64-abi). */
  protocol?: BlkifAbi;
  /** Merge adjacent requests in the backend. */
  merge?: boolean;
  /** Open the disk read-only (toolstack mode "r"). */
  readOnly?: boolean;
  devid?: number;
  /** More backend options (limits, features). */
  backend?: Partial<Omit<BlkbackOptions, "host" | "engine" | "frontDom">>;
}

export interface PvMachine {
  host: XenHost;
  hv: Hypervisor;
  front: Blkfront;
  back: Blkback;
  paths: VbdPaths;
  /** Shut the frontend down (Closing → Closed on both ends). */
  close(): Promise<void>;
}

export async function createPvMachine(o: PvMachineOptions): Promise<PvMachine> {
  const host = new XenHost(o.hv ? { hv: o.hv } : {});
  const devid = o.devid ?? XVDA;
  const readOnly = o.readOnly ?? o.engine.backend.readOnly;
  const paths = toolstackAddDisk(host, { frontDom: 1, devid, mode: readOnly ? "r" : "w" });
  const back = new Blkback({
    ...o.backend,
    host,
    engine: o.engine,
    frontDom: 1,
    devid,
    persistent: o.persistent ?? true,
    merge: o.merge ?? false,
  });
  const front = await Blkfront.connect({
    host,
    dom: 1,
    devid,
    ringPages: o.ringPages ?? 1,
    queues: o.queues ?? 1,
    maxIndirectSegments: o.indirect ?? 32,
    persistent: o.persistent ?? true,
    ...(o.directPages !== undefined ? { directPages: o.directPages } : {}),
    ...(o.protocol ? { protocol: o.protocol } : {}),
  });
  return {
    host,
    hv: host.hv,
    front,
    back,
    paths,
    close: async () => {
      await front.shutdown();
      await back.settled();
    },
  };
}
