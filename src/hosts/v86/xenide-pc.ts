/**
 * A v86 PC whose disk controller is xenide's PIIX IDE function: v86 runs the guest's CPU, chipset, console
 * and firmware; every access to the IDE function is a counted exit into xenide's hypervisor, and DMA goes
 * through v86's memory.
 */

import { Hypervisor, type HypervisorOptions } from "../../hypervisor/hypervisor.ts";
import { buildMachine, type Machine } from "../../machine/builder.ts";
import type { IdeDriveSpec } from "../../machine/description.ts";
import type { Pc } from "../../machine/pc.ts";
import { type BootFiles, loadV86, type V86Host } from "./emulator.ts";
import { type AttachOptions, attachXenideIde, type V86IdeAttachment } from "./host.ts";
import { V86GuestMemory } from "./memory.ts";

export interface XenidePcOptions {
  files: BootFiles;
  memoryMiB?: number;
  /** xenide's IDE drives, as in a machine description. */
  drives?: readonly IdeDriveSpec[];
  hypervisor?: Omit<HypervisorOptions, "memory" | "ramSize">;
  /** false: xenide's IDE function has no Bus Master block, so firmware and drivers use PIO. Default true. */
  busMaster?: boolean;
  attach?: AttachOptions;
}

export interface XenidePc {
  host: V86Host;
  ide: Pc;
  machine: Machine;
  attachment: V86IdeAttachment;
  hv: Hypervisor;
}

/** Load v86, put xenide's controller in, and return before the first instruction (call `host.run()`). */
export async function createXenidePc(o: XenidePcOptions): Promise<XenidePc> {
  if (o.files.v86Hda)
    throw new Error("a disk for v86's own controller cannot be combined with xenide's controller");
  const host = await loadV86(o.files, o.memoryMiB);
  const cpu = host.machine.cpu;
  const hv = new Hypervisor({ ...o.hypervisor, memory: new V86GuestMemory(cpu) });
  const machine = buildMachine({ hv, ide: o.drives ?? [], pc: { busMaster: o.busMaster ?? true } });
  const ide = machine.pc!;
  const attachment = attachXenideIde(cpu, ide, o.attach);
  return { host, ide, machine, attachment, hv };
}
