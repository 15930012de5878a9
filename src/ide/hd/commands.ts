/**
 * The hard disk's command table, in the shape of QEMU's `ide_cmd_table`: one handler per opcode, and flags.
 * Every command QEMU 7.2 accepts for an ide-hd is here, plus what docs/conformance.md lists. Opcodes not in the
 * table (including NOP, which aborts per ACS-3 §7.17, and the PACKET, CFA, security and queued families) abort
 * with ABRT.
 */

import {
  ATA_CMD,
  DEV_HEAD_MASK,
  DEV_LBA,
  DSM_TRIM,
  ERR_IDNF,
  LBA28_LIMIT,
  POWER_ACTIVE_OR_IDLE,
  POWER_STANDBY,
  SET_FEATURES,
  SMART_FEATURE,
  SMART_KEY_LBA_HIGH,
  SMART_KEY_LBA_MID,
  XFER_MODE_MASK,
  XFER_TYPE,
  XFER_TYPE_SHIFT,
} from "../../spec/ata.ts";
import { type AtaCore, CMD_FLAG_DSC, type CommandHandler } from "../core.ts";
import { startDma } from "../dma.ts";
import { AddrMode } from "../taskfile.ts";
import { commandTable } from "../kind.ts";
import { flush, verify } from "../media.ts";
import { startPioIn, startPioOut, startSingleIn } from "../pio.ts";
import { MAX_MULT_SECTORS, MWDMA_DEFAULT, type PowerMode, SWDMA_DEFAULT } from "../settings.ts";
import { buildIdentify } from "./identify.ts";

// ---- Media access.

/** Address and count of a media access command; on an address that names no sector, IDNF and -1. */
function target(d: AtaCore, lba48: boolean): number {
  const lba = d.commandAddress(lba48);
  if (lba < 0) d.fail(ERR_IDNF, -1);
  return lba;
}

function readPio(lba48: boolean, multiple: boolean): CommandHandler {
  return (d) => {
    if (multiple && d.settings.multipleSectors === 0) {
      d.abort(); // READ MULTIPLE before SET MULTIPLE MODE enabled it
      return true;
    }
    const count = d.commandCount(lba48);
    const lba = target(d, lba48);
    if (lba >= 0) startPioIn(d, lba, count, multiple ? d.settings.multipleSectors : 1);
    return false;
  };
}

function writePio(lba48: boolean, multiple: boolean): CommandHandler {
  return (d) => {
    if ((multiple && d.settings.multipleSectors === 0) || d.readOnly) {
      d.abort(); // read-only medium: ABRT before any data is requested
      return true;
    }
    const count = d.commandCount(lba48);
    const lba = target(d, lba48);
    if (lba >= 0) startPioOut(d, lba, count, multiple ? d.settings.multipleSectors : 1);
    return false;
  };
}

function dma(lba48: boolean, write: boolean): CommandHandler {
  return (d) => {
    if (write && d.readOnly) {
      d.abort();
      return true;
    }
    const count = d.commandCount(lba48);
    const lba = target(d, lba48);
    if (lba >= 0) startDma(d, write, lba, count);
    return false;
  };
}

function readVerify(lba48: boolean): CommandHandler {
  return (d) => {
    const count = d.commandCount(lba48);
    const lba = target(d, lba48);
    if (lba >= 0) verify(d, lba, count);
    return false;
  };
}

const seek: CommandHandler = (d) => {
  const lba = d.commandAddress(false);
  if (lba < 0 || lba >= d.sectorCount) {
    d.fail(ERR_IDNF, -1);
    return false;
  }
  return true;
};

/** DATA SET MANAGEMENT (ACS-3 §7.5): TRIM only, payload by DMA; the 48-bit Count is its size in blocks. */
const dataSetManagement: CommandHandler = (d) => {
  const tf = d.tf;
  const count = (tf.hobSectorCount << 8) | tf.sectorCount;
  if (tf.features !== DSM_TRIM || d.readOnly || count === 0) {
    d.abort();
    return true;
  }
  startDma(d, true, 0, count, true);
  return false;
};

const flushCache: CommandHandler = (d) => {
  flush(d);
  return false;
};

// ---- Identification and diagnostics.

const identifyDevice: CommandHandler = (d) => {
  const drive = d.drive!;
  const s = d.settings;
  buildIdentify(
    {
      model: drive.model,
      serial: drive.serial,
      firmware: drive.firmware,
      sectorCount: drive.sectorCount,
      geometry: drive.defaultGeometry!,
      current: s.currentGeometry,
      multipleSectors: s.multipleSectors,
      writeCache: s.writeCache,
      smartEnabled: s.smartEnabled,
      swdma: s.swdma,
      mwdma: s.mwdma,
      udma: s.udma,
    },
    d.replyWords,
  );
  // The words go out little-endian; replyBytes is a byte view of them (every Node platform is LE).
  startSingleIn(d, d.replyBytes);
  return false;
};

