/**
 * The ATA command table for a hard disk, in the shape of QEMU's `ide_cmd_table`: one handler per opcode and
 * flags. A handler returns true when the command is complete, and the channel's single epilogue then clears
 * BSY, sets DSC when flagged and the command succeeded, and raises the interrupt. Handlers that start a data
 * transfer or a storage request return false and finish through the channel. Opcodes not in the table
 * (including NOP, which always aborts per ACS §7.17, and the PACKET/CFA/security/queued families) abort with
 * ABRT.
 */

import {
  CMD,
  DEV_LBA,
  ERR_IDNF,
  LBA28_MAX_SECTORS,
  MAX_MULT_SECTORS,
  POWER_ACTIVE_OR_IDLE,
  POWER_STANDBY,
  SETF,
  SMART,
} from "./ata.ts";
import type { IdeChannel } from "./channel.ts";
import { type IdeDevice, MWDMA_DEFAULT, SWDMA_DEFAULT } from "./device.ts";
import { buildIdentify } from "./identify.ts";

/** Set DSC (0x10) in Status when the command completes without error (QEMU's SET_DSC). */
export const CMD_FLAG_DSC = 1;

export type CommandHandler = (ch: IdeChannel, d: IdeDevice) => boolean;

export interface CommandEntry {
  name: string;
  flags: number;
  handler: CommandHandler;
}

// ---- Handlers.

/** Address and count of a media access command; on an address that names no sector, IDNF and null. */
function target(ch: IdeChannel, d: IdeDevice, lba48: boolean): { lba: number; count: number } | null {
  const count = d.count(lba48);
  const lba = d.address(lba48);
  if (lba < 0) {
    ch.fail(d, ERR_IDNF, -1);
    return null;
  }
  return { lba, count };
}

function readPio(lba48: boolean, multiple: boolean): CommandHandler {
  return (ch, d) => {
    if (multiple && d.multipleSectors === 0) {
      ch.abort(d); // READ MULTIPLE before SET MULTIPLE MODE enabled it (ATA/ATAPI-6 §8.24)
      return true;
    }
    const t = target(ch, d, lba48);
    if (t) ch.startPioIn(d, t.lba, t.count, multiple ? d.multipleSectors : 1);
    return false;
  };
}

function writePio(lba48: boolean, multiple: boolean): CommandHandler {
  return (ch, d) => {
    if ((multiple && d.multipleSectors === 0) || d.readOnly) {
      ch.abort(d); // read-only medium: ABRT before any data is requested
      return true;
    }
    const t = target(ch, d, lba48);
    if (t) ch.startPioOut(d, t.lba, t.count, multiple ? d.multipleSectors : 1);
    return false;
  };
}

function dma(lba48: boolean, write: boolean): CommandHandler {
  return (ch, d) => {
    if (write && d.readOnly) {
      ch.abort(d);
      return true;
    }
    const t = target(ch, d, lba48);
    if (t) ch.startDma(d, write, t.lba, t.count);
    return false;
  };
}

function verify(lba48: boolean): CommandHandler {
  return (ch, d) => {
    const t = target(ch, d, lba48);
    if (t) ch.verify(d, t.lba, t.count);
    return false;
  };
}

const nop: CommandHandler = () => true;

function power(mode: IdeDevice["power"]): CommandHandler {
  return (_ch, d) => {
    d.power = mode;
    return true;
  };
}

const seek: CommandHandler = (ch, d) => {
  const lba = d.address(false);
  if (lba < 0 || lba >= d.sectorCount) {
    ch.fail(d, ERR_IDNF, -1);
    return false;
  }
  return true;
};

const identify: CommandHandler = (ch, d) => {
  buildIdentify(d.identifyState(), d.identifyWords);
  // The words go out little-endian; identifyBytes is a byte view of them (every Node platform is LE).
  ch.startSingleIn(d, d.identifyBytes);
  return false;
};

const flush: CommandHandler = (ch, d) => {
  ch.flush(d);
  return false;
};

const diagnostic: CommandHandler = (ch) => {
  ch.diagnostic();
  return true;
};

