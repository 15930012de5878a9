/**
 * The PV path as a CLI transport (`--via pv`): the command's hypervisor and storage engine, a Xen host on that
 * hypervisor, blkback in dom0 over the engine and blkfront in the guest; sectors move blkfront → ring → blkback.
 */

import type { DiskPath, DiskPathContext } from "../cli/disk-path.ts";
import { createPvMachine, type PvMachine, type PvMachineOptions } from "./machine.ts";

export type PvPathOptions = Omit<PvMachineOptions, "engine" | "hv">;

export class PvDiskPath implements DiskPath {
  readonly name = "pv";
  constructor(readonly machine: PvMachine) {}
  get sectors(): number {
    return this.machine.front.info.sectors;
  }
  read(lba: number, count: number): Promise<Uint8Array> {
    return this.machine.front.read(lba, count);
  }
  write(lba: number, data: Uint8Array): Promise<void> {
    return this.machine.front.write(lba, data);
  }
  flush(): Promise<void> {
    return this.machine.front.flush();
  }
}

export async function createPvDiskPath(ctx: DiskPathContext, opts: PvPathOptions = {}): Promise<PvDiskPath> {
  return new PvDiskPath(await createPvMachine({ ...opts, engine: ctx.engine, hv: ctx.hv }));
}

/** Every key under `dir`, depth first, as `[path, value]` (for showing a negotiation). */
export function dumpKeys(m: PvMachine, dir: string): [string, string][] {
  const xs = m.host.xs(0);
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
