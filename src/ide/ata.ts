/**
 * ATA register layout, status/error bits and opcodes.
 *
 * Spec references: "ATA/ATAPI-6" = INCITS 361-2002, "ACS" = ATA8-ACS (INCITS 452-2008), "BMIDE" = the
 * Programming Interface for Bus Master IDE Controller, rev 1.0 (SFF-8038i), "PIIX3" = Intel 82371SB datasheet.
 */

/** Command block register offsets from the channel base (0x1F0 / 0x170), ATA/ATAPI-6 §7.1 Table 7. */
export const REG_DATA = 0;
export const REG_ERROR = 1; // read: Error; write: Features
export const REG_NSECT = 2; // Sector Count
export const REG_LBAL = 3; // LBA Low / Sector Number
export const REG_LBAM = 4; // LBA Mid / Cylinder Low
export const REG_LBAH = 5; // LBA High / Cylinder High
export const REG_DEVICE = 6; // Device / Head
export const REG_STATUS = 7; // read: Status (clears INTRQ); write: Command

/** Status register bits, ATA/ATAPI-6 §7.15. */
export const ST_ERR = 0x01; // error (CHK for PACKET devices)
export const ST_DRQ = 0x08; // data request
export const ST_DSC = 0x10; // device seek complete (obsolete in ACS; QEMU still reports it)
export const ST_DF = 0x20; // device fault
export const ST_DRDY = 0x40; // device ready
export const ST_BSY = 0x80; // busy

/** Error register bits, ATA/ATAPI-6 §7.11. */
export const ERR_AMNF = 0x01; // also: EXECUTE DEVICE DIAGNOSTIC code 01h = "device 0 passed"
export const ERR_ABRT = 0x04; // command aborted
export const ERR_IDNF = 0x10; // ID not found: address outside the user-accessible range
export const ERR_UNC = 0x40; // uncorrectable data error

/** Device Control register (write-only, 0x3F6), ATA/ATAPI-6 §7.9. */
export const CTL_NIEN = 0x02; // interrupt disable
export const CTL_SRST = 0x04; // software reset
export const CTL_HOB = 0x80; // high-order byte: read back the previous contents of 0x1F1-0x1F5 (48-bit)

/** Device register bits, ATA/ATAPI-6 §7.10. Bits 7 and 5 are obsolete and read as one on PIIX-era drives. */
export const DEV_ALWAYS_ON = 0xa0;
export const DEV_DEV = 0x10; // device select: 0 = device 0 (master), 1 = device 1 (slave)
export const DEV_LBA = 0x40; // LBA addressing (clear = CHS)

/** Signature after reset and EXECUTE DEVICE DIAGNOSTIC for an ATA (non-PACKET) device, ATA/ATAPI-6 §9.12. */
export const SIG_NSECT = 0x01;
export const SIG_LBAL = 0x01;
export const SIG_LBAM = 0x00;
export const SIG_LBAH = 0x00;
/** Diagnostic code: device 0 passed, device 1 passed or not present (ATA/ATAPI-6 §8.11, Table 26). */
export const DIAG_PASSED = 0x01;

