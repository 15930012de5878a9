/**
 * One builder from a `MachineDescription` to a running machine: the hypervisor, the PC with its IDE drives,
 * and for PV disks a Xen host on the same hypervisor with the toolstack's xenstore entries and a blkback per
 * disk, waiting for the guest's frontend. Media the description names by path are opened here and closed by
 * `close()`; a failure half-way closes whatever was opened.
 */

import { resolve } from "node:path";
import { Hypervisor } from "../hypervisor/hypervisor.ts";
import { XenHost } from "../hypervisor/xen-host.ts";
import { type HostXenstored, xenstoredOf } from "../hypervisor/xenstored-host.ts";
import type { DriveConfig } from "../ide/device.ts";
import { isNbdUrl, makeEngine, openMedium as openImageMedium } from "../storage/index.ts";
import type { BlockBackend, IoEngine } from "../storage/types.ts";
import { Blkback } from "../xenblk/blkback.ts";
import { type VbdPaths, XVDA, toolstackAddDisk } from "../xenblk/xenbus.ts";
import {
  type DiskSpecCommon,
  type IdeDriveSpec,
  type IdePosition,
  type MachineDescription,
  type PvDiskSpec,
  IDE_POSITIONS,
  MachineConfigError,
  validateDescription,
} from "./description.ts";
import { checkIsoImage, forceReadOnly, IdeDrive, type IdeDriveHandle, type MediaHost } from "./ide-drive.ts";
import { createPc, type Pc } from "./pc.ts";
import { DEFAULT_COMPAT } from "../ide/compat.ts";

export { type EjectOptions, type IdeDriveHandle, NoMediumError } from "./ide-drive.ts";

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
  /**
   * xenstored of the Xen host (PV machines): it serves the guests' xenstore rings and, once
   * `xenstored.listen(path)` is called, a unix socket for Xen's own tools (`XENSTORED_PATH=path xenstore-ls`).
   * Closed with the machine.
   */
  readonly xenstored: HostXenstored | null;
  readonly ide: ReadonlyMap<IdePosition, IdeDriveHandle>;
  readonly pv: readonly PvDiskHandle[];
  /** Every storage engine of the machine, IDE drives first. */
  readonly engines: readonly IoEngine[];
  /** Whether any engine has a request submitted and not yet reaped by its device. */
  busy(): boolean;
  /** Let submitted storage requests complete and reach their devices (bounded, so a stuck one cannot hang). */
  settle(): Promise<void>;
  /**
   * Whether the last port write asked to be answered only after device work has settled (and forget the
   * request): in the "qemu-7.2" profile, stopping a Bus Master whose transfer is in flight, which QEMU 7.2
   * drains inside the write (docs/conformance.md D1). Whoever serves the vCPU (the qtest server, as a Xen
   * ioreq server may answer an ioreq later) awaits `settle()` before answering. A caller of the synchronous
   * vCPU API that does not ask sees the transfer end later, as in the default profile.
   */
  takeDrainRequest(): boolean;
  /** Settle, then close the media the machine opened. Idempotent. */
  close(): Promise<void>;
  /**
   * Reset the machine now (QEMU's qemu_system_reset; `Pc.reset`): PCI functions, IDE channels, drives and Bus
   * Masters back to their reset state, interrupt lines low, media kept. A command in progress is cancelled: PIO
   * blocks already acknowledged to the guest still go to the medium, and a storage request already submitted
   * completes on its own but no longer reaches the guest. The PV side is left alone: Xen has no reset of a PV
   * disk in this sense (a rebooting guest's blkfront closes and reconnects through xenbus).
   */
  reset(): void;
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
    backend = openImageMedium(m.image, {
      ...(m.format !== undefined ? { format: m.format } : {}),
      readOnly: m.readOnly === true || forceReadOnly,
      ...(m.direct !== undefined ? { direct: m.direct } : {}),
      ...(m.lock !== undefined ? { lock: m.lock } : {}),
    });
    owned = true;
  } else if ("backend" in m) backend = m.backend;
  else throw new MachineConfigError("an empty tray has no medium to open");
  try {
    return { engine: makeEngine(backend, spec.engine ?? "sync", spec.engineOptions), backend, owned };
  } catch (e) {
    if (owned) backend.close();
    throw e;
  }
}

function driveConfig(d: IdeDriveSpec, engine: IoEngine | null): DriveConfig {
  const c: DriveConfig = engine ? { engine } : {};
  if (d.kind !== undefined) c.kind = d.kind;
  if (d.model !== undefined) c.model = d.model;
  if (d.serial !== undefined) c.serial = d.serial;
  if (d.firmware !== undefined) c.firmware = d.firmware;
  if (d.wwn !== undefined) c.wwn = d.wwn;
  if (d.writeCache !== undefined) c.writeCache = d.writeCache;
  if (d.errorPolicy !== undefined) c.errorPolicy = d.errorPolicy;
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
    const media: MediaHost = { open: (spec) => openMedium(spec), held: opened, engines: [] };
    for (const d of desc.ide ?? []) {
      // A CD drive reads its medium read-only; an empty one has none until the host inserts one.
      if (d.kind === "cd") checkIsoImage(d.medium);
      const o =
        "empty" in d.medium
          ? null
          : openMedium(d.kind === "cd" ? { ...d, medium: forceReadOnly(d.medium) } : d);
      if (o) opened.push(o);
      ide.set(d.position, new IdeDrive(d.position, d, o, media));
      configs.set(d.position, driveConfig(d, o?.engine ?? null));
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
        compat: desc.compat ?? DEFAULT_COMPAT,
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
      // The toolstack's params: a file's absolute path; a URL (an NBD export) as given.
      const params =
        d.params ??
        ("image" in d.medium ? (isNbdUrl(d.medium.image) ? d.medium.image : resolve(d.medium.image)) : "");
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
    const engines = media.engines;
    engines.push(...opened.map((o) => o.engine));
    if (pc) {
      for (const drive of ide.values()) {
        const index = IDE_POSITIONS.indexOf(drive.position);
        (drive as IdeDrive).core = pc.ide.channels[index >> 1]!.devices[index & 1]!;
      }
    }
    let closed = false;
    const xenstored = xen ? xenstoredOf(xen) : null;
    const machine: Machine = {
      hv,
      pc,
      xen,
      xenstored,
      ide,
      pv,
      engines,
      // Device work deferred to the next main-loop iteration (the "qemu-7.2" software reset) counts as pending
      // and runs on settling, as QEMU's bottom halves run between its other events.
      busy: () => enginesBusy(engines) || (pc?.ide.bottomHalvesPending ?? false),
      takeDrainRequest: () => pc?.ide.takeDrainRequest() ?? false,
      settle: async () => {
        pc?.ide.runBottomHalves();
        await settleEngines(engines);
        pc?.ide.runBottomHalves();
      },
      reset() {
        pc?.reset();
      },
      async close() {
        if (closed) return;
        closed = true;
        await xenstored?.close();
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