const executeDeviceDiagnostic: CommandHandler = (d) => {
  d.bus.executeDiagnostic();
  return true;
};

// ---- Settings.

const nop: CommandHandler = () => true;

function power(mode: PowerMode): CommandHandler {
  return (d) => {
    d.settings.power = mode;
    return true;
  };
}

const checkPowerMode: CommandHandler = (d) => {
  d.tf.sectorCount = d.settings.power === "standby" ? POWER_STANDBY : POWER_ACTIVE_OR_IDLE;
  return true;
};

const setMultipleMode: CommandHandler = (d) => {
  const n = d.tf.sectorCount;
  if (n > MAX_MULT_SECTORS || (n & (n - 1)) !== 0) {
    d.abort();
    return true;
  }
  d.settings.multipleSectors = n;
  return true;
};

/**
 * INITIALIZE DEVICE PARAMETERS (ATA-6 §8.16): sectors per track from Count, heads from Device bits 3:0 plus
 * one. A translation the device cannot use (Count 0, or not even one cylinder) is accepted, and every CHS media
 * access then fails with IDNF until a valid one is set.
 */
const initializeDeviceParameters: CommandHandler = (d) => {
  const heads = (d.tf.device & DEV_HEAD_MASK) + 1;
  const sectors = d.tf.sectorCount;
  const cylinders = sectors ? Math.min(Math.floor(d.sectorCount / (heads * sectors)), 65535) : 0;
  d.settings.currentGeometry = cylinders > 0 ? { cylinders, heads, sectors } : null;
  return true;
};

const readNativeMaxAddress: CommandHandler = (d) => {
  const last = Math.max(0, d.sectorCount - 1);
  if (d.tf.device & DEV_LBA) {
    d.tf.addrMode = AddrMode.Lba28;
    d.setAddress(Math.min(last, LBA28_LIMIT - 1));
    return true;
  }
  const g = d.settings.currentGeometry;
  if (!g) {
    d.abort(); // no valid CHS translation: there is no CHS address to report
    return true;
  }
  d.tf.addrMode = AddrMode.Chs;
  d.setAddress(Math.max(0, Math.min(d.sectorCount, g.cylinders * g.heads * g.sectors) - 1));
  return true;
};

const readNativeMaxAddressExt: CommandHandler = (d) => {
  d.tf.addrMode = AddrMode.Lba48;
  d.setAddress(Math.max(0, d.sectorCount - 1));
  return true;
};

/**
 * Obsolete SET FEATURES subcommands QEMU 7.2 accepts as no-ops (they were vendor or reserved codes that
 * Linux and Windows still send).
 */
const SETF_QEMU_NOPS = [0x69, 0x67, 0x96, 0x9a];

/** SET FEATURES (ACS-3 §7.45). */
const setFeatures: CommandHandler = (d) => {
  const s = d.settings;
  const sub = d.tf.features;
  switch (sub) {
    case SET_FEATURES.ENABLE_VOLATILE_WRITE_CACHE:
      s.writeCache = true;
      return true;
    case SET_FEATURES.DISABLE_VOLATILE_WRITE_CACHE:
      // Whatever the cache holds reaches the medium before the command completes.
      s.writeCache = false;
      flush(d);
      return false;
    case SET_FEATURES.SET_TRANSFER_MODE:
      if (!setTransferMode(d)) d.abort();
      return true;
    case SET_FEATURES.ENABLE_REVERTING_TO_DEFAULTS:
      s.revertOnReset = true;
      return true;
    case SET_FEATURES.DISABLE_REVERTING_TO_DEFAULTS:
      s.revertOnReset = false;
      return true;
    // Accepted without effect, as QEMU 7.2 does: read look-ahead, advanced power management, acoustic
    // management.
    case SET_FEATURES.ENABLE_READ_LOOK_AHEAD:
    case SET_FEATURES.DISABLE_READ_LOOK_AHEAD:
    case SET_FEATURES.ENABLE_APM:
    case SET_FEATURES.DISABLE_APM:
    case SET_FEATURES.ENABLE_AAM:
    case SET_FEATURES.DISABLE_AAM:
      return true;
    default:
      if (SETF_QEMU_NOPS.includes(sub)) return true;
      d.abort();
      return true;
  }
};

