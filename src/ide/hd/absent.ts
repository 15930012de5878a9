/**
 * QEMU 7.2's empty device-0 position (the "qemu-7.2" profile, docs/conformance.md A4). With only a slave
 * attached (`-device ide-hd,bus=ide.0,unit=1`), QEMU's ide_exec_cmd ignores commands only to an absent slave: a
 * command to the empty master runs as to a hard disk (drive kind IDE_HD, the zeroed default) that has no block
 * backend. Most handlers then abort (no medium, no sectors), but those that never touch the medium succeed:
 * RECALIBRATE, SEEK, READ VERIFY, the power-management no-ops, CHECK POWER MODE, SET MULTIPLE MODE, the
 * F5h no-op, FLUSH CACHE (which completes at once without a backend), EXECUTE DEVICE DIAGNOSTIC (with the
 * "no device" signature) and SMART (disabled until SMART ENABLE OPERATIONS, as the position was never
 * initialised as a drive). Opcodes not in the table abort, as QEMU's ide_cmd_permitted refuses them for IDE_HD.
 */

import { ATA_CMD, DIAG_PASSED, ST_DRDY, ST_DSC } from "../../spec/ata.ts";
import { type AtaCore, CMD_FLAG_DSC, type CommandHandler } from "../core.ts";
import { commandTable } from "../kind.ts";
import { MAX_MULT_SECTORS } from "../settings.ts";
import { qemuSmart } from "./qemu-smart.ts";

/** What an empty position's diagnostic leaves in Count/LBA: QEMU's ide_set_signature without a backend. */
const NO_DEVICE_SIGNATURE = { sectorCount: 0x01, lbaLow: 0x01, lbaMid: 0xff, lbaHigh: 0xff };

const abort: CommandHandler = (d) => {
  d.abort();
  return true;
};

const nop: CommandHandler = () => true;

/** cmd_verify: only the 48-bit flag of the task file changes. */
function verify(lba48: boolean): CommandHandler {
  return (d) => {
    d.tf.lba48 = lba48;
    return true;
  };
}

const checkPowerMode: CommandHandler = (d) => {
  d.tf.sectorCount = 0xff; // active or idle: QEMU has no power states
  return true;
};

const setMultipleMode: CommandHandler = (d) => {
  const n = d.tf.sectorCount;
  if (n > MAX_MULT_SECTORS || (n & (n - 1)) !== 0) d.abort();
  else d.settings.multipleSectors = n;
  return true;
};

/** F5h (SECURITY FREEZE LOCK, CFA WEAR LEVEL): Count := 0. */
const freezeLock: CommandHandler = (d) => {
  d.tf.sectorCount = 0;
  return true;
};

/** ide_flush_cache without a backend: ide_flush_cb at once, 50h and the interrupt. */
const flushCache: CommandHandler = (d) => {
  d.status = ST_DRDY | ST_DSC;
  d.raiseIrq();
  return false;
};

/** cmd_exec_dev_diagnostic on a position without a backend: its own registers only, then the interrupt. */
const diagnostic: CommandHandler = (d) => {
  d.tf.setSignature(NO_DEVICE_SIGNATURE);
  d.error = DIAG_PASSED;
  d.status = ST_DRDY | ST_DSC;
  d.raiseIrq();
  return false;
};

const DSC = CMD_FLAG_DSC;
const C = ATA_CMD;