const checkPowerMode: CommandHandler = (_ch, d) => {
  d.nsector = d.power === "standby" ? POWER_STANDBY : POWER_ACTIVE_OR_IDLE;
  return true;
};

const setMultipleMode: CommandHandler = (ch, d) => {
  const n = d.nsector;
  if (n > MAX_MULT_SECTORS || (n & (n - 1)) !== 0) {
    ch.abort(d);
    return true;
  }
  d.multipleSectors = n;
  return true;
};

/**
 * INITIALIZE DEVICE PARAMETERS (ATA/ATAPI-6 §8.16): sectors per track from Count, heads from Device bits 3:0
 * plus one. A translation the device cannot use (Count 0, or not even one cylinder) is accepted, and every CHS
 * media access then fails with IDNF until a valid one is set.
 */
const initializeDeviceParameters: CommandHandler = (_ch, d) => {
  const heads = (d.select & 0x0f) + 1;
  const sectors = d.nsector;
  const cylinders = sectors ? Math.min(Math.floor(d.sectorCount / (heads * sectors)), 65535) : 0;
  d.currentGeometry = cylinders > 0 ? { cylinders, heads, sectors } : null;
  return true;
};

const readNativeMax: CommandHandler = (ch, d) => {
  const last = Math.max(0, d.sectorCount - 1);
  if (d.select & DEV_LBA) {
    d.addrMode = 1;
    d.setAddress(Math.min(last, LBA28_MAX_SECTORS));
    return true;
  }
  const g = d.currentGeometry;
  if (!g) {
    ch.abort(d); // no valid CHS translation: there is no CHS address to report
    return true;
  }
  d.addrMode = 0;
  d.setAddress(Math.max(0, Math.min(d.sectorCount, g.cylinders * g.heads * g.sectors) - 1));
  return true;
};

const readNativeMaxExt: CommandHandler = (_ch, d) => {
  d.addrMode = 2;
  d.setAddress(Math.max(0, d.sectorCount - 1));
  return true;
};

/** SET FEATURES (ACS §7.48). */
const setFeatures: CommandHandler = (ch, d) => {
  switch (d.feature) {
    case SETF.ENABLE_WRITE_CACHE:
      d.writeCache = true;
      return true;
    case SETF.DISABLE_WRITE_CACHE:
      // Whatever the cache holds reaches the medium before the command completes.
      d.writeCache = false;
      ch.flush(d);
      return false;
    case SETF.SET_TRANSFER_MODE:
      if (!setTransferMode(d)) ch.abort(d);
      return true;
    case SETF.ENABLE_REVERTING_TO_DEFAULTS:
      d.revertOnReset = true;
      return true;
    case SETF.DISABLE_REVERTING_TO_DEFAULTS:
      d.revertOnReset = false;
      return true;
    // Accepted without effect, as QEMU 7.2 does: read look-ahead (AAh/55h), advanced power management
    // (05h/85h), and features Linux and Windows probe for.
    case 0xaa:
    case 0x55:
    case 0x05:
    case 0x85:
    case 0x69:
    case 0x67:
    case 0x96:
    case 0x9a:
    case 0x42:
    case 0xc2:
      return true;
    default:
      ch.abort(d);
      return true;
  }
};

/**
 * SET FEATURES 03h: Count bits 7:3 = transfer type, 2:0 = mode (ACS §7.48.3). Reflected in IDENTIFY words
 * 62/63/88. Modes beyond those IDENTIFY advertises (PIO 4, SWDMA 2, MWDMA 2, UDMA 5) abort.
 */
function setTransferMode(d: IdeDevice): boolean {
  const mode = d.nsector & 7;
  switch (d.nsector >> 3) {
    case 0: // PIO default mode (mode 0 or 1 = IORDY disabled)
      if (mode > 1) return false;
      break;
    case 1: // PIO flow control mode x
      if (mode > 4) return false;
      break;
    case 2: // single-word DMA
      if (mode > 2) return false;
      d.swdma = SWDMA_DEFAULT | (1 << (mode + 8));
      d.mwdma = MWDMA_DEFAULT;
      d.udma = 0x3f;
      return true;
    case 4: // multiword DMA
      if (mode > 2) return false;
      d.swdma = SWDMA_DEFAULT;
      d.mwdma = MWDMA_DEFAULT | (1 << (mode + 8));
      d.udma = 0x3f;
      return true;
    case 8: // Ultra DMA
      if (mode > 5) return false;
      d.swdma = SWDMA_DEFAULT;
      d.mwdma = MWDMA_DEFAULT;
      d.udma = 0x3f | (1 << (mode + 8));
      return true;
    default:
      return false;
  }
  // A PIO mode: no DMA mode selected.
  d.swdma = SWDMA_DEFAULT;
  d.mwdma = MWDMA_DEFAULT;
  d.udma = 0x3f;
  return true;
}

