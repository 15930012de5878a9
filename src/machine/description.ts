/**
 * A machine as data: which drives sit where on the PC's IDE channels, which PV disks the toolstack gives the
 * guest, how much RAM, which storage engine under each medium. `buildMachine` (builder.ts) turns a description
 * into a running machine; the CLI, the qtest server, the benchmark, the v86 host and the tests all describe
 * what they need this way instead of wiring devices by hand.
 *
 * The description stops at what Xen's toolstack and QEMU's command line decide (devices, media, options). The
 * guest's own drivers (the ATA driver, blkfront) are not part of it: they run later, inside the guest, and
 * find the devices as a real guest would (disk-path.ts).
 */

import type { CounterKind } from "../hypervisor/accounting.ts";
import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import type { GuestMemory } from "../hypervisor/memory.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import type { CompatProfile } from "../ide/compat.ts";
import type { DriveKindName } from "../ide/device.ts";
import type { IoErrorPolicy } from "../ide/requests.ts";
import type { AsyncEngineOptions } from "../storage/engine.ts";
import type { EngineKind } from "../storage/index.ts";
import type { ImageFormat } from "../storage/open.ts";
import type { RawImageOptions } from "../storage/raw.ts";
import type { BlockBackend, IoEngine } from "../storage/types.ts";
import type { BlkifAbi } from "../xenblk/abi.ts";
import type { BlkbackOptions } from "../xenblk/blkback.ts";
import { XVDA } from "../xenblk/xenbus.ts";

/** An IDE drive position, in QEMU's `-drive if=ide,index=N` order. */
export const IDE_POSITIONS = [
  "primary-master",
  "primary-slave",
  "secondary-master",
  "secondary-slave",
] as const;
export type IdePosition = (typeof IDE_POSITIONS)[number];

/** QEMU's `index=` for a position (0 primary master .. 3 secondary slave). */
export function ideIndex(p: IdePosition): 0 | 1 | 2 | 3 {
  return IDE_POSITIONS.indexOf(p) as 0 | 1 | 2 | 3;
}

/**
 * Where a drive's sectors live. An image path is opened (and closed) by the machine; a backend or engine given
 * by the caller stays the caller's to close.
 */
export type MediumSpec =
  | {
      image: string;
      /** "raw" or "qcow2"; absent, probed as QEMU probes (see `openMedium`). */
      format?: ImageFormat;
      readOnly?: boolean;
      direct?: boolean;
      lock?: RawImageOptions["lock"];
    }
  | { backend: BlockBackend }
  /** An engine the caller made (a wrapped or instrumented one); `engine` in the drive spec is then ignored. */
  | { engine: IoEngine }
  /** No medium: a removable drive (kind "cd") with an empty tray, until the host inserts one. */
  | { empty: true };

export type { EngineKind };

export interface DiskSpecCommon {
  medium: MediumSpec;
  /** Storage engine between the device and the medium (default "sync"). */
  engine?: EngineKind;
  /** Options of the async engine. */
  engineOptions?: AsyncEngineOptions;
}

/** A drive on the PIIX IDE controller. */
export interface IdeDriveSpec extends DiskSpecCommon {
  position: IdePosition;
  /** The drive's kind (default "hd", a hard disk; src/ide/registry.ts lists the kinds). */
  kind?: DriveKindName;
  /** IDENTIFY strings and the power-on write cache setting. */
  model?: string;
  serial?: string;
  firmware?: string;
  /** World Wide Name in IDENTIFY words 108-111 (QEMU's `wwn=`); absent or 0: none. */
  wwn?: bigint;
  writeCache?: boolean;
  /**
   * What a failed storage request does (QEMU's rerror/werror: report it to the command, ignore it, or hold it
   * for a retry). Default: report.
   */
  errorPolicy?: IoErrorPolicy;
}

/** A PV block device (vbd) the toolstack gives the guest: xenstore entries and blkback in dom0. */
export interface PvDiskSpec extends DiskSpecCommon {
  /** virtual-device number (default xvda = 51712). */
  devid?: number;
  /** Frontend domain (default 1, the guest). */
  frontDom?: number;
  /** The toolstack's mode "r" (default: read-only when the medium is). */
  readOnly?: boolean;
  /**
   * The toolstack's `params` key: what the disk is (default: the image's absolute path for an image medium,
   * empty otherwise).
   */
  params?: string;
  /** Merge adjacent requests in the backend (default false). */
  merge?: boolean;
  /** Offer persistent grants (default true). */
  persistent?: boolean;
  /** More backend options (limits, features). */
  backend?: Partial<Omit<BlkbackOptions, "host" | "engine" | "frontDom" | "devid" | "merge" | "persistent">>;
}