/** QEMU 7.2's ide_cmd_table rows permitted for IDE_HD, each with its path when `s->blk` is NULL. */
export const QEMU_ABSENT_DEVICE0_COMMANDS = commandTable([
  [C.DATA_SET_MANAGEMENT, "DATA SET MANAGEMENT", 0, abort],
  [C.RECALIBRATE, "RECALIBRATE", DSC, nop],
  [C.READ_SECTORS, "READ SECTORS", 0, abort],
  [C.READ_SECTORS_NORETRY, "READ SECTORS (no retry)", 0, abort],
  [C.READ_SECTORS_EXT, "READ SECTORS EXT", 0, abort],
  [C.READ_DMA_EXT, "READ DMA EXT", 0, abort],
  [C.READ_NATIVE_MAX_ADDRESS_EXT, "READ NATIVE MAX ADDRESS EXT", DSC, abort], // no sectors
  [C.READ_MULTIPLE_EXT, "READ MULTIPLE EXT", 0, abort],
  [C.WRITE_SECTORS, "WRITE SECTORS", 0, abort],
  [C.WRITE_SECTORS_NORETRY, "WRITE SECTORS (no retry)", 0, abort],
  [C.WRITE_SECTORS_EXT, "WRITE SECTORS EXT", 0, abort],
  [C.WRITE_DMA_EXT, "WRITE DMA EXT", 0, abort],
  [C.WRITE_MULTIPLE_EXT, "WRITE MULTIPLE EXT", 0, abort],
  [C.WRITE_VERIFY, "WRITE VERIFY", 0, abort],
  [C.READ_VERIFY_SECTORS, "READ VERIFY SECTORS", DSC, verify(false)],
  [C.READ_VERIFY_SECTORS_NORETRY, "READ VERIFY SECTORS (no retry)", DSC, verify(false)],
  [C.READ_VERIFY_SECTORS_EXT, "READ VERIFY SECTORS EXT", DSC, verify(true)],
  [C.SEEK, "SEEK", DSC, nop],
  [C.EXECUTE_DEVICE_DIAGNOSTIC, "EXECUTE DEVICE DIAGNOSTIC", 0, diagnostic],
  [C.INITIALIZE_DEVICE_PARAMETERS, "INITIALIZE DEVICE PARAMETERS", DSC, abort],
  [C.STANDBY_IMMEDIATE_ALT, "STANDBY IMMEDIATE (old)", 0, nop],
  [C.IDLE_IMMEDIATE_ALT, "IDLE IMMEDIATE (old)", 0, nop],
  [C.STANDBY_ALT, "STANDBY (old)", 0, nop],
  [C.IDLE_ALT, "IDLE (old)", 0, nop],
  [C.CHECK_POWER_MODE_ALT, "CHECK POWER MODE (old)", DSC, checkPowerMode],
  [C.SLEEP_ALT, "SLEEP (old)", 0, nop],
  [C.SMART, "SMART", DSC, qemuSmart],
  [C.READ_MULTIPLE, "READ MULTIPLE", 0, abort],
  [C.WRITE_MULTIPLE, "WRITE MULTIPLE", 0, abort],
  [C.SET_MULTIPLE_MODE, "SET MULTIPLE MODE", DSC, setMultipleMode],
  [C.READ_DMA, "READ DMA", 0, abort],
  [C.READ_DMA_NORETRY, "READ DMA (no retry)", 0, abort],
  [C.WRITE_DMA, "WRITE DMA", 0, abort],
  [C.WRITE_DMA_NORETRY, "WRITE DMA (no retry)", 0, abort],
  [C.STANDBY_IMMEDIATE, "STANDBY IMMEDIATE", 0, nop],
  [C.IDLE_IMMEDIATE, "IDLE IMMEDIATE", 0, nop],
  [C.STANDBY, "STANDBY", 0, nop],
  [C.IDLE, "IDLE", 0, nop],
  [C.CHECK_POWER_MODE, "CHECK POWER MODE", DSC, checkPowerMode],
  [C.SLEEP, "SLEEP", 0, nop],
  [C.FLUSH_CACHE, "FLUSH CACHE", 0, flushCache],
  [C.FLUSH_CACHE_EXT, "FLUSH CACHE EXT", 0, flushCache],
  [C.IDENTIFY_DEVICE, "IDENTIFY DEVICE", 0, abort],
  [C.SET_FEATURES, "SET FEATURES", DSC, abort],
  [C.SECURITY_FREEZE_LOCK, "SECURITY FREEZE LOCK", DSC, freezeLock],
  [C.READ_NATIVE_MAX_ADDRESS, "READ NATIVE MAX ADDRESS", DSC, abort],
]);

/** The position's own state a drive would have set up: SMART starts disabled (AtaCore calls this). */
export function attachAbsentDevice0(d: AtaCore): void {
  d.settings.smartEnabled = false;
}
