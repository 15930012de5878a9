/**
 * The ATAPI CD-ROM drive: a PACKET device (signature 01h/01h/14h/EBh, ATA-6 §9.12) on an ISO image read as
 * 2048-byte blocks, removable. Its ATA command table is QEMU 7.2's for an ide-cd: DEVICE RESET, PACKET,
 * IDENTIFY PACKET DEVICE, EXECUTE DEVICE DIAGNOSTIC, FLUSH CACHE and SET FEATURES; READ SECTORS and IDENTIFY
 * DEVICE abort with the signature (ATA-6 §8.15.8, §8.27.5.2: how a host tells a PACKET device); everything
 * else aborts. The MMC commands behind PACKET are in mmc.ts, the protocol in packet.ts.
 */

import {
  ATA_CMD,
  DEV_HEAD_MASK,
  ID84_WWN,
  PACKET_SIGNATURE,
  SET_FEATURES,
  ST_DRDY,
  ST_DSC,
  XFER_MODE_MASK,
  XFER_TYPE,
  XFER_TYPE_SHIFT,
} from "../../spec/ata.ts";
import { type AtaCore, CMD_FLAG_DSC, type CommandHandler } from "../core.ts";
import { putString, putWwn, setIntegrityWord } from "../identify.ts";
import { commandTable, type DriveKind } from "../kind.ts";
import { startSingleIn } from "../pio.ts";
import { MWDMA_DEFAULT, SWDMA_DEFAULT } from "../settings.ts";
import "./mmc.ts";
import { packetCommand } from "./packet.ts";
import { CdState, ChangeReport, cdState } from "./state.ts";
import { checkCdMedium } from "./tray.ts";

/** The signature, written where the host reads it (Device head bits cleared, as QEMU's ide_set_signature). */
function showSignature(d: AtaCore): void {
  const tf = d.tf;
  tf.sectorCount = PACKET_SIGNATURE.sectorCount;
  tf.lbaLow = PACKET_SIGNATURE.lbaLow;
  tf.lbaMid = PACKET_SIGNATURE.lbaMid;
  tf.lbaHigh = PACKET_SIGNATURE.lbaHigh;
  tf.device &= ~DEV_HEAD_MASK;
}

/** IDENTIFY DEVICE / READ SECTORS to a PACKET device: signature and ABRT (ATA-6 §8.15.8). */
const abortWithSignature: CommandHandler = (d) => {
  showSignature(d);
  d.abort();
  return true;
};

/**
 * IDENTIFY PACKET DEVICE (ATA-6 §8.16) with QEMU 7.2's words: removable CD-ROM, 50 µs DRQ, 12-byte packets;
 * LBA and DMA; PIO 3-4, multiword and single-word DMA 0-2, UDMA 0-5 with the mode SET FEATURES selected;
 * ATA/ATAPI-4; plus the integrity word 255 (docs/conformance.md F1).
 */
export function buildIdentifyPacket(d: AtaCore, w: Uint16Array): void {
  const drive = d.drive!;
  const s = d.settings;
  w.fill(0);
  w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5); // ATAPI, CD-ROM, removable, 50 µs to DRQ
  putString(w, 10, 10, drive.serial);
  w[20] = 3; // buffer type
  w[21] = 512; // buffer size in sectors
  w[22] = 4; // ECC bytes
  putString(w, 23, 4, drive.firmware);
  putString(w, 27, 20, drive.model);
  w[48] = 1; // dword I/O, as QEMU reports it
  w[49] = (1 << 9) | (1 << 8); // LBA, DMA
  w[53] = 7; // words 54-58, 64-70 and 88 valid
  w[62] = s.swdma;
  w[63] = s.mwdma;
  w[64] = 3; // PIO 3 and 4
  w[65] = 0xb4; // minimum multiword DMA cycle, ns
  w[66] = 0xb4; // recommended multiword DMA cycle
  w[67] = 0x12c; // minimum PIO cycle without flow control
  w[68] = 0xb4; // minimum PIO cycle with IORDY
  w[71] = 30; // PACKET to bus release, ns
  w[72] = 30; // SERVICE to BSY clear, ns
  w[80] = 0x1e; // ATA/ATAPI-1 to -4
  if (drive.wwn !== 0n) {
    // Words 84 and 87 bit 8: words 108-111 hold the World Wide Name (QEMU sets bit 8 alone in both).
    w[84] = ID84_WWN;
    w[87] = ID84_WWN;
    putWwn(w, drive.wwn);
  }
  w[88] = s.udma;
  setIntegrityWord(w);
}

const identifyPacketDevice: CommandHandler = (d) => {
  buildIdentifyPacket(d, d.replyWords);
  startSingleIn(d, d.replyBytes);
  return false;
};

/** EXECUTE DEVICE DIAGNOSTIC: a PACKET device ends it with Status 00h and no interrupt (QEMU 7.2, ATA-6 §9.10). */
const executeDeviceDiagnostic: CommandHandler = (d) => {
  d.bus.executeDiagnostic();
  return false;
};

/**
 * DEVICE RESET (ATA-6 §8.7): the command in progress stops, the device resets (signature, ATAPI state) and
 * shows Status 00h, without an interrupt; accepted even while BSY or DRQ is set (channel.ts).
 */
