/**
 * The machine behind `xenide qtest`: up to four raw images on the PC's two IDE channels, each through its own
 * storage engine, and a qtest server whose `settle` lets those engines' completions land between input
 * chunks. Used by the CLI command and, in-process, by tests.
 */

import type { CounterKind } from "../hypervisor/accounting.ts";
import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import { buildMachine, type Machine } from "../machine/builder.ts";
import {
  type EngineKind,
  IDE_POSITIONS,
  type IdeDriveSpec,
  type MachineDescription,
} from "../machine/description.ts";
import type { IoEngine } from "../storage/types.ts";
import { QtestServer } from "./server.ts";

export interface QtestSessionOptions {
  /** Images by QEMU's IDE `index=`: 0 primary master, 1 primary slave, 2 secondary master, 3 secondary slave. */
  images: readonly (string | undefined)[];
  /** CD-ROM drives by `index=`: an ISO image, or null for an empty drive (a position holds a disk or a CD). */
  cdroms?: readonly (string | null | undefined)[];
  engine?: EngineKind;
  ramSize?: number;
  readOnly?: boolean;
  /** IDENTIFY strings (model and firmware for every drive; serials per drive in index order). */
  model?: string;
  serials?: readonly string[];
  firmware?: string;
  costs?: Partial<Record<CounterKind, number>>;
  tracer?: Tracer | null;
  /** Whose behaviour the devices follow where the standard and QEMU 7.2 differ (default "xenide"). */
  compat?: MachineDescription["compat"];
}

export interface QtestSession {
  hv: Hypervisor;
  machine: Machine;
  server: QtestServer;
  engines: readonly IoEngine[];
  /** Let pending requests finish, close the images. */
  close(): Promise<void>;
}

export function openQtestSession(opts: QtestSessionOptions): QtestSession {
  const drives: IdeDriveSpec[] = [];
  let serialIdx = 0;
  for (let i = 0; i < 4; i++) {
    const image = opts.images[i];
    const cd = opts.cdroms?.[i];
    if (!image && cd === undefined) continue;
    const d: IdeDriveSpec = {
      position: IDE_POSITIONS[i]!,
      medium: image
        ? { image, readOnly: opts.readOnly === true }
        : cd
          ? { image: cd, readOnly: true }
          : { empty: true },
      engine: opts.engine ?? "sync",
    };
    if (!image) d.kind = "cd";
    if (opts.model !== undefined) d.model = opts.model;
    const serial = opts.serials?.[serialIdx++];
    if (serial !== undefined) d.serial = serial;
    if (opts.firmware !== undefined) d.firmware = opts.firmware;
    drives.push(d);
  }
  // No firmware ran: BAR4 unassigned and PCI command 0, as QEMU leaves a `-S` machine.
  const machine = buildMachine({
    ram: opts.ramSize ?? 128 * 1024 * 1024,
    ...(opts.costs ? { costs: opts.costs } : {}),
    tracer: opts.tracer ?? null,
    ...(opts.compat ? { compat: opts.compat } : {}),
    ide: drives,
  });
  const hv = machine.hv;
  const server = new QtestServer({
    hv,
    vcpu: hv.vcpu(0),
    settle: () => machine.settle(),
    busy: () => machine.busy(),
    takeDrainRequest: () => machine.takeDrainRequest(),
  });
  return { hv, machine, server, engines: machine.engines, close: () => machine.close() };
}
