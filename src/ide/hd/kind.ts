/**
 * The hard disk: an ATA device (non-PACKET signature) on a 512-byte-sector medium, with a CHS geometry and the
 * command table in commands.ts.
 */

import { ATA_SIGNATURE, ST_DRDY, ST_DSC } from "../../spec/ata.ts";
import type { DriveKind } from "../kind.ts";
import { HD_COMMANDS } from "./commands.ts";

export const HARD_DISK: DriveKind = {
  name: "hd",
  commands: HD_COMMANDS,
  signature: ATA_SIGNATURE,
  // Ready and seek complete after power-on and resets (QEMU 7.2 reports DSC too).
  readyStatus: ST_DRDY | ST_DSC,
  medium: { sectorSize: 512, defaultModel: "XENIDE HARDDISK", chs: true },
};