/**
 * SET FEATURES 03h: Count bits 7:3 = transfer type, 2:0 = mode (ACS-3 §7.45). Reflected in IDENTIFY words
 * 62/63/88. Modes beyond those IDENTIFY advertises (PIO 4, SWDMA 2, MWDMA 2, UDMA 5) abort.
 */
function setTransferMode(d: AtaCore): boolean {
  const s = d.settings;
  const count = d.tf.sectorCount;
  const mode = count & XFER_MODE_MASK;
  switch (count >> XFER_TYPE_SHIFT) {
    case XFER_TYPE.PIO_DEFAULT: // mode 0 or 1 = IORDY disabled
      if (mode > 1) return false;
      break;
    case XFER_TYPE.PIO_FLOW_CONTROL:
      if (mode > 4) return false;
      break;
    case XFER_TYPE.SINGLE_WORD_DMA:
      if (mode > 2) return false;
      s.swdma = SWDMA_DEFAULT | (1 << (mode + 8));
      s.mwdma = MWDMA_DEFAULT;
      s.udma = 0x3f;
      return true;
    case XFER_TYPE.MULTIWORD_DMA:
      if (mode > 2) return false;
      s.swdma = SWDMA_DEFAULT;
      s.mwdma = MWDMA_DEFAULT | (1 << (mode + 8));
      s.udma = 0x3f;
      return true;
    case XFER_TYPE.ULTRA_DMA:
      if (mode > 5) return false;
      s.swdma = SWDMA_DEFAULT;
      s.mwdma = MWDMA_DEFAULT;
      s.udma = 0x3f | (1 << (mode + 8));
      return true;
    default:
      return false;
  }
  // A PIO mode: no DMA mode selected.
  s.swdma = SWDMA_DEFAULT;
  s.mwdma = MWDMA_DEFAULT;
  s.udma = 0x3f;
  return true;
}

/** SMART (ACS-3 §7.48): only with the key 4Fh/C2h in LBA Mid/High. */
const smart: CommandHandler = (d) => {
  const tf = d.tf;
  const s = d.settings;
  if (tf.lbaMid !== SMART_KEY_LBA_MID || tf.lbaHigh !== SMART_KEY_LBA_HIGH) {
    d.abort();
    return true;
  }
  const sub = tf.features;
  if (!s.smartEnabled && sub !== SMART_FEATURE.ENABLE_OPERATIONS) {
    d.abort(); // SMART disabled: everything but ENABLE OPERATIONS aborts
    return true;
  }
  switch (sub) {
    case SMART_FEATURE.ENABLE_OPERATIONS:
      s.smartEnabled = true;
      return true;
    case SMART_FEATURE.DISABLE_OPERATIONS:
      s.smartEnabled = false;
      return true;
    case SMART_FEATURE.RETURN_STATUS:
      // No threshold exceeded: the key stays 4Fh/C2h (F4h/2Ch would report one).
      tf.lbaMid = SMART_KEY_LBA_MID;
      tf.lbaHigh = SMART_KEY_LBA_HIGH;
      return true;
    case SMART_FEATURE.ATTRIBUTE_AUTOSAVE:
    case SMART_FEATURE.EXECUTE_OFFLINE_IMMEDIATE:
      return true;
    case SMART_FEATURE.READ_DATA:
    case SMART_FEATURE.READ_THRESHOLDS: {
      const page = d.buf.subarray(0, 512);
      page.fill(0);
      page[0] = 0x10; // data structure revision 0010h
      let sum = 0;
      for (let i = 0; i < 511; i++) sum += page[i]!;
      page[511] = (256 - (sum & 0xff)) & 0xff; // checksum: byte sum of the page is zero
      startSingleIn(d, page);
      return false;
    }
    default:
      d.abort();
      return true;
  }
};

const securityFreezeLock: CommandHandler = (d) => {
  // SECURITY FREEZE LOCK / CFA WEAR LEVEL: accepted as QEMU does (Windows issues it), Count := 0.
  d.tf.sectorCount = 0;
  return true;
};

// ---- The table.

const DSC = CMD_FLAG_DSC;
const C = ATA_CMD;

