/**
 * The machine's handle on one IDE drive: its medium now, and for a removable drive (a CD) the host's tray
 * operations that QMP's `eject` and `blockdev-change-medium` map to. Media the machine opened for the drive are
 * closed when they leave it (after their requests have settled); media a caller passed in stay the caller's.
 */

import { statSync } from "node:fs";
import type { AtaCore } from "../ide/core.ts";
import { CdMediumError } from "../ide/cd/tray.ts";
import { CD_SECTOR_SIZE } from "../spec/atapi.ts";
import { ejectMedium, insertMedium, trayStatus } from "../ide/cd/tray.ts";
import type { BlockBackend, IoEngine } from "../storage/types.ts";
import { type DiskSpecCommon, type IdeDriveSpec, type IdePosition, type MediumSpec } from "./description.ts";

/** A medium the machine holds: its engine, and whether the machine opened it (and must close it). */
export interface HeldMedium {
  engine: IoEngine;
  backend: BlockBackend;
  owned: boolean;
}

/** What a drive handle needs of the machine: opening media as the builder does, and the list of held media. */
export interface MediaHost {
  open(spec: DiskSpecCommon): HeldMedium;
  /** Media the machine holds (engines are settled and owned media closed with the machine). */
  readonly held: HeldMedium[];
  /** Every engine of the machine (kept in step with `held`). */
  readonly engines: IoEngine[];
}

export interface EjectOptions {
  /** Open the tray although the guest locked it (QMP `eject` with force). */
  force?: boolean;
}

/** A drive the builder attached to the IDE controller. */
export interface IdeDriveHandle {
  readonly position: IdePosition;
  readonly spec: IdeDriveSpec;
  /** Whether a medium is in the drive (a removable drive may have none). */
  readonly hasMedium: boolean;
  /** The medium's engine and backend now; reading them on a drive without a medium throws NoMediumError. */
  readonly engine: IoEngine;
  readonly backend: BlockBackend;
  /** The tray as the host sees it (removable drives; a fixed disk reports shut, unlocked, with its medium). */
  tray(): { open: boolean; locked: boolean; medium: boolean };
  /**
   * Open the tray and remove the medium (QMP `eject`). A tray the guest locked stays shut and this rejects
   * with TrayLockedError (the guest sees an eject request), unless `force`. Only removable drives (kind "cd").
   */
  eject(opts?: EjectOptions): Promise<void>;
  /** Change the medium: tray open, old medium out, `medium` in, tray shut (QMP `blockdev-change-medium`). */
  insert(medium: MediumSpec): Promise<void>;
}

/** The drive's tray is empty. */
export class NoMediumError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NoMediumError";
  }
}

export class IdeDrive implements IdeDriveHandle {
  /** The ATA core at the drive's position, set once the PC is built. */
  core: AtaCore | null = null;

  constructor(
    readonly position: IdePosition,
    readonly spec: IdeDriveSpec,
    private medium: HeldMedium | null,
    private readonly host: MediaHost,
  ) {}

  get hasMedium(): boolean {
    return this.medium !== null;
  }

  get engine(): IoEngine {
    return this.held().engine;
  }

  get backend(): BlockBackend {
    return this.held().backend;
  }

  tray(): { open: boolean; locked: boolean; medium: boolean } {
    const c = this.core;
    if (c?.kind?.name === "cd") return trayStatus(c);
    return { open: false, locked: false, medium: this.medium !== null };
  }

  private held(): HeldMedium {
    if (!this.medium) throw new NoMediumError(`the drive at ${this.position} holds no medium`);
    return this.medium;
  }

  async eject(opts: EjectOptions = {}): Promise<void> {
    ejectMedium(this.atapi(), opts.force === true);
    await this.release();
  }

  async insert(medium: MediumSpec): Promise<void> {
    const core = this.atapi();
    checkIsoImage(medium);
    const next = this.host.open({ ...this.spec, medium: forceReadOnly(medium) });
    try {
      insertMedium(core, next.engine);
    } catch (e) {
      if (next.owned) next.backend.close();
      throw e;
    }
    const old = this.medium;
    this.medium = null;
    await this.drop(old);
    this.medium = next;
    this.host.held.push(next);
    this.host.engines.push(next.engine);
  }

  private atapi(): AtaCore {
    const c = this.core;
    if (!c || !c.kind || c.kind.name !== "cd")
      throw new TypeError(`the drive at ${this.position} has no removable medium`);
    return c;
  }

  private async release(): Promise<void> {
    const old = this.medium;
    this.medium = null;
    await this.drop(old);
  }

  /** Let the old medium's requests finish, forget it, and close it if the machine opened it. */
  private async drop(m: HeldMedium | null): Promise<void> {
    if (!m) return;
    await m.engine.drain();
    const i = this.host.held.indexOf(m);
    if (i >= 0) this.host.held.splice(i, 1);
    const j = this.host.engines.indexOf(m.engine);
    if (j >= 0) this.host.engines.splice(j, 1);
    if (m.owned) m.backend.close();
  }
}

/**
 * An ISO image's size must be whole 2048-byte blocks: said before the image is opened, so that the message names
 * the CD's block size rather than the raw image's sector size.
 */
export function checkIsoImage(m: MediumSpec): void {
  if (!("image" in m)) return;
  let size: number;
  try {
    size = statSync(m.image).size;
  } catch {
    return; // opening it reports what is wrong
  }
  if (size % CD_SECTOR_SIZE !== 0)
    throw new CdMediumError(
      `${m.image}: ${size} bytes is not a whole number of ${CD_SECTOR_SIZE}-byte CD blocks (an ISO image must be)`,
    );
}

/** A CD is read-only whatever the medium allows (an ISO image is never written). */
export function forceReadOnly(m: MediumSpec): MediumSpec {
  return "image" in m ? { ...m, readOnly: true } : m;
}
