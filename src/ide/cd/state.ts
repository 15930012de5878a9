/**
 * What an ATAPI CD-ROM drive keeps besides the ATA core's registers (QEMU's ATAPI fields of IDEState): the sense
 * data of the last CHECK CONDITION, the tray (open, locked), the media-change report in progress, the media
 * events GET EVENT STATUS NOTIFICATION hands out, and the PACKET command's transfer.
 */

import type { IoError } from "../../storage/types.ts";
import type { AtaCore } from "../core.ts";

/**
 * Where the report of a media change stands (QEMU's cdrom_changed): after a change, the next command that does
 * not allow a unit attention fails NOT READY (as if the tray had been open), the one after it UNIT ATTENTION,
 * so that guests that never poll events still see the tray cycle (MMC-5 §4.1.6.1).
 */
export const enum ChangeReport {
  None = 0,
  NotReady = 1,
  UnitAttention = 2,
}

export class CdState {
  // --- Sense data of the last CHECK CONDITION (SPC-3 §4.5), as REQUEST SENSE returns it.
  senseKey = 0;
  asc = 0;

  // --- The tray and the medium.
  trayOpen = false;
  /** PREVENT ALLOW MEDIUM REMOVAL: the tray stays shut against START STOP UNIT and the host's eject. */
  trayLocked = false;
  changed: ChangeReport = ChangeReport.None;
  /** Media events not yet reported by GET EVENT STATUS NOTIFICATION (MMC-5 §6.7.2.5). */
  newMedia = false;
  ejectRequest = false;

  // --- The PACKET command.
  /** The 12-byte command packet as the host wrote it. */
  readonly packet = new Uint8Array(12);
  /** Features bit 0 of the PACKET command: the data phase goes through the Bus Master. */
  dma = false;
  /** Bytes of the command's data still to go to the host (QEMU packet_transfer_size). */
  remaining = 0;
  /** Bytes still to go in the current DRQ block (QEMU elementary_transfer_size). */
  elementLeft = 0;
  /** The data source: `src[srcPos, srcEnd)` is ready to go out. */
  src: Uint8Array = new Uint8Array(0);
  srcPos = 0;
  srcEnd = 0;
  /** A read: next block to fetch, blocks left to fetch, and their size on the wire (2048, or 2352 raw). */
  readLba = -1;
  readLeft = 0;
  blockSize = 2048;
  /** A fetch failed at the block after the ones in the buffer: reported when the host gets there. */
  fetchError: IoError | undefined = undefined;
  /** The reply of a non-read command (room for the largest, READ DVD STRUCTURE's 2052 bytes). */
  readonly reply = new Uint8Array(4096);
  private stage: Uint8Array | null = null;

  /** Where raw (2352-byte) reads put the user data before framing it: 32 blocks, allocated on first use. */
  staging(): Uint8Array {
    return (this.stage ??= new Uint8Array(32 * 2048));
  }
}

export function cdState(d: AtaCore): CdState {
  return d.kindState as CdState;
}