export const HD_COMMANDS = commandTable([
  [C.DATA_SET_MANAGEMENT, "DATA SET MANAGEMENT", DSC, dataSetManagement],
  [C.RECALIBRATE, "RECALIBRATE", DSC, nop],
  [C.READ_SECTORS, "READ SECTORS", 0, readPio(false, false)],
  [C.READ_SECTORS_NORETRY, "READ SECTORS (no retry)", 0, readPio(false, false)],
  [C.READ_SECTORS_EXT, "READ SECTORS EXT", 0, readPio(true, false)],
  [C.READ_DMA_EXT, "READ DMA EXT", 0, dma(true, false)],
  [C.READ_NATIVE_MAX_ADDRESS_EXT, "READ NATIVE MAX ADDRESS EXT", DSC, readNativeMaxAddressExt],
  [C.READ_MULTIPLE_EXT, "READ MULTIPLE EXT", 0, readPio(true, true)],
  [C.WRITE_SECTORS, "WRITE SECTORS", 0, writePio(false, false)],
  [C.WRITE_SECTORS_NORETRY, "WRITE SECTORS (no retry)", 0, writePio(false, false)],
  [C.WRITE_SECTORS_EXT, "WRITE SECTORS EXT", 0, writePio(true, false)],
  [C.WRITE_DMA_EXT, "WRITE DMA EXT", 0, dma(true, true)],
  [C.WRITE_MULTIPLE_EXT, "WRITE MULTIPLE EXT", 0, writePio(true, true)],
  [C.WRITE_VERIFY, "WRITE VERIFY", 0, writePio(false, false)],
  [C.READ_VERIFY_SECTORS, "READ VERIFY SECTORS", DSC, readVerify(false)],
  [C.READ_VERIFY_SECTORS_NORETRY, "READ VERIFY SECTORS (no retry)", DSC, readVerify(false)],
  [C.READ_VERIFY_SECTORS_EXT, "READ VERIFY SECTORS EXT", DSC, readVerify(true)],
  [C.SEEK, "SEEK", DSC, seek],
  [C.EXECUTE_DEVICE_DIAGNOSTIC, "EXECUTE DEVICE DIAGNOSTIC", DSC, executeDeviceDiagnostic],
  [C.INITIALIZE_DEVICE_PARAMETERS, "INITIALIZE DEVICE PARAMETERS", DSC, initializeDeviceParameters],
  [C.STANDBY_IMMEDIATE_ALT, "STANDBY IMMEDIATE (old)", 0, power("standby")],
  [C.IDLE_IMMEDIATE_ALT, "IDLE IMMEDIATE (old)", 0, power("idle")],
  [C.STANDBY_ALT, "STANDBY (old)", 0, power("standby")],
  [C.IDLE_ALT, "IDLE (old)", 0, power("idle")],
  [C.CHECK_POWER_MODE_ALT, "CHECK POWER MODE (old)", DSC, checkPowerMode],
  [C.SLEEP_ALT, "SLEEP (old)", 0, power("standby")],
  [C.SMART, "SMART", DSC, smart],
  [C.READ_MULTIPLE, "READ MULTIPLE", 0, readPio(false, true)],
  [C.WRITE_MULTIPLE, "WRITE MULTIPLE", 0, writePio(false, true)],
  [C.SET_MULTIPLE_MODE, "SET MULTIPLE MODE", DSC, setMultipleMode],
  [C.READ_DMA, "READ DMA", 0, dma(false, false)],
  [C.READ_DMA_NORETRY, "READ DMA (no retry)", 0, dma(false, false)],
  [C.WRITE_DMA, "WRITE DMA", 0, dma(false, true)],
  [C.WRITE_DMA_NORETRY, "WRITE DMA (no retry)", 0, dma(false, true)],
  [C.STANDBY_IMMEDIATE, "STANDBY IMMEDIATE", 0, power("standby")],
  [C.IDLE_IMMEDIATE, "IDLE IMMEDIATE", 0, power("idle")],
  [C.STANDBY, "STANDBY", 0, power("standby")],
  [C.IDLE, "IDLE", 0, power("idle")],
  [C.CHECK_POWER_MODE, "CHECK POWER MODE", DSC, checkPowerMode],
  [C.SLEEP, "SLEEP", 0, power("standby")],
  [C.FLUSH_CACHE, "FLUSH CACHE", 0, flushCache],
  [C.FLUSH_CACHE_EXT, "FLUSH CACHE EXT", 0, flushCache],
  [C.IDENTIFY_DEVICE, "IDENTIFY DEVICE", 0, identifyDevice],
  [C.SET_FEATURES, "SET FEATURES", DSC, setFeatures],
  [C.SECURITY_FREEZE_LOCK, "SECURITY FREEZE LOCK", DSC, securityFreezeLock],
  [C.READ_NATIVE_MAX_ADDRESS, "READ NATIVE MAX ADDRESS", DSC, readNativeMaxAddress],
]);
