/**
 * IDENTIFY DEVICE data of the hard disk (ACS-3 §7.12.7, Table 45).
 *
 * The word values follow what QEMU 7.2 reports for an ide-hd (so that guests see the same capabilities), with
 * these differences taken from the standard: word 255 carries the integrity word, words 54-58 and 59 always
 * reflect the current CHS translation and multiple setting, and words 82/85 bit 3 advertise the Power
 * Management feature set whose commands the device implements (docs/conformance.md A2).
 */

import {
  ID,
  ID_FIRMWARE_WORDS,
  ID_MODEL_WORDS,
  ID_SERIAL_WORDS,
  ID49_DMA,
  ID53_WORD88_VALID,
  ID59_MULTIPLE_VALID,
  ID82_WRITE_CACHE,
  ID83_FLUSH_CACHE,
  ID83_FLUSH_CACHE_EXT,
  ID83_LBA48,
  ID84_WWN,
  LBA28_LIMIT,
} from "../../spec/ata.ts";
import type { Geometry } from "../geometry.ts";
import { putString, putWwn, setIntegrityWord } from "../identify.ts";
import { MAX_MULT_SECTORS } from "../settings.ts";

/** The live state IDENTIFY reports, gathered from the drive at each IDENTIFY. */
export interface IdentifyState {
  model: string;
  serial: string;
  firmware: string;
  /** World Wide Name (words 108-111 and bit 8 of words 84/87); 0n: none. */
  wwn: bigint;
  sectorCount: number;
  /** Default geometry (words 1, 3, 6). */
  geometry: Geometry;
  /** Current CHS translation (words 54-58), or null when INITIALIZE DEVICE PARAMETERS set an invalid one. */
  current: Geometry | null;
  multipleSectors: number;
  writeCache: boolean;
  smartEnabled: boolean;
  /** Words 62, 63 and 88 as last patched by SET FEATURES 03h. */
  swdma: number;
  mwdma: number;
  udma: number;
  /**
   * The page QEMU 7.2 builds ("qemu-7.2" profile): no Power Management bit in words 82/85, no integrity word
   * (docs/conformance.md A2).
   */
  qemu?: boolean;
}

