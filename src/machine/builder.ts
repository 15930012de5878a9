/**
 * One builder from a `MachineDescription` to a running machine: the hypervisor, the PC with its IDE drives,
 * and for PV disks a Xen host on the same hypervisor with the toolstack's xenstore entries and a blkback per
 * disk, waiting for the guest's frontend. Media the description names by path are opened here and closed by
 * `close()`; a failure half-way closes whatever was opened.
 */

import { resolve } from "node:path";
import { Hypervisor } from "../hypervisor/hypervisor.ts";
import { XenHost } from "../hypervisor/xen-host.ts";
import type { DriveConfig } from "../ide/device.ts";
import { makeEngine, openImage } from "../storage/index.ts";
import type { BlockBackend, IoEngine } from "../storage/types.ts";
import { Blkback } from "../xenblk/blkback.ts";
import { type VbdPaths, XVDA, toolstackAddDisk } from "../xenblk/xenbus.ts";
import {
  type DiskSpecCommon,
  type IdeDriveSpec,
  type IdePosition,
  type MachineDescription,
  type PvDiskSpec,
  validateDescription,
} from "./description.ts";
import { createPc, type Pc } from "./pc.ts";

/** A drive the builder attached to the IDE controller. */
export interface IdeDriveHandle {
  readonly position: IdePosition;
  readonly spec: IdeDriveSpec;
  readonly engine: IoEngine;
  readonly backend: BlockBackend;
}

/** A PV disk the builder gave the guest: its backend in dom0, waiting for (or serving) a frontend. */
export interface PvDiskHandle {
  readonly spec: PvDiskSpec;
  readonly devid: number;
  readonly frontDom: number;
  readonly engine: IoEngine;
  readonly backend: BlockBackend;
  readonly back: Blkback;
  readonly paths: VbdPaths;
}

export interface Machine {
  readonly hv: Hypervisor;
  /** The emulated PC, or null for a PV-only machine. */
  readonly pc: Pc | null;
  /** The Xen host of the PV disks (created on first use, so an IDE-only machine has none). */
  readonly xen: XenHost | null;
  readonly ide: ReadonlyMap<IdePosition, IdeDriveHandle>;
  readonly pv: readonly PvDiskHandle[];
  /** Every storage engine of the machine, IDE drives first. */
  readonly engines: readonly IoEngine[];
  /** Whether any engine has a request submitted and not yet reaped by its device. */
  busy(): boolean;
  /** Let submitted storage requests complete and reach their devices (bounded, so a stuck one cannot hang). */
  settle(): Promise<void>;
  /** Settle, then close the media the machine opened. Idempotent. */
  close(): Promise<void>;
}

interface Opened {
  engine: IoEngine;
  backend: BlockBackend;
  owned: boolean;
}

function openMedium(spec: DiskSpecCommon, forceReadOnly = false): Opened {
  const m = spec.medium;
  if ("engine" in m) return { engine: m.engine, backend: m.engine.backend, owned: false };
  let backend: BlockBackend;
  let owned = false;
  if ("image" in m) {
    backend = openImage(m.image, {
      readOnly: m.readOnly === true || forceReadOnly,
      ...(m.direct !== undefined ? { direct: m.direct } : {}),
      ...(m.lock !== undefined ? { lock: m.lock } : {}),
    });
    owned = true;
  } else backend = m.backend;
  try {
    return { engine: makeEngine(backend, spec.engine ?? "sync", spec.engineOptions), backend, owned };
  } catch (e) {
    if (owned) backend.close();
    throw e;
  }
}

function driveConfig(d: IdeDriveSpec, engine: IoEngine): DriveConfig {
  const c: DriveConfig = { engine };
  if (d.kind !== undefined) c.kind = d.kind;
  if (d.model !== undefined) c.model = d.model;
  if (d.serial !== undefined) c.serial = d.serial;
  if (d.firmware !== undefined) c.firmware = d.firmware;
  if (d.writeCache !== undefined) c.writeCache = d.writeCache;
  return c;
}