/** Opcodes, ACS Table B.2 (names as in the standard). */
export const CMD = {
  NOP: 0x00,
  CFA_REQUEST_EXT_ERROR: 0x03,
  DATA_SET_MANAGEMENT: 0x06,
  DEVICE_RESET: 0x08,
  RECALIBRATE: 0x10,
  READ_SECTORS: 0x20,
  READ_SECTORS_NORETRY: 0x21,
  READ_SECTORS_EXT: 0x24,
  READ_DMA_EXT: 0x25,
  READ_NATIVE_MAX_ADDRESS_EXT: 0x27,
  READ_MULTIPLE_EXT: 0x29,
  WRITE_SECTORS: 0x30,
  WRITE_SECTORS_NORETRY: 0x31,
  WRITE_SECTORS_EXT: 0x34,
  WRITE_DMA_EXT: 0x35,
  WRITE_MULTIPLE_EXT: 0x39,
  WRITE_VERIFY: 0x3c,
  READ_VERIFY_SECTORS: 0x40,
  READ_VERIFY_SECTORS_NORETRY: 0x41,
  READ_VERIFY_SECTORS_EXT: 0x42,
  SEEK: 0x70,
  EXECUTE_DEVICE_DIAGNOSTIC: 0x90,
  INITIALIZE_DEVICE_PARAMETERS: 0x91,
  STANDBY_IMMEDIATE_ALT: 0x94,
  IDLE_IMMEDIATE_ALT: 0x95,
  STANDBY_ALT: 0x96,
  IDLE_ALT: 0x97,
  CHECK_POWER_MODE_ALT: 0x98,
  SLEEP_ALT: 0x99,
  PACKET: 0xa0,
  IDENTIFY_PACKET_DEVICE: 0xa1,
  SMART: 0xb0,
  READ_MULTIPLE: 0xc4,
  WRITE_MULTIPLE: 0xc5,
  SET_MULTIPLE_MODE: 0xc6,
  READ_DMA: 0xc8,
  READ_DMA_NORETRY: 0xc9,
  WRITE_DMA: 0xca,
  WRITE_DMA_NORETRY: 0xcb,
  STANDBY_IMMEDIATE: 0xe0,
  IDLE_IMMEDIATE: 0xe1,
  STANDBY: 0xe2,
  IDLE: 0xe3,
  CHECK_POWER_MODE: 0xe5,
  SLEEP: 0xe6,
  FLUSH_CACHE: 0xe7,
  FLUSH_CACHE_EXT: 0xea,
  IDENTIFY_DEVICE: 0xec,
  SET_FEATURES: 0xef,
  SECURITY_FREEZE_LOCK: 0xf5,
  READ_NATIVE_MAX_ADDRESS: 0xf8,
} as const;

/** SET FEATURES subcommands (Features register), ACS §7.48 Table 40. */
export const SETF = {
  ENABLE_WRITE_CACHE: 0x02,
  SET_TRANSFER_MODE: 0x03,
  DISABLE_WRITE_CACHE: 0x82,
  DISABLE_REVERTING_TO_DEFAULTS: 0x66,
  ENABLE_REVERTING_TO_DEFAULTS: 0xcc,
} as const;

/** SMART subcommands (Features register) and the key in LBA Mid/High, ATA/ATAPI-6 §8.41. */
export const SMART = {
  READ_DATA: 0xd0,
  READ_THRESHOLDS: 0xd1,
  ATTRIBUTE_AUTOSAVE: 0xd2,
  EXECUTE_OFFLINE_IMMEDIATE: 0xd4,
  ENABLE_OPERATIONS: 0xd8,
  DISABLE_OPERATIONS: 0xd9,
  RETURN_STATUS: 0xda,
  KEY_LBAM: 0x4f,
  KEY_LBAH: 0xc2,
  /** RETURN STATUS with a threshold exceeded answers F4h/2Ch instead of 4Fh/C2h. */
  EXCEEDED_LBAM: 0xf4,
  EXCEEDED_LBAH: 0x2c,
} as const;

/** CHECK POWER MODE answers in the Count register, ACS §7.8. */
export const POWER_STANDBY = 0x00;
export const POWER_IDLE = 0x80;
export const POWER_ACTIVE_OR_IDLE = 0xff;

/** Bus Master IDE register offsets within a channel's 8 bytes of BAR4, BMIDE §2 / PIIX3 §2.7. */
export const BM_CMD = 0;
export const BM_STATUS = 2;
export const BM_PRDT = 4;

/** Bus Master command bits. */
export const BM_CMD_START = 0x01;
export const BM_CMD_READ = 0x08; // direction: 1 = bus master writes memory (device-to-memory, a disk READ)

/** Bus Master status bits. */
export const BM_ST_ACTIVE = 0x01; // read-only
export const BM_ST_ERROR = 0x02; // write 1 to clear
export const BM_ST_INTR = 0x04; // write 1 to clear
export const BM_ST_DMA0_CAP = 0x20; // read/write, software-owned
export const BM_ST_DMA1_CAP = 0x40;

/** PRD entry: bit 15 of the flags word ends the table (BMIDE §1.2). */
export const PRD_EOT = 0x8000;
/** QEMU walks at most one 4 KiB page of PRD entries per transfer (BMDMA_PAGE_SIZE), i.e. 512 entries. */
export const PRD_MAX_ENTRIES = 512;

/** Largest DRQ block for READ/WRITE MULTIPLE (IDENTIFY word 47), QEMU's MAX_MULT_SECTORS. */
export const MAX_MULT_SECTORS = 16;

/** LBA28 capacity cap in IDENTIFY words 60-61 (ATA/ATAPI-6 §8.15.29). */
export const LBA28_MAX_SECTORS = 0x0fffffff;
