/**
 * A drive attached to a device position: its medium (the storage engine and its backend) and what identifies
 * it (model, serial, firmware, default geometry), fixed when the machine is built. What the host changes later
 * is in settings.ts; the command and transfer state is in the ATA core (core.ts).
 */

import type { BlockBackend, IoEngine } from "../storage/types.ts";
import { type Geometry, geometryForSize, geometryFromMbr } from "./geometry.ts";
import { defaultSerial } from "./identify.ts";
import type { IoErrorPolicy } from "./requests.ts";

/**
 * The drive kinds a configuration may name. A kind's module adds its name here (TypeScript declaration
 * merging) and registers the kind (registry.ts); "hd" is built in.
 */
export interface DriveKindNames {
  hd: true;
  cd: true;
}
export type DriveKindName = keyof DriveKindNames;

export interface DriveConfig {
  /** The medium's engine; absent: a removable drive with no medium inserted (a CD drive's empty tray). */
  engine?: IoEngine;
  /** Default "hd", a hard disk. */
  kind?: DriveKindName;
  model?: string;
  serial?: string;
  firmware?: string;
  /** World Wide Name for IDENTIFY words 108-111 (QEMU's `wwn=`); absent or 0: none reported. */
  wwn?: bigint;
  /** Volatile write cache enabled at power-on (default true, as QEMU's cache=writeback). */
  writeCache?: boolean;
  /** What a failed request does (QEMU's rerror/werror); default: report it to the command. */
  errorPolicy?: IoErrorPolicy;
}

/** What a drive kind asks of its medium and how its drives name themselves by default. */
export interface MediumProfile {
  /** Bytes per sector the kind's commands address. */
  readonly sectorSize: number;
  readonly defaultModel: string;
  /** The kind reports a CHS geometry (hard disks), guessed from the MBR or the size. */
  readonly chs: boolean;
  /** The medium can be absent and changed at run time (a CD drive). */
  readonly removable?: boolean;
}

export const DEFAULT_FIRMWARE = "0.1";

/** What an empty removable drive is named and sized by. */
const EMPTY_MEDIUM: BlockBackend = {
  sectorSize: 512,
  sectorCount: 0,
  readOnly: true,
  describe: "empty",
  identity: "empty",
  read() {},
  write() {},
  flush() {},
  discard() {},
  close() {},
};

export class Drive {
  /** The medium at power-on; null for a removable drive without one. */
  readonly engine: IoEngine | null;
  readonly backend: BlockBackend | null;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  /** IDENTIFY words 1, 3, 6, and the translation a reset with reverting enabled restores; null without CHS. */
  readonly defaultGeometry: Geometry | null;
  readonly model: string;
  readonly serial: string;
  readonly firmware: string;
  /** The World Wide Name, 0n when the drive reports none. */
  readonly wwn: bigint;
  readonly writeCacheDefault: boolean;
  readonly errorPolicy: IoErrorPolicy | null;

  constructor(config: DriveConfig, position: string, profile: MediumProfile) {
    if (!config.engine && !profile.removable) throw new RangeError(`the drive at ${position} needs a medium`);
    // An empty removable drive: identified as one, with no sectors until a medium is inserted.
    const b = config.engine?.backend ?? EMPTY_MEDIUM;
    if (b.sectorSize !== profile.sectorSize)
      throw new RangeError(
        `IDE disks have ${profile.sectorSize}-byte sectors; ${b.describe} has ${b.sectorSize}`,
      );
    this.engine = config.engine ?? null;
    this.backend = config.engine?.backend ?? null;
    this.sectorCount = b.sectorCount;
    this.readOnly = b.readOnly;
    let g: Geometry | null = null;
    if (profile.chs && b.sectorCount > 0) {
      // Setup-time read of the MBR for the default geometry (the guest has not run yet).
      const s0 = new Uint8Array(512);
      try {
        b.read(0, [s0]);
        g = geometryFromMbr(s0, b.sectorCount);
      } catch {
        g = null;
      }
    }
    this.defaultGeometry = profile.chs ? (g ?? geometryForSize(b.sectorCount)) : null;
    this.model = config.model ?? profile.defaultModel;
    this.firmware = config.firmware ?? DEFAULT_FIRMWARE;
    this.wwn = BigInt.asUintN(64, config.wwn ?? 0n);
    this.serial = config.serial ?? defaultSerial(`${position}|${b.identity ?? b.describe}|${b.sectorCount}`);
    this.writeCacheDefault = config.writeCache ?? true;
    this.errorPolicy = config.errorPolicy ?? null;
  }
}