export function buildMachine(desc: MachineDescription = {}): Machine {
  validateDescription(desc);
  const opened: Opened[] = [];
  try {
    const hv =
      desc.hv ??
      new Hypervisor({
        ...(desc.memory ? { memory: desc.memory } : { ramSize: desc.ram ?? 64 * 1024 * 1024 }),
        ...(desc.costs ? { costs: desc.costs } : {}),
        tracer: desc.tracer ?? null,
      });
    const ide = new Map<IdePosition, IdeDriveHandle>();
    const configs = new Map<IdePosition, DriveConfig>();
    for (const d of desc.ide ?? []) {
      const o = openMedium(d);
      opened.push(o);
      ide.set(d.position, { position: d.position, spec: d, engine: o.engine, backend: o.backend });
      configs.set(d.position, driveConfig(d, o.engine));
    }
    let pc: Pc | null = null;
    if (desc.pc !== false) {
      const channel = (m: IdePosition, s: IdePosition) => {
        const c: { master?: DriveConfig; slave?: DriveConfig } = {};
        const master = configs.get(m);
        const slave = configs.get(s);
        if (master) c.master = master;
        if (slave) c.slave = slave;
        return c;
      };
      pc = createPc({
        hv,
        primary: channel("primary-master", "primary-slave"),
        secondary: channel("secondary-master", "secondary-slave"),
        busMaster: desc.pc?.busMaster ?? true,
        firmwareInit: desc.pc?.firmwareInit ?? false,
      });
    }
    let xen: XenHost | null = null;
    const pv: PvDiskHandle[] = [];
    for (const d of desc.pv ?? []) {
      const o = openMedium(d, d.readOnly === true);
      opened.push(o);
      xen ??= new XenHost({ hv });
      const devid = d.devid ?? XVDA;
      const frontDom = d.frontDom ?? 1;
      const readOnly = d.readOnly ?? o.backend.readOnly;
      const params = d.params ?? ("image" in d.medium ? resolve(d.medium.image) : "");
      const paths = toolstackAddDisk(xen, { frontDom, devid, mode: readOnly ? "r" : "w", params });
      const back = new Blkback({
        ...d.backend,
        host: xen,
        engine: o.engine,
        frontDom,
        devid,
        persistent: d.persistent ?? true,
        merge: d.merge ?? false,
      });
      pv.push({ spec: d, devid, frontDom, engine: o.engine, backend: o.backend, back, paths });
    }
    const engines = opened.map((o) => o.engine);
    let closed = false;
    const machine: Machine = {
      hv,
      pc,
      xen,
      ide,
      pv,
      engines,
      busy: () => enginesBusy(engines),
      settle: () => settleEngines(engines),
      async close() {
        if (closed) return;
        closed = true;
        // An orderly power-down, as QEMU's bdrv_close_all: drives write back what their caches hold, every
        // request completes, and the writable media the machine opened are flushed before they are closed
        // (media a caller passed in stay the caller's to flush and close).
        pc?.ide.writeBack();
        await settleEngines(engines);
        for (const p of pv) await p.back.settled();
        try {
          for (const o of opened) if (o.owned && !o.backend.readOnly) o.backend.flush();
        } finally {
          closeOwned(opened);
        }
      },
    };
    return machine;
  } catch (e) {
    closeOwned(opened);
    throw e;
  }
}

function closeOwned(opened: readonly Opened[]): void {
  for (const o of opened) if (o.owned) o.backend.close();
}

/** Whether any engine has a request submitted and not yet reaped by its device. */
export function enginesBusy(engines: readonly IoEngine[]): boolean {
  for (const e of engines) if (e.inflight > 0) return true;
  return false;
}

/**
 * Let every engine's submitted requests complete and their completions reach the device model (which reaps
 * them from the engine's onReady callback on the event loop), bounded so a stuck request cannot hang.
 */
export async function settleEngines(engines: readonly IoEngine[]): Promise<void> {
  for (let round = 0; round < 10_000; round++) {
    let busy = false;
    for (const e of engines) {
      if (e.inflight > 0) {
        busy = true;
        await e.drain();
      }
    }
    if (!busy) return;
    await new Promise<void>((r) => setImmediate(r));
  }
}
