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
  ID,
  ID82_WRITE_CACHE,
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
import { MAX_MULT_SECTORS, MWDMA_DEFAULT, type PowerMode, SWDMA_DEFAULT, UDMA_DEFAULT } from "../settings.ts";
import { buildIdentify } from "./identify.ts";
import { qemuSmart } from "./qemu-smart.ts";

// ---- Media access.

/** Address and count of a media access command; on an address that names no sector, IDNF and -1. */
function target(d: AtaCore, lba48: boolean): number {
  const lba = d.commandAddress(lba48);
  if (lba < 0) d.rangeError();
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
    // A read-only medium: ABRT before any data is requested (QEMU 7.2 takes the block, then fails it: C3).
    if ((multiple && d.settings.multipleSectors === 0) || (d.readOnly && !d.qemu)) {
      d.abort();
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
    if (write && d.readOnly && !d.qemu) {
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
    if (d.qemu) {
      // QEMU 7.2's cmd_verify: no range check, no medium access, task file as written (C1, C9).
      d.tf.lba48 = lba48;
      return true;
    }
    const count = d.commandCount(lba48);
    const lba = target(d, lba48);
    if (lba >= 0) verify(d, lba, count);
    return false;
  };
}

const seek: CommandHandler = (d) => {
  if (d.qemu) return true; // QEMU 7.2 does not check the address (C1)
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
  if (d.qemu) {
    // QEMU 7.2: the 8-bit Count register is the payload size (0: nothing to do), whatever the medium (C8).
    if (tf.features !== DSM_TRIM) {
      d.abort();
      return true;
    }
    startDma(d, true, 0, tf.sectorCount, true);
    return false;
  }
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
  if (d.qemu) {
    qemuIdentify(d);
    startSingleIn(d, d.replyBytes);
    return false;
  }
  const drive = d.drive!;
  const s = d.settings;
  buildIdentify(
    {
      model: drive.model,
      serial: drive.serial,
      firmware: drive.firmware,
      wwn: drive.wwn,
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

/**
 * QEMU 7.2's ide_identify: the page is built at the first IDENTIFY (transfer modes at their defaults, whatever
 * SET FEATURES 03h chose before) and served from that cache afterwards; only SET FEATURES 02h/82h/03h patch
 * it (docs/conformance.md A2, C7).
 */
function qemuIdentify(d: AtaCore): void {
  let page = d.identifyCache;
  if (!page) {
    const drive = d.drive!;
    const s = d.settings;
    page = new Uint16Array(256);
    buildIdentify(
      {
        model: drive.model,
        serial: drive.serial,
        firmware: drive.firmware,
        wwn: drive.wwn,
        sectorCount: drive.sectorCount,
        // QEMU's words 1, 3, 4 and 6 show the translation of the moment too (its heads and sectors).
        geometry: s.currentGeometry ?? drive.defaultGeometry!,
        current: s.currentGeometry,
        multipleSectors: s.multipleSectors,
        writeCache: s.writeCache,
        smartEnabled: true,
        swdma: SWDMA_DEFAULT,
        mwdma: MWDMA_DEFAULT,
        udma: UDMA_DEFAULT,
        qemu: true,
      },
      page,
    );
    d.identifyCache = page;
  }
  d.replyWords.set(page);
}

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
  if (d.qemu) {
    d.tf.sectorCount = POWER_ACTIVE_OR_IDLE; // QEMU 7.2 has no power states (C6)
    return true;
  }
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
  if (d.qemu) {
    // QEMU 7.2's cmd_specify: heads and sectors change, cylinders stay the drive's; it raises the interrupt
    // once more than the epilogue. Count 0 makes QEMU divide by zero later; here it stays "no translation" (C5).
    const heads = (d.tf.device & DEV_HEAD_MASK) + 1;
    const sectors = d.tf.sectorCount;
    const cylinders = d.drive!.defaultGeometry!.cylinders;
    // Kept with Count 0 too (IDENTIFY shows it); addressing through it is refused (TaskFile.commandAddress).
    d.settings.currentGeometry = { cylinders, heads, sectors };
    d.raiseIrq();
    return true;
  }
  const heads = (d.tf.device & DEV_HEAD_MASK) + 1;
  const sectors = d.tf.sectorCount;
  const cylinders = sectors ? Math.min(Math.floor(d.sectorCount / (heads * sectors)), 65535) : 0;
  d.settings.currentGeometry = cylinders > 0 ? { cylinders, heads, sectors } : null;
  return true;
};

/**
 * QEMU 7.2's cmd_read_native_max: the last sector, written back in the addressing the Device register's LBA bit
 * selects, CHS through the current translation without limiting it to the cylinders IDENTIFY reports (so a
 * 32-cylinder 16 MiB drive answers cylinder 32, head 8, sector 8), and LBA28 without saturating.
 */
function qemuReadNativeMax(d: AtaCore, ext: boolean): boolean {
  const tf = d.tf;
  const g = d.settings.currentGeometry;
  const lbaMode = (tf.device & DEV_LBA) !== 0;
  if (d.sectorCount === 0 || (!lbaMode && (!g || g.sectors === 0))) {
    d.abort(); // no medium; or no translation, where QEMU divides by zero
    return true;
  }
  const last = d.sectorCount - 1;
  tf.lba48 = ext;
  if (lbaMode && !ext) {
    tf.addrMode = AddrMode.Lba28;
    // ide_set_sector ORs sector >> 24 into the Device register (uint8): beyond 28 bits it spills into DEV.
    d.setAddress(last % LBA28_LIMIT);
    tf.device = (tf.device | Math.floor(last / 0x1000000)) & 0xff;
    return true;
  }
  tf.addrMode = lbaMode ? AddrMode.Lba48 : AddrMode.Chs;
  d.setAddress(last);
  return true;
}

const readNativeMaxAddress: CommandHandler = (d) => {
  if (d.qemu) return qemuReadNativeMax(d, false);
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
  if (d.qemu) return qemuReadNativeMax(d, true);
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
      if (d.identifyCache) d.identifyCache[ID.COMMAND_SET_ENABLED] = QEMU_WORD85_WCE;
      return true;
    case SET_FEATURES.DISABLE_VOLATILE_WRITE_CACHE:
      // Whatever the cache holds reaches the medium before the command completes.
      s.writeCache = false;
      if (d.identifyCache) d.identifyCache[ID.COMMAND_SET_ENABLED] = QEMU_WORD85;
      flush(d);
      return false;
    case SET_FEATURES.SET_TRANSFER_MODE:
      if (!(d.qemu ? qemuSetTransferMode(d) : setTransferMode(d))) d.abort();
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

/** IDENTIFY word 85 as QEMU 7.2's SET FEATURES 82h/02h patch it: NOP and SMART enabled, write cache off/on. */
const QEMU_WORD85 = (1 << 14) | 1;
const QEMU_WORD85_WCE = QEMU_WORD85 | ID82_WRITE_CACHE;

/**
 * QEMU 7.2's SET FEATURES 03h: any mode of transfer types 0/1 (PIO), 2 (single-word DMA), 4 (multiword DMA)
 * and 8 (Ultra DMA) is accepted, its bit set in the cached IDENTIFY words 62/63/88; before the first IDENTIFY
 * there is no cache yet and the choice is lost (C7).
 */
function qemuSetTransferMode(d: AtaCore): boolean {
  const count = d.tf.sectorCount;
  const bit = 1 << ((count & XFER_MODE_MASK) + 8);
  let sw = 0x07;
  let mw = 0x07;
  let udma = 0x3f;
  switch (count >> XFER_TYPE_SHIFT) {
    case XFER_TYPE.PIO_DEFAULT:
    case XFER_TYPE.PIO_FLOW_CONTROL:
      break;
    case XFER_TYPE.SINGLE_WORD_DMA:
      sw |= bit;
      break;
    case XFER_TYPE.MULTIWORD_DMA:
      mw |= bit;
      break;
    case XFER_TYPE.ULTRA_DMA:
      udma |= bit;
      break;
    default:
      return false;
  }
  const page = d.identifyCache;
  if (page) {
    page[ID.SWDMA_MODES] = sw;
    page[ID.MWDMA_MODES] = mw;
    page[ID.UDMA_MODES] = udma;
  }
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
  [C.SMART, "SMART", DSC, (d) => (d.qemu ? qemuSmart(d) : smart(d))],
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
