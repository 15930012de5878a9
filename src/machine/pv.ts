/**
 * The guest's side of a PV disk the builder attached: blkfront connecting to the disk's blkback through
 * xenstore, and, for programs that want a frontend and backend in one call (tests, the benchmark), a machine
 * with one PV disk whose frontend is already connected.
 */

import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import type { XenHost } from "../hypervisor/xen-host.ts";
import type { IoEngine } from "../storage/types.ts";
import type { Blkback } from "../xenblk/blkback.ts";
import { Blkfront } from "../xenblk/blkfront.ts";
import { XsRingClient } from "../xenblk/xs-ring-client.ts";
import type { VbdPaths } from "../xenblk/xenbus.ts";
import { buildMachine, type Machine, type PvDiskHandle } from "./builder.ts";
import type { BlkfrontSettings, PvDiskSpec } from "./description.ts";

/** Connect the guest's blkfront to PV disk `disk` of `machine` (the first one by default). */
export async function connectBlkfront(
  machine: Machine,
  settings: BlkfrontSettings = {},
  disk: PvDiskHandle | undefined = machine.pv[0],
): Promise<Blkfront> {
  if (!disk || !machine.xen) throw new RangeError("the machine has no PV disk");
  // Over the ring, as a domU: the toolstack's page and port for the guest, introduced to xenstored.
  const xs = settings.xenstoreRing
    ? XsRingClient.connect(machine.xen, disk.frontDom, machine.xenstored!.setupGuest(disk.frontDom))
    : undefined;
  return Blkfront.connect({
    ...(xs ? { xs } : {}),
    host: machine.xen,
    dom: disk.frontDom,
    devid: disk.devid,
    ringPages: settings.ringPages ?? 1,
    queues: settings.queues ?? 1,
    maxIndirectSegments: settings.indirect ?? 32,
    persistent: settings.persistent ?? true,
    ...(settings.directPages !== undefined ? { directPages: settings.directPages } : {}),
    ...(settings.protocol ? { protocol: settings.protocol } : {}),
  });
}

export interface PvMachineOptions
  extends BlkfrontSettings, Pick<PvDiskSpec, "merge" | "readOnly" | "devid" | "backend"> {
  engine: IoEngine;
  /** Use this hypervisor (its RAM is the guest's memory and its counters count the PV path). */
  hv?: Hypervisor;
}

/** A PV-only machine with one disk and its frontend connected. */
export interface PvMachine {
  machine: Machine;
  host: XenHost;
  hv: Hypervisor;
  front: Blkfront;
  back: Blkback;
  paths: VbdPaths;
  /** Shut the frontend down (Closing → Closed on both ends) and let the backend finish. */
  close(): Promise<void>;
}

export async function createPvMachine(o: PvMachineOptions): Promise<PvMachine> {
  const disk: PvDiskSpec = {
    medium: { engine: o.engine },
    persistent: o.persistent ?? true,
    ...(o.merge !== undefined ? { merge: o.merge } : {}),
    ...(o.readOnly !== undefined ? { readOnly: o.readOnly } : {}),
    ...(o.devid !== undefined ? { devid: o.devid } : {}),
    ...(o.backend ? { backend: o.backend } : {}),
  };
  const machine = buildMachine({ pc: false, pv: [disk], ...(o.hv ? { hv: o.hv } : {}) });
  const handle = machine.pv[0]!;
  const front = await connectBlkfront(machine, o);
  return {
    machine,
    host: machine.xen!,
    hv: machine.hv,
    front,
    back: handle.back,
    paths: handle.paths,
    close: async () => {
      await front.shutdown();
      await machine.close();
    },
  };
}

/** Every key under `dir`, depth first, as `[path, value]` (for showing a negotiation). */
export function dumpKeys(host: XenHost, dir: string): [string, string][] {
  const xs = host.xs(0);
  const out: [string, string][] = [];
  const walk = (p: string) => {
    for (const c of xs.directory(p).sort()) {
      const child = `${p}/${c}`;
      const v = xs.read(child);
      if (v !== "" || xs.directory(child).length === 0) out.push([child, v]);
      walk(child);
    }
  };
  walk(dir);
  return out;
}
