/**
 * How a program reaches a disk inside the guest, whichever way the guest does it. A `DiskPath` is one
 * transport — the emulated IDE controller driven by the guest's ATA driver (PIO by words or dwords, REP string
 * I/O, Bus Master DMA), or the PV ring driven by blkfront — so the CLI's `read` and `write`, the demo and the
 * benchmark are written once and measure whichever path was chosen.
 */

import {
  ATA_VIAS,
  type AtaAddressing,
  AtaDrive,
  type AtaIdentity,
  type AtaVia,
} from "../guest/ata-driver.ts";
import type { Blkfront } from "../xenblk/blkfront.ts";
import type { Machine, PvDiskHandle } from "./builder.ts";
import { type BlkfrontSettings, type IdePosition, ideIndex } from "./description.ts";
import { connectBlkfront } from "./pv.ts";

export interface DiskPath {
  /** The transport's name, as given to `--via`. */
  readonly name: DiskVia;
  /** Sectors the guest sees. */
  readonly sectors: number;
  read(lba: number, count: number): Promise<Uint8Array>;
  write(lba: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  /** Detach the guest's driver (blkfront disconnects; the ATA driver has nothing to release). */
  close(): Promise<void>;
}

/** Every transport: the IDE transfer methods, then the PV ring. */
export const DISK_VIAS = [...ATA_VIAS, "pv"] as const;
export type DiskVia = AtaVia | "pv";

export function isAtaVia(name: string): name is AtaVia {
  return (ATA_VIAS as readonly string[]).includes(name);
}

export function isDiskVia(name: string): name is DiskVia {
  return (DISK_VIAS as readonly string[]).includes(name);
}

/** The guest's ATA driver settings for an IDE path. */
export interface AtaPathOptions {
  /** Which drive (default primary master). */
  position?: IdePosition;
  /** true (default): wait for the interrupt; false: poll BSY with nIEN set. */
  irq?: boolean;
  addressing?: AtaAddressing;
  /** READ/WRITE MULTIPLE with this many sectors per DRQ block (0 = off). */
  multiple?: number;
}

/** The emulated IDE controller, driven by the guest ATA driver. */
export class AtaDiskPath implements DiskPath {
  constructor(
    readonly drive: AtaDrive,
    readonly identity: AtaIdentity,
  ) {}
  get name(): AtaVia {
    return this.drive.via;
  }
  get sectors(): number {
    return this.identity.sectors;
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
  async close(): Promise<void> {}
}

/** The PV ring, driven by the guest's blkfront. */
export class PvDiskPath implements DiskPath {
  readonly name = "pv";
  constructor(readonly front: Blkfront) {}
  get sectors(): number {
    return this.front.info.sectors;
  }
  read(lba: number, count: number): Promise<Uint8Array> {
    return this.front.read(lba, count);
  }
  write(lba: number, data: Uint8Array): Promise<void> {
    return this.front.write(lba, data);
  }
  flush(): Promise<void> {
    return this.front.flush();
  }
  close(): Promise<void> {
    return this.front.shutdown();
  }
}

/** No device answered where the path was to find one. */
export class NoDeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NoDeviceError";
  }
}

/**
 * Start the guest's ATA driver on the drive at `o.position`: it finds the controller on PCI, probes the
 * position and IDENTIFYs the drive, as a guest would at boot. The probe's errors (a refused SET MULTIPLE MODE,
 * say) reach the caller as the driver raised them; `drive` is handed to `onDriver` first so a caller can
 * still look at what the drive reported.
 */
export async function openAtaPath(
  machine: Machine,
  via: AtaVia,
  o: AtaPathOptions = {},
  onDriver?: (drive: AtaDrive) => void,
): Promise<AtaDiskPath> {
  const position = o.position ?? "primary-master";
  const index = ideIndex(position);
  const drive = new AtaDrive(machine.hv.vcpu(0), {
    channel: (index >> 1) as 0 | 1,
    unit: (index & 1) as 0 | 1,
    via,
    irq: o.irq ?? true,
    addressing: o.addressing ?? "auto",
    multiple: o.multiple ?? 0,
  });
  onDriver?.(drive);
  const identity = await drive.probe();
  if (!identity) throw new NoDeviceError(`no ATA device answered at the ${position} position`);
  return new AtaDiskPath(drive, identity);
}

/** Connect the guest's blkfront to a PV disk of the machine (the first by default). */
export async function openPvPath(
  machine: Machine,
  settings: BlkfrontSettings = {},
  disk?: PvDiskHandle,
): Promise<PvDiskPath> {
  return new PvDiskPath(await connectBlkfront(machine, settings, disk));
}
