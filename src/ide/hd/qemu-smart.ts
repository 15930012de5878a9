/**
 * SMART as QEMU 7.2's cmd_smart answers it (the "qemu-7.2" profile): the attribute table of a Seagate
 * ST3500418AS as QEMU adjusted it, attribute autosave, a self-test log that EXECUTE OFF-LINE IMMEDIATE fills,
 * and the summary error log. The data pages carry QEMU's structure revision (0001h) and checksum. A drive
 * starts with SMART enabled and autosave on; QEMU's empty device-0 position (hd/absent.ts) starts with both off.
 */

import { SMART_FEATURE, SMART_KEY_LBA_HIGH, SMART_KEY_LBA_MID } from "../../spec/ata.ts";
import type { AtaCore } from "../core.ts";
import { startSingleIn } from "../pio.ts";

/** SMART READ LOG (ATA-6 §8.41, SMART); its log address is in LBA Low. */
const SMART_READ_LOG = 0xd5;
/** Log addresses QEMU serves: the summary SMART error log (01h) and the SMART self-test log (06h). */
const LOG_SUMMARY_ERRORS = 0x01;
const LOG_SELF_TEST = 0x06;
/** The self-test log holds 21 descriptors of 24 bytes (QEMU wraps its count after 21). */
const SELF_TEST_ENTRIES = 21;
const SELF_TEST_ENTRY_BYTES = 24;

/**
 * QEMU 7.2's attribute table (hw/ide/core.c smart_attributes): id, flags (2 bytes), value, worst, raw (6 bytes),
 * threshold.
 */
const ATTRIBUTES: readonly (readonly number[])[] = [
  [0x01, 0x03, 0x00, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06], // raw read error rate
  [0x03, 0x03, 0x00, 0x64, 0x64, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // spin-up time
  [0x04, 0x02, 0x00, 0x64, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14], // start/stop count
  [0x05, 0x03, 0x00, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24], // reallocated sectors
  [0x09, 0x03, 0x00, 0x64, 0x64, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // power-on hours
  [0x0c, 0x03, 0x00, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // power cycle count
  [190, 0x03, 0x00, 0x45, 0x45, 0x1f, 0x00, 0x1f, 0x1f, 0x00, 0x00, 0x32], // airflow temperature
];

/** QEMU's per-position SMART state besides the enable bit (kept in `DriveSettings.smartEnabled`). */
interface QemuSmartState {
  autosave: boolean;
  selfTests: number;
  selfTestLog: Uint8Array;
}

const states = new WeakMap<AtaCore, QemuSmartState>();

function state(d: AtaCore): QemuSmartState {
  let s = states.get(d);
  if (!s) {
    // ide_init_drive sets autosave for an attached drive; an empty position keeps its zeroed state.
    s = { autosave: d.present, selfTests: 0, selfTestLog: new Uint8Array(512) };
    states.set(d, s);
  }
  return s;
}

/** Byte 511 makes the page sum to 0 mod 256 (QEMU computes it the same way, 0 when the sum already is). */
function checksum(page: Uint8Array): void {
  let sum = 0;
  for (let i = 0; i < 511; i++) sum += page[i]!;
  page[511] = (0x100 - (sum & 0xff)) & 0xff;
}

/** A 512-byte data page for PIO data-in: the drive buffer, or a page of its own where there is none. */
function dataPage(d: AtaCore): Uint8Array {
  const page = d.buf.length >= 512 ? d.buf.subarray(0, 512) : new Uint8Array(512);
  page.fill(0);
  return page;
}

/** SMART (B0h) with QEMU 7.2's results; returns true when the command completes without a data phase. */
export function qemuSmart(d: AtaCore): boolean {
  const tf = d.tf;
  const settings = d.settings;
  if (tf.lbaMid !== SMART_KEY_LBA_MID || tf.lbaHigh !== SMART_KEY_LBA_HIGH) {
    d.abort();
    return true;
  }
  const sub = tf.features;
  if (!settings.smartEnabled && sub !== SMART_FEATURE.ENABLE_OPERATIONS) {
    d.abort();
    return true;
  }
  const s = state(d);
  switch (sub) {
    case SMART_FEATURE.DISABLE_OPERATIONS:
      settings.smartEnabled = false;
      return true;
    case SMART_FEATURE.ENABLE_OPERATIONS:
      settings.smartEnabled = true;
      return true;
    case SMART_FEATURE.ATTRIBUTE_AUTOSAVE:
      if (tf.lbaLow === 0x00) s.autosave = false;
      else if (tf.lbaLow === 0xf1) s.autosave = true;
      else d.abort();
      return true;
    case SMART_FEATURE.RETURN_STATUS:
      // No threshold exceeded (QEMU's smart_errors stays 0): the key 4Fh/C2h.
      tf.lbaMid = SMART_KEY_LBA_MID;
      tf.lbaHigh = SMART_KEY_LBA_HIGH;
      return true;
    case SMART_FEATURE.READ_THRESHOLDS: {
      const page = dataPage(d);
      page[0] = 0x01;
      ATTRIBUTES.forEach((a, n) => {
        page[2 + n * 12] = a[0]!;
        page[3 + n * 12] = a[11]!;
      });
      checksum(page);
      startSingleIn(d, page);
      return false;
    }
    case SMART_FEATURE.READ_DATA: {
      const page = dataPage(d);
      page[0] = 0x01;
      ATTRIBUTES.forEach((a, n) => {
        for (let i = 0; i < 11; i++) page[2 + i + n * 12] = a[i]!;
      });
      page[362] = 0x02 | (s.autosave ? 0x80 : 0);
      page[363] = s.selfTests === 0 ? 0 : s.selfTestLog[3 + (s.selfTests - 1) * SELF_TEST_ENTRY_BYTES]!;
      page[364] = 0x20;
      page[365] = 0x01;
      page[367] = (1 << 4) | (1 << 3) | 1; // off-line data collection: execute, self-test
      page[368] = 0x03;
      page[370] = 0x01; // error logging supported
      page[372] = 0x02; // short self-test polling time, minutes
      page[373] = 0x36; // extended self-test polling time
      page[374] = 0x01; // conveyance self-test polling time
      checksum(page);
      startSingleIn(d, page);
      return false;
    }
    case SMART_READ_LOG: {
      const page = dataPage(d);
      page[0] = 0x01;
      if (tf.lbaLow === LOG_SUMMARY_ERRORS) {
        // No error entries; the error count (QEMU's smart_errors) is 0.
      } else if (tf.lbaLow === LOG_SELF_TEST) {
        if (s.selfTests > 0) {
          page[508] = s.selfTests;
          page.set(s.selfTestLog.subarray(2, 506), 2);
        }
      } else {
        d.abort();
        return true;
      }
      checksum(page);
      startSingleIn(d, page);
      return false;
    }
    case SMART_FEATURE.EXECUTE_OFFLINE_IMMEDIATE: {
      const routine = tf.lbaLow;
      if (routine > 2) {
        d.abort(); // only off-line, short and extended self-test
        return true;
      }
      s.selfTests = s.selfTests >= SELF_TEST_ENTRIES ? 1 : s.selfTests + 1;
      const n = 2 + (s.selfTests - 1) * SELF_TEST_ENTRY_BYTES;
      s.selfTestLog[n] = routine;
      s.selfTestLog[n + 1] = 0x00; // completed without error
      s.selfTestLog[n + 2] = 0x34; // life-time hours, as QEMU's fixed 1234h
      s.selfTestLog[n + 3] = 0x12;
      return true;
    }
    default:
      d.abort();
      return true;
  }
}