/** SMART (ATA/ATAPI-6 §8.41): only with the key 4Fh/C2h in LBA Mid/High. */
const smart: CommandHandler = (ch, d) => {
  if (d.lcyl !== SMART.KEY_LBAM || d.hcyl !== SMART.KEY_LBAH) {
    ch.abort(d);
    return true;
  }
  const sub = d.feature;
  if (!d.smartEnabled && sub !== SMART.ENABLE_OPERATIONS) {
    ch.abort(d); // SMART disabled: everything but ENABLE OPERATIONS aborts
    return true;
  }
  switch (sub) {
    case SMART.ENABLE_OPERATIONS:
      d.smartEnabled = true;
      return true;
    case SMART.DISABLE_OPERATIONS:
      d.smartEnabled = false;
      return true;
    case SMART.RETURN_STATUS:
      // No threshold exceeded: the key stays 4Fh/C2h (F4h/2Ch would report one).
      d.lcyl = SMART.KEY_LBAM;
      d.hcyl = SMART.KEY_LBAH;
      return true;
    case SMART.ATTRIBUTE_AUTOSAVE:
    case SMART.EXECUTE_OFFLINE_IMMEDIATE:
      return true;
    case SMART.READ_DATA:
    case SMART.READ_THRESHOLDS: {
      const page = d.buf.subarray(0, 512);
      page.fill(0);
      page[0] = 0x10; // data structure revision 0010h
      let sum = 0;
      for (let i = 0; i < 511; i++) sum += page[i]!;
      page[511] = (256 - (sum & 0xff)) & 0xff; // checksum: byte sum of the page is zero
      ch.startSingleIn(d, page);
      return false;
    }
    default:
      ch.abort(d);
      return true;
  }
};

/** DATA SET MANAGEMENT (ACS §7.10): TRIM only (Features = 01h), payload by DMA. */
const dataSetManagement: CommandHandler = (ch, d) => {
  const count = (d.hobNsector << 8) | d.nsector;
  if (d.feature !== 0x01 || d.readOnly || count === 0) {
    ch.abort(d);
    return true;
  }
  ch.startDma(d, true, 0, count, true);
  return false;
};

const freezeLock: CommandHandler = (_ch, d) => {
  // SECURITY FREEZE LOCK / CFA WEAR LEVEL: accepted as QEMU does (Windows issues it), Count := 0.
  d.nsector = 0;
  return true;
};

// ---- The table.

export const COMMAND_TABLE: (CommandEntry | undefined)[] = new Array(256);

function def(op: number, name: string, flags: number, handler: CommandHandler): void {
  COMMAND_TABLE[op] = { name, flags, handler };
}