/** Build the 256 IDENTIFY words into `w` (reused by the drive, no allocation per IDENTIFY). */
export function buildIdentify(st: IdentifyState, w: Uint16Array): void {
  w.fill(0);
  const g = st.geometry;
  const n = st.sectorCount;
  w[ID.GENERAL_CONFIGURATION] = 0x0040; // fixed device, not removable
  w[ID.CYLINDERS] = g.cylinders;
  w[ID.HEADS] = g.heads;
  w[4] = 512 * g.sectors; // retired: unformatted bytes per track
  w[5] = 512; // retired: unformatted bytes per sector
  w[ID.SECTORS_PER_TRACK] = g.sectors;
  putString(w, ID.SERIAL_NUMBER, ID_SERIAL_WORDS, st.serial);
  w[20] = 3; // retired: buffer type (dual-ported, read cache)
  w[21] = 512; // retired: buffer size in sectors
  w[22] = 4; // obsolete: ECC bytes on READ/WRITE LONG
  putString(w, ID.FIRMWARE_REVISION, ID_FIRMWARE_WORDS, st.firmware);
  putString(w, ID.MODEL_NUMBER, ID_MODEL_WORDS, st.model);
  w[ID.MAX_MULTIPLE] = 0x8000 | MAX_MULT_SECTORS; // READ/WRITE MULTIPLE: up to 16 sectors per DRQ block
  w[ID.DWORD_IO] = 1; // dword I/O supported (QEMU reports it; 32-bit data-port access works)
  w[ID.CAPABILITIES] = (1 << 11) | (1 << 9) | ID49_DMA; // IORDY supported, LBA supported, DMA supported
  w[51] = 0x200; // obsolete PIO timing mode 2
  w[52] = 0x200; // obsolete DMA timing mode 2
  const cur = st.current;
  // Words 54-58 valid (only with a valid translation), 64-70 valid, 88 valid.
  w[ID.FIELD_VALIDITY] = (cur ? 1 : 0) | 2 | ID53_WORD88_VALID;
  if (cur) {
    const cap = Math.min(cur.cylinders * cur.heads * cur.sectors, 0xffffffff);
    w[ID.CURRENT_CYLINDERS] = cur.cylinders;
    w[ID.CURRENT_HEADS] = cur.heads;
    w[ID.CURRENT_SECTORS_PER_TRACK] = cur.sectors;
    w[ID.CURRENT_CAPACITY] = cap & 0xffff;
    w[ID.CURRENT_CAPACITY + 1] = cap >>> 16;
  }
  if (st.multipleSectors) w[ID.MULTIPLE_SETTING] = ID59_MULTIPLE_VALID | st.multipleSectors;
  // Words 60-61 saturate at 0FFFFFFFh: the count of sectors 28-bit commands can address.
  const lba28 = Math.min(n, LBA28_LIMIT - 1);
  w[ID.LBA28_CAPACITY] = lba28 & 0xffff;
  w[ID.LBA28_CAPACITY + 1] = lba28 >>> 16;
  w[ID.SWDMA_MODES] = st.swdma;
  w[ID.MWDMA_MODES] = st.mwdma;
  w[ID.PIO_MODES] = 0x03; // PIO modes 3 and 4
  w[65] = 120; // minimum multiword DMA cycle time (ns)
  w[66] = 120; // recommended multiword DMA cycle time
  w[67] = 120; // minimum PIO cycle time without flow control
  w[68] = 120; // minimum PIO cycle time with IORDY
  w[ID.ADDITIONAL_SUPPORTED] = 1 << 14; // deterministic read after TRIM (as QEMU)
  w[ID.MAJOR_VERSION] = 0xf0; // major versions ATA-4..ATA-7
  w[ID.MINOR_VERSION] = 0x16; // minor version
  const pm = st.qemu ? 0 : 1 << 3; // Power Management feature set
  // NOP, write cache, power management, SMART supported.
  w[ID.COMMAND_SET_SUPPORTED] = (1 << 14) | ID82_WRITE_CACHE | pm | 1;
  // FLUSH CACHE EXT, FLUSH CACHE, 48-bit.
  w[ID.COMMAND_SET_SUPPORTED_2] = (1 << 14) | ID83_FLUSH_CACHE_EXT | ID83_FLUSH_CACHE | ID83_LBA48;
  const wwn = st.wwn !== 0n ? ID84_WWN : 0;
  w[ID.COMMAND_SET_SUPPORTED_EXT] = (1 << 14) | wwn;
  w[ID.COMMAND_SET_ENABLED] =
    (1 << 14) | (st.writeCache ? ID82_WRITE_CACHE : 0) | pm | (st.smartEnabled ? 1 : 0);
  w[ID.COMMAND_SET_ENABLED_2] = ID83_FLUSH_CACHE_EXT | ID83_FLUSH_CACHE | ID83_LBA48;
  w[ID.COMMAND_SET_DEFAULT] = (1 << 14) | wwn;
  w[ID.UDMA_MODES] = st.udma;
  w[ID.HARDWARE_RESET_RESULT] = 0x6001; // hardware reset result, as QEMU reports it for either device
  const lo = n % 0x100000000;
  const hi = Math.floor(n / 0x100000000);
  w[ID.LBA48_CAPACITY] = lo & 0xffff;
  w[ID.LBA48_CAPACITY + 1] = lo >>> 16;
  w[ID.LBA48_CAPACITY + 2] = hi & 0xffff;
  w[ID.LBA48_CAPACITY + 3] = (hi >>> 16) & 0xffff;
  // Word valid; one logical sector per physical sector (bits 3:0 = 0).
  w[ID.PHYSICAL_LOGICAL_SECTOR_SIZE] = (1 << 14) | (1 << 13);
  putWwn(w, st.wwn);
  w[ID.DATA_SET_MANAGEMENT] = 1; // DATA SET MANAGEMENT TRIM supported
  if (!st.qemu) setIntegrityWord(w);
}