const deviceReset: CommandHandler = (d) => {
  d.cancel();
  d.reset();
  d.status = 0;
  d.error = 0;
  return false;
};

/** FLUSH CACHE: nothing is cached on a read-only medium; completes at once, or aborts without a medium (QEMU 7.2). */
const flushCache: CommandHandler = (d) => {
  if (!d.requests) d.abort();
  return true;
};

/** SET FEATURES (ACS-3 §7.45) as for the hard disk: the cache, reverting and transfer-mode subcommands. */
const setFeatures: CommandHandler = (d) => {
  const s = d.settings;
  const sub = d.tf.features;
  switch (sub) {
    case SET_FEATURES.ENABLE_VOLATILE_WRITE_CACHE:
      s.writeCache = true;
      return true;
    case SET_FEATURES.DISABLE_VOLATILE_WRITE_CACHE:
      s.writeCache = false;
      return true;
    case SET_FEATURES.ENABLE_REVERTING_TO_DEFAULTS:
      s.revertOnReset = true;
      return true;
    case SET_FEATURES.DISABLE_REVERTING_TO_DEFAULTS:
      s.revertOnReset = false;
      return true;
    case SET_FEATURES.ENABLE_READ_LOOK_AHEAD:
    case SET_FEATURES.DISABLE_READ_LOOK_AHEAD:
    case SET_FEATURES.ENABLE_APM:
    case SET_FEATURES.DISABLE_APM:
    case SET_FEATURES.ENABLE_AAM:
    case SET_FEATURES.DISABLE_AAM:
    case 0x69:
    case 0x67:
    case 0x96:
    case 0x9a:
      return true;
    case SET_FEATURES.SET_TRANSFER_MODE:
      if (!setTransferMode(d)) d.abort();
      return true;
    default:
      d.abort();
      return true;
  }
};

/** SET FEATURES 03h: the modes IDENTIFY PACKET DEVICE advertises (docs/conformance.md C7), in words 62/63/88. */
function setTransferMode(d: AtaCore): boolean {
  const s = d.settings;
  const count = d.tf.sectorCount;
  const mode = count & XFER_MODE_MASK;
  s.swdma = SWDMA_DEFAULT;
  s.mwdma = MWDMA_DEFAULT;
  s.udma = 0x3f;
  switch (count >> XFER_TYPE_SHIFT) {
    case XFER_TYPE.PIO_DEFAULT:
      return mode <= 1;
    case XFER_TYPE.PIO_FLOW_CONTROL:
      return mode <= 4;
    case XFER_TYPE.SINGLE_WORD_DMA:
      if (mode > 2) return false;
      s.swdma |= 1 << (mode + 8);
      return true;
    case XFER_TYPE.MULTIWORD_DMA:
      if (mode > 2) return false;
      s.mwdma |= 1 << (mode + 8);
      return true;
    case XFER_TYPE.ULTRA_DMA:
      if (mode > 5) return false;
      s.udma |= 1 << (mode + 8);
      return true;
    default:
      return false;
  }
}

const DSC = CMD_FLAG_DSC;
const C = ATA_CMD;

export const CD_COMMANDS = commandTable([
  [C.DEVICE_RESET, "DEVICE RESET", 0, deviceReset],
  [C.READ_SECTORS, "READ SECTORS", 0, abortWithSignature],
  [C.EXECUTE_DEVICE_DIAGNOSTIC, "EXECUTE DEVICE DIAGNOSTIC", 0, executeDeviceDiagnostic],
  [C.PACKET, "PACKET", 0, packetCommand],
  [C.IDENTIFY_PACKET_DEVICE, "IDENTIFY PACKET DEVICE", 0, identifyPacketDevice],
  [C.FLUSH_CACHE, "FLUSH CACHE", DSC, flushCache],
  [C.IDENTIFY_DEVICE, "IDENTIFY DEVICE", 0, abortWithSignature],
  [C.SET_FEATURES, "SET FEATURES", DSC, setFeatures],
]);

/** A reset (SRST, DEVICE RESET) forgets the sense data, the change report, the tray lock, and shuts the tray. */
function resetAtapi(d: AtaCore): void {
  const s = cdState(d);
  s.senseKey = 0;
  s.asc = 0;
  s.changed = ChangeReport.None;
  s.dma = false;
  s.remaining = s.elementLeft = 0;
  s.trayLocked = false;
  s.trayOpen = false;
}

export const CD_ROM: DriveKind = {
  name: "cd",
  commands: CD_COMMANDS,
  signature: PACKET_SIGNATURE,
  // A PACKET device clears DRDY after a reset or diagnostic (ATA-6 §9.10); at power-on QEMU 7.2 shows 50h.
  readyStatus: 0,
  powerOnStatus: ST_DRDY | ST_DSC,
  packet: true,
  attach(d) {
    if (d.drive?.engine) checkCdMedium(d.drive.engine);
    d.kindState = new CdState();
  },
  reset: resetAtapi,
  medium: { sectorSize: 512, defaultModel: "XENIDE DVD-ROM", chs: false, removable: true },
};
