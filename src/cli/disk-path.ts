/**
 * How a CLI command reaches the disk inside the guest. A `DiskPath` is one transport (the emulated IDE
 * controller driven by PIO, string I/O or DMA today; others plug in through `registerDiskPath`), so `read` and
 * `write` are written once and measure whichever path was chosen.
 */

import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import { type AtaDrive, type AtaVia, ATA_VIAS } from "../guest/ata.ts";
import type { IoEngine } from "../storage/types.ts";

export interface DiskPath {
  /** The transport's name as given to `--via`. */
  readonly name: string;
  /** Sectors the guest sees. */
  readonly sectors: number;
  read(lba: number, count: number): Promise<Uint8Array>;
  write(lba: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
}

/** What a transport factory gets: the machine the image is attached to. */
export interface DiskPathContext {
  hv: Hypervisor;
  engine: IoEngine;
  /** The probed ATA drive, for IDE transports. */
  ata?: AtaDrive;
}

export type DiskPathFactory = (ctx: DiskPathContext) => Promise<DiskPath>;

/** Transports that are not the emulated IDE controller (the PV ring, say) register here. */
const extraPaths = new Map<string, DiskPathFactory>();

export function registerDiskPath(name: string, factory: DiskPathFactory): void {
  if ((ATA_VIAS as readonly string[]).includes(name)) throw new Error(`'${name}' is an IDE transfer method`);
  extraPaths.set(name, factory);
}

export function diskPathNames(): string[] {
  return [...ATA_VIAS, ...extraPaths.keys()];
}

export function isAtaVia(name: string): name is AtaVia {
  return (ATA_VIAS as readonly string[]).includes(name);
}

export function extraDiskPath(name: string): DiskPathFactory | undefined {
  return extraPaths.get(name);
}

/** The emulated IDE controller, driven by the guest ATA driver. */
export class AtaDiskPath implements DiskPath {
  constructor(readonly drive: AtaDrive) {}
  get name(): string {
    return this.drive.via;
  }
  get sectors(): number {
    return this.drive.identity.sectors;
  }
  read(lba: number, count: number): Promise<Uint8Array> {
    return this.drive.read(lba, count);
  }
  write(lba: number, data: Uint8Array): Promise<void> {
    return this.drive.write(lba, data);
  }
  flush(): Promise<void> {
    return this.drive.flush();
  }
}