/** The guest's blkfront settings: what a PV driver asks the backend for when it connects. */
export interface BlkfrontSettings {
  /** Ring pages per queue (1..16; default 1). */
  ringPages?: number;
  /** Indirect segments per request (0 = none; default 32 as Linux blkfront). */
  indirect?: number;
  /** Ask for persistent grants (default true). */
  persistent?: boolean;
  /** Queues (default 1). */
  queues?: number;
  /** Ring layout the frontend publishes (default x86_64-abi). */
  protocol?: BlkifAbi;
  /** Caller pages kept persistently granted for zero copy (Blkfront's `directPages`). */
  directPages?: number;
  /**
   * Negotiate over the guest's xenstore ring (the page and event channel the toolstack gives a domU, served by
   * the machine's xenstored) instead of an in-process xenstore handle. Default false.
   */
  xenstoreRing?: boolean;
}

export interface PcSpec {
  /** false: the PIIX IDE function has no Bus Master block (PIO only). Default true. */
  busMaster?: boolean;
  /**
   * false (default): the state QEMU leaves after reset (BAR4 unassigned, PCI command 0);
   * true: the state SeaBIOS leaves (BAR4 placed, I/O and bus mastering enabled).
   */
  firmwareInit?: boolean;
}

export interface MachineDescription {
  /** Guest RAM in bytes (default 64 MiB); ignored when `memory` or `hv` is given. */
  ram?: number;
  /** Guest memory to use (a foreign host's, say). */
  memory?: GuestMemory;
  /** Build on this hypervisor instead of a new one (its RAM, counters and tracer). */
  hv?: Hypervisor;
  costs?: Partial<Record<CounterKind, number>>;
  tracer?: Tracer | null;
  /**
   * Whose behaviour the emulated devices follow where the standard and QEMU 7.2 differ (default "xenide": the
   * standard; "qemu-7.2": QEMU exactly). src/ide/compat.ts.
   */
  compat?: CompatProfile;
  /** The emulated PC (i440FX + PIIX3 + PIIX IDE). Default: present; false: none (a PV-only machine). */
  pc?: PcSpec | false;
  /** Drives on the IDE channels, at most one per position. */
  ide?: readonly IdeDriveSpec[];
  /** PV disks, one blkback each, on one Xen host over the same hypervisor. */
  pv?: readonly PvDiskSpec[];
}

/** A description the builder cannot turn into a machine (two drives at one position, say). */
export class MachineConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MachineConfigError";
  }
}

/** Refuse descriptions that cannot be built, before anything is opened. */
export function validateDescription(d: MachineDescription): void {
  const seen = new Set<IdePosition>();
  for (const drive of d.ide ?? []) {
    if (!IDE_POSITIONS.includes(drive.position))
      throw new MachineConfigError(`unknown IDE position '${String(drive.position)}'`);
    if (seen.has(drive.position))
      throw new MachineConfigError(`two drives at the ${drive.position} position`);
    seen.add(drive.position);
    if ("empty" in drive.medium && drive.kind !== "cd")
      throw new MachineConfigError(
        `the drive at ${drive.position} needs a medium (only a CD drive can be empty)`,
      );
  }
  if ((d.ide?.length ?? 0) > 0 && d.pc === false)
    throw new MachineConfigError("IDE drives need the PC (pc: false has no IDE controller)");
  const devids = new Set<string>();
  for (const disk of d.pv ?? []) {
    const key = `${disk.frontDom ?? 1}/${disk.devid ?? XVDA}`;
    if (devids.has(key)) throw new MachineConfigError(`two PV disks with virtual device ${key}`);
    devids.add(key);
  }
  if (d.ram !== undefined && !(Number.isSafeInteger(d.ram) && d.ram > 0 && d.ram % 4096 === 0))
    throw new MachineConfigError(`guest RAM must be a positive multiple of 4 KiB, got ${d.ram}`);
}
