/**
 * Media change from the host side (QEMU's QMP `eject` and `blockdev-change-medium`): the tray opens, the medium
 * goes, another comes, the tray closes. Each tray movement records a new-media event for GET EVENT STATUS
 * NOTIFICATION, arms the NOT READY / UNIT ATTENTION report of the next command, and raises the channel's
 * interrupt, as QEMU 7.2's ide_cd_change_cb does. A tray locked by PREVENT ALLOW MEDIUM REMOVAL stays shut
 * unless the eject is forced; the guest is then asked to eject (an eject-request event).
 */

import type { IoEngine } from "../../storage/types.ts";
import { ASC, CD_SECTOR_SIZE, SENSE_KEY } from "../../spec/atapi.ts";
import type { AtaCore } from "../core.ts";
import { checkCondition } from "./packet.ts";
import { ChangeReport, cdState } from "./state.ts";

/** The drive refused to open its tray: the guest locked it (PREVENT ALLOW MEDIUM REMOVAL). */
export class TrayLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrayLockedError";
  }
}

/** A medium the drive cannot take (an ISO image whose size is not a whole number of 2048-byte blocks). */
export class CdMediumError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CdMediumError";
  }
}

/** Refuse a medium that is not a whole number of CD blocks. */
export function checkCdMedium(engine: IoEngine): void {
  const b = engine.backend;
  const bytes = b.sectorCount * b.sectorSize;
  if (bytes % CD_SECTOR_SIZE !== 0)
    throw new CdMediumError(
      `${b.describe}: ${bytes} bytes is not a whole number of ${CD_SECTOR_SIZE}-byte CD blocks`,
    );
}

function isCd(d: AtaCore): boolean {
  return d.kind?.name === "cd";
}

/** The tray moved (QEMU ide_cd_change_cb). */
function trayMoved(d: AtaCore, open: boolean): void {
  const s = cdState(d);
  s.trayOpen = open;
  s.changed = ChangeReport.NotReady;
  s.newMedia = true;
  s.ejectRequest = false;
  d.raiseIrq();
}

/**
 * Open the tray and take the medium out. A locked tray: an eject request goes to the guest, and unless `force`
 * the tray stays shut and TrayLockedError is thrown; `force` unlocks it first.
 */
export function ejectMedium(d: AtaCore, force = false): void {
  if (!isCd(d)) throw new TypeError("only a CD drive has a tray");
  const s = cdState(d);
  if (s.trayLocked) {
    s.ejectRequest = true;
    if (force) s.trayLocked = false;
    d.raiseIrq();
    if (!force) throw new TrayLockedError("the guest has locked the tray (PREVENT ALLOW MEDIUM REMOVAL)");
  }
  abandonRead(d);
  trayMoved(d, true);
  d.changeMedium(null);
}

/** Put `engine`'s medium in (opening the tray if it is shut, as QEMU's blockdev-change-medium) and close the tray. */
export function insertMedium(d: AtaCore, engine: IoEngine): void {
  if (!isCd(d)) throw new TypeError("only a CD drive has a tray");
  checkCdMedium(engine);
  const s = cdState(d);
  if (!s.trayOpen) ejectMedium(d, false);
  d.changeMedium(engine);
  trayMoved(d, false);
}

/** Whether the drive holds a medium, and the tray state, for the host's view. */
export function trayStatus(d: AtaCore): { open: boolean; locked: boolean; medium: boolean } {
  const s = cdState(d);
  return { open: s.trayOpen, locked: s.trayLocked, medium: d.requests !== null };
}

/**
 * A read whose storage request is still out when the medium goes cannot finish: it is abandoned, and the
 * command fails as if the medium had never been there (the channel never wedges).
 */
function abandonRead(d: AtaCore): void {
  if (d.requests?.pending) {
    d.cancel();
    checkCondition(d, SENSE_KEY.NOT_READY, ASC.MEDIUM_NOT_PRESENT);
  }
}