const DSC = CMD_FLAG_DSC;
def(CMD.DATA_SET_MANAGEMENT, "DATA SET MANAGEMENT", DSC, dataSetManagement);
def(CMD.RECALIBRATE, "RECALIBRATE", DSC, nop);
def(CMD.READ_SECTORS, "READ SECTORS", 0, readPio(false, false));
def(CMD.READ_SECTORS_NORETRY, "READ SECTORS (no retry)", 0, readPio(false, false));
def(CMD.READ_SECTORS_EXT, "READ SECTORS EXT", 0, readPio(true, false));
def(CMD.READ_DMA_EXT, "READ DMA EXT", 0, dma(true, false));
def(CMD.READ_NATIVE_MAX_ADDRESS_EXT, "READ NATIVE MAX ADDRESS EXT", DSC, readNativeMaxExt);
def(CMD.READ_MULTIPLE_EXT, "READ MULTIPLE EXT", 0, readPio(true, true));
def(CMD.WRITE_SECTORS, "WRITE SECTORS", 0, writePio(false, false));
def(CMD.WRITE_SECTORS_NORETRY, "WRITE SECTORS (no retry)", 0, writePio(false, false));
def(CMD.WRITE_SECTORS_EXT, "WRITE SECTORS EXT", 0, writePio(true, false));
def(CMD.WRITE_DMA_EXT, "WRITE DMA EXT", 0, dma(true, true));
def(CMD.WRITE_MULTIPLE_EXT, "WRITE MULTIPLE EXT", 0, writePio(true, true));
def(CMD.WRITE_VERIFY, "WRITE VERIFY", 0, writePio(false, false));
def(CMD.READ_VERIFY_SECTORS, "READ VERIFY SECTORS", DSC, verify(false));
def(CMD.READ_VERIFY_SECTORS_NORETRY, "READ VERIFY SECTORS (no retry)", DSC, verify(false));
def(CMD.READ_VERIFY_SECTORS_EXT, "READ VERIFY SECTORS EXT", DSC, verify(true));
def(CMD.SEEK, "SEEK", DSC, seek);
def(CMD.EXECUTE_DEVICE_DIAGNOSTIC, "EXECUTE DEVICE DIAGNOSTIC", DSC, diagnostic);
def(CMD.INITIALIZE_DEVICE_PARAMETERS, "INITIALIZE DEVICE PARAMETERS", DSC, initializeDeviceParameters);
def(CMD.STANDBY_IMMEDIATE_ALT, "STANDBY IMMEDIATE (old)", 0, power("standby"));
def(CMD.IDLE_IMMEDIATE_ALT, "IDLE IMMEDIATE (old)", 0, power("idle"));
def(CMD.STANDBY_ALT, "STANDBY (old)", 0, power("standby"));
def(CMD.IDLE_ALT, "IDLE (old)", 0, power("idle"));
def(CMD.CHECK_POWER_MODE_ALT, "CHECK POWER MODE (old)", DSC, checkPowerMode);
def(CMD.SLEEP_ALT, "SLEEP (old)", 0, power("standby"));
def(CMD.SMART, "SMART", DSC, smart);
def(CMD.READ_MULTIPLE, "READ MULTIPLE", 0, readPio(false, true));
def(CMD.WRITE_MULTIPLE, "WRITE MULTIPLE", 0, writePio(false, true));
def(CMD.SET_MULTIPLE_MODE, "SET MULTIPLE MODE", DSC, setMultipleMode);
def(CMD.READ_DMA, "READ DMA", 0, dma(false, false));
def(CMD.READ_DMA_NORETRY, "READ DMA (no retry)", 0, dma(false, false));
def(CMD.WRITE_DMA, "WRITE DMA", 0, dma(false, true));
def(CMD.WRITE_DMA_NORETRY, "WRITE DMA (no retry)", 0, dma(false, true));
def(CMD.STANDBY_IMMEDIATE, "STANDBY IMMEDIATE", 0, power("standby"));
def(CMD.IDLE_IMMEDIATE, "IDLE IMMEDIATE", 0, power("idle"));
def(CMD.STANDBY, "STANDBY", 0, power("standby"));
def(CMD.IDLE, "IDLE", 0, power("idle"));
def(CMD.CHECK_POWER_MODE, "CHECK POWER MODE", DSC, checkPowerMode);
def(CMD.SLEEP, "SLEEP", 0, power("standby"));
def(CMD.FLUSH_CACHE, "FLUSH CACHE", 0, flush);
def(CMD.FLUSH_CACHE_EXT, "FLUSH CACHE EXT", 0, flush);
def(CMD.IDENTIFY_DEVICE, "IDENTIFY DEVICE", 0, identify);
def(CMD.SET_FEATURES, "SET FEATURES", DSC, setFeatures);
def(CMD.SECURITY_FREEZE_LOCK, "SECURITY FREEZE LOCK", DSC, freezeLock);
def(CMD.READ_NATIVE_MAX_ADDRESS, "READ NATIVE MAX ADDRESS", DSC, readNativeMax);
