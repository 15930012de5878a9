/**
 * ATA as the standards define it: register offsets, register bits, opcodes, subcommands, IDENTIFY word numbers
 * and signatures. The bottom layer of the disk code: it imports nothing, and the device model (src/ide), the
 * guest driver (src/guest), the v86 host and the tests all take their numbers from here, under these names.
 * Nothing here is a choice of this project (buffer sizes, defaults, QEMU's limits live with the code that
 * makes the choice).
 *
 * One edition per topic, with its clause on each constant:
 *
 * - ACS-3 = ATA/ATAPI Command Set - 3, T13/2161-D Revision 5 (INCITS 522-2014): commands and their opcodes,
 *   the STATUS and ERROR fields, SET FEATURES and SMART subcommands, IDENTIFY DEVICE data, diagnostic codes.
 *   Commands that ACS-3 no longer defines (the CHS-era and retry opcodes QEMU still accepts) say so, and are
 *   described where they last were: ATA/ATAPI-6.
 * - ATA-6 = AT Attachment with Packet Interface - 6, T13/1410D (INCITS 361-2002): the parallel register block
 *   (command and control block registers, the Device and Device Control registers, HOB), reset and signature.
 *   It is the edition docs/conformance.md cites for the register file, and the last one to define the register
 *   block and the command set in one document.
 * - BMIDE = Programming Interface for Bus Master IDE Controller, rev 1.0 (SFF-8038i): the Bus Master block
 *   and the Physical Region Descriptor table.
 */

// ------------------------------------------------------------------------------------------------
// Parallel register block (ATA-6 §7).

/** Command block registers: offsets from the channel's command block base (0x1F0 / 0x170), ATA-6 §7.1. */
export const REG_DATA = 0;
/** Read: Error register (ATA-6 §7.11). */
export const REG_ERROR = 1;
/** Write: Features register. */
export const REG_FEATURES = 1;
export const REG_SECTOR_COUNT = 2;
/** LBA Low; Sector Number in CHS addressing. */
export const REG_LBA_LOW = 3;
/** LBA Mid; Cylinder Low in CHS addressing. */
export const REG_LBA_MID = 4;
/** LBA High; Cylinder High in CHS addressing. */
export const REG_LBA_HIGH = 5;
/** Device register (Device/Head), ATA-6 §7.10. */
export const REG_DEVICE = 6;
/** Read: Status register, which also clears a pending interrupt (ATA-6 §7.15). */
export const REG_STATUS = 7;
/** Write: Command register. */
export const REG_COMMAND = 7;
/** Registers in the command block. */
export const COMMAND_BLOCK_SIZE = 8;

/**
 * Control block register at offset 0 of the control block (0x3F6 / 0x376): Alternate Status on read (Status
 * without clearing the interrupt), Device Control on write (ATA-6 §7.1).
 */
export const REG_ALT_STATUS = 0;
export const REG_DEVICE_CONTROL = 0;

/** Device Control register bits (write-only), ATA-6 §7.9. */
export const CTL_NIEN = 0x02; // nIEN: the device shall not assert INTRQ
export const CTL_SRST = 0x04; // software reset of both devices while set
export const CTL_HOB = 0x80; // high order byte: reads return the previous contents of 0x1F1-0x1F5 (48-bit)

/** Device register bits, ATA-6 §7.10. */
export const DEV_OBS = 0xa0; // bits 7 and 5: obsolete, written and read back as one by convention
export const DEV_LBA = 0x40; // LBA addressing (clear: CHS)
export const DEV_DEV = 0x10; // device select: 0 = device 0 (master), 1 = device 1 (slave)
/** Bits 3:0: LBA bits 27:24 (LBA28), or the head number (CHS). */
export const DEV_HEAD_MASK = 0x0f;

// ------------------------------------------------------------------------------------------------
// STATUS and ERROR fields (ACS-3 §6.2, §6.3).

/** STATUS field bits, ACS-3 §6.2. */
export const ST_ERR = 0x01; // ERROR bit (CHECK CONDITION for PACKET devices)
export const ST_DRQ = 0x08; // DATA REQUEST bit
export const ST_DSC = 0x10; // obsolete seek-complete bit (ATA-6 DSC/SERV); QEMU still reports it
export const ST_DF = 0x20; // DEVICE FAULT bit
export const ST_DRDY = 0x40; // DEVICE READY bit
export const ST_BSY = 0x80; // BUSY bit

/** ERROR field bits, ACS-3 §6.3. */
export const ERR_ABRT = 0x04; // ABORT bit: command aborted
export const ERR_IDNF = 0x10; // ID NOT FOUND bit: address outside the user-accessible range
export const ERR_UNC = 0x40; // UNCORRECTABLE ERROR bit

// ------------------------------------------------------------------------------------------------
// Reset, signature and diagnostics.

/** Count and LBA after a reset or EXECUTE DEVICE DIAGNOSTIC, which tell the device's kind (ATA-6 §9.12). */
export interface DeviceSignature {
  readonly sectorCount: number;
  readonly lbaLow: number;
  readonly lbaMid: number;
  readonly lbaHigh: number;
}
/** A device that does not implement the PACKET feature set, ATA-6 §9.12. */
export const ATA_SIGNATURE: DeviceSignature = {
  sectorCount: 0x01,
  lbaLow: 0x01,
  lbaMid: 0x00,
  lbaHigh: 0x00,
};
/** A device that implements the PACKET feature set (ATAPI), ATA-6 §9.12. */
export const PACKET_SIGNATURE: DeviceSignature = {
  sectorCount: 0x01,
  lbaLow: 0x01,
  lbaMid: 0x14,
  lbaHigh: 0xeb,
};

/** Diagnostic code in the Error register: device 0 passed, device 1 passed or not present (ACS-3 §7.9). */
export const DIAG_PASSED = 0x01;

// ------------------------------------------------------------------------------------------------
// Commands (ACS-3 §7; opcodes as in ACS-3 Annex B). Names are the standard's, with spaces as underscores.

/**
 * Command opcodes. Each is ACS-3 §7.n unless marked otherwise; "ATA-6 only" marks opcodes ACS-3 lists as
 * obsolete, which the device model accepts because QEMU 7.2 does (semantics from ATA-6 §8).
 */
export const ATA_CMD = {
  /** ACS-3 §7.17: always aborts unless a subcommand is supported. */
  NOP: 0x00,
  /** CFA feature set, ATA-6 only. */
  CFA_REQUEST_EXT_ERROR: 0x03,
  /** ACS-3 §7.5. */
  DATA_SET_MANAGEMENT: 0x06,
  /** ACS-3 §7.6: PACKET devices only. */
  DEVICE_RESET: 0x08,
  /** ATA-6 only (obsolete). */
  RECALIBRATE: 0x10,
  /** ACS-3 §7.28. */
  READ_SECTORS: 0x20,
  /** READ SECTORS without retry, ATA-6 only. */
  READ_SECTORS_NORETRY: 0x21,
  /** ACS-3 §7.29. */
  READ_SECTORS_EXT: 0x24,
  /** ACS-3 §7.22. */
  READ_DMA_EXT: 0x25,
  /** Host Protected Area feature set, ATA-6 only (ACS-3 replaced it with Accessible Max Address). */
  READ_NATIVE_MAX_ADDRESS_EXT: 0x27,
  /** ACS-3 §7.27. */
  READ_MULTIPLE_EXT: 0x29,
  /** ACS-3 §7.67. */
  WRITE_SECTORS: 0x30,
  /** WRITE SECTORS without retry, ATA-6 only. */
  WRITE_SECTORS_NORETRY: 0x31,
  /** ACS-3 §7.68. */
  WRITE_SECTORS_EXT: 0x34,
  /** ACS-3 §7.59. */
  WRITE_DMA_EXT: 0x35,
  /** ACS-3 §7.65. */
  WRITE_MULTIPLE_EXT: 0x39,
  /** ATA-6 only (obsolete). */
  WRITE_VERIFY: 0x3c,
  /** ACS-3 §7.32. */
  READ_VERIFY_SECTORS: 0x40,
  /** READ VERIFY SECTORS without retry, ATA-6 only. */
  READ_VERIFY_SECTORS_NORETRY: 0x41,
  /** ACS-3 §7.33. */
  READ_VERIFY_SECTORS_EXT: 0x42,
  /** ATA-6 only (obsolete). */
  SEEK: 0x70,
  /** ACS-3 §7.9. */
  EXECUTE_DEVICE_DIAGNOSTIC: 0x90,
  /** ATA-6 only (obsolete): the CHS translation. */
  INITIALIZE_DEVICE_PARAMETERS: 0x91,
  /** Old opcodes of the power commands, ATA-6 only (E0h-E6h are the ones ACS-3 keeps). */
  STANDBY_IMMEDIATE_ALT: 0x94,
  IDLE_IMMEDIATE_ALT: 0x95,
  STANDBY_ALT: 0x96,
  IDLE_ALT: 0x97,
  CHECK_POWER_MODE_ALT: 0x98,
  SLEEP_ALT: 0x99,
  /** ACS-3 §7.18. */
  PACKET: 0xa0,
  /** ACS-3 §7.13. */
  IDENTIFY_PACKET_DEVICE: 0xa1,
  /** ACS-3 §7.48; the subcommand is in Features (see SMART_FEATURE). */
  SMART: 0xb0,
  /** ACS-3 §7.26. */
  READ_MULTIPLE: 0xc4,
  /** ACS-3 §7.64. */
  WRITE_MULTIPLE: 0xc5,
  /** ACS-3 §7.46. */
  SET_MULTIPLE_MODE: 0xc6,
  /** ACS-3 §7.21. */
  READ_DMA: 0xc8,
  /** READ DMA without retry, ATA-6 only. */
  READ_DMA_NORETRY: 0xc9,
  /** ACS-3 §7.58. */
  WRITE_DMA: 0xca,
  /** WRITE DMA without retry, ATA-6 only. */
  WRITE_DMA_NORETRY: 0xcb,
  /** ACS-3 §7.50. */
  STANDBY_IMMEDIATE: 0xe0,
  /** ACS-3 §7.15. */
  IDLE_IMMEDIATE: 0xe1,
  /** ACS-3 §7.49. */
  STANDBY: 0xe2,
  /** ACS-3 §7.14. */
  IDLE: 0xe3,
  /** ACS-3 §7.3. */
  CHECK_POWER_MODE: 0xe5,
  /** ACS-3 §7.47. */
  SLEEP: 0xe6,
  /** ACS-3 §7.10. */
  FLUSH_CACHE: 0xe7,
  /** ACS-3 §7.11. */
  FLUSH_CACHE_EXT: 0xea,
  /** ACS-3 §7.12. */
  IDENTIFY_DEVICE: 0xec,
  /** ACS-3 §7.45; the subcommand is in Features (see SET_FEATURES). */
  SET_FEATURES: 0xef,
  /** ACS-3 §7.40. */
  SECURITY_FREEZE_LOCK: 0xf5,
  /** Host Protected Area feature set, ATA-6 only. */
  READ_NATIVE_MAX_ADDRESS: 0xf8,
} as const;

export type AtaOpcode = (typeof ATA_CMD)[keyof typeof ATA_CMD];

/** Largest Count of a 28-bit command (Count 0 means 256) and of a 48-bit one (0 means 65536), ACS-3 §7.28/§7.29. */
export const MAX_COUNT_28 = 256;
export const MAX_COUNT_48 = 65536;
/** First LBA a 28-bit command cannot address. */
export const LBA28_LIMIT = 0x1000_0000;

/** SET FEATURES subcommands (Features field), ACS-3 §7.45. */
export const SET_FEATURES = {
  ENABLE_VOLATILE_WRITE_CACHE: 0x02,
  SET_TRANSFER_MODE: 0x03,
  ENABLE_APM: 0x05,
  ENABLE_AAM: 0x42, // Automatic Acoustic Management: obsolete in ACS-3, still sent by drivers
  DISABLE_READ_LOOK_AHEAD: 0x55,
  DISABLE_REVERTING_TO_DEFAULTS: 0x66,
  DISABLE_VOLATILE_WRITE_CACHE: 0x82,
  DISABLE_APM: 0x85,
  ENABLE_READ_LOOK_AHEAD: 0xaa,
  DISABLE_AAM: 0xc2,
  ENABLE_REVERTING_TO_DEFAULTS: 0xcc,
} as const;

/**
 * SET TRANSFER MODE (SET FEATURES 03h): Count bits 7:3 are the transfer type, bits 2:0 the mode
 * (ACS-3 §7.45, transfer mode values).
 */
export const XFER_TYPE_SHIFT = 3;
export const XFER_MODE_MASK = 0x07;
export const XFER_TYPE = {
  PIO_DEFAULT: 0x00,
  PIO_FLOW_CONTROL: 0x01,
  /** Single-word DMA: obsolete in ACS-3 (ATA-6 only). */
  SINGLE_WORD_DMA: 0x02,
  MULTIWORD_DMA: 0x04,
  ULTRA_DMA: 0x08,
} as const;

/** SMART subcommands (Features field) and the key in LBA Mid/High, ACS-3 §7.48. */
export const SMART_FEATURE = {
  READ_DATA: 0xd0,
  /** READ ATTRIBUTE THRESHOLDS: obsolete in ACS-3 (ATA-6 §8.41.4). */
  READ_THRESHOLDS: 0xd1,
  ATTRIBUTE_AUTOSAVE: 0xd2,
  EXECUTE_OFFLINE_IMMEDIATE: 0xd4,
  ENABLE_OPERATIONS: 0xd8,
  DISABLE_OPERATIONS: 0xd9,
  RETURN_STATUS: 0xda,
} as const;
/** Every SMART command carries 4Fh in LBA Mid and C2h in LBA High (ACS-3 §7.48). */
export const SMART_KEY_LBA_MID = 0x4f;
export const SMART_KEY_LBA_HIGH = 0xc2;
/** SMART RETURN STATUS with a threshold exceeded answers F4h/2Ch instead (ACS-3 §7.48.8). */
export const SMART_EXCEEDED_LBA_MID = 0xf4;
export const SMART_EXCEEDED_LBA_HIGH = 0x2c;

/** DATA SET MANAGEMENT: the TRIM bit in Features, and an LBA Range Entry of 8 bytes, ACS-3 §7.5. */
export const DSM_TRIM = 0x01;
export const DSM_RANGE_ENTRY_BYTES = 8;

/** CHECK POWER MODE's answer in Count, ACS-3 §7.3. */
export const POWER_STANDBY = 0x00;
export const POWER_IDLE = 0x80;
export const POWER_ACTIVE_OR_IDLE = 0xff;

// ------------------------------------------------------------------------------------------------
// IDENTIFY DEVICE data (ACS-3 §7.12.7, Table 45): the word numbers this project reads or writes.

export const IDENTIFY_WORDS = 256;
export const ID = {
  GENERAL_CONFIGURATION: 0,
  /** Default CHS geometry: cylinders, heads, sectors per track (obsolete in Table 45; ATA-6 §8.15 defines them). */
  CYLINDERS: 1,
  HEADS: 3,
  SECTORS_PER_TRACK: 6,
  /** 10 words, ATA string. */
  SERIAL_NUMBER: 10,
  /** 4 words, ATA string. */
  FIRMWARE_REVISION: 23,
  /** 20 words, ATA string. */
  MODEL_NUMBER: 27,
  /** Bits 7:0: largest DRQ block of READ/WRITE MULTIPLE. */
  MAX_MULTIPLE: 47,
  /** Bit 0: dword I/O on the data port as QEMU reports it (reserved for trusted computing in Table 45). */
  DWORD_IO: 48,
  CAPABILITIES: 49,
  /** Validity of words 54-58, 64-70 and 88. */
  FIELD_VALIDITY: 53,
  /** Current CHS translation: cylinders, heads, sectors per track, capacity (two words); obsolete as 1-6. */
  CURRENT_CYLINDERS: 54,
  CURRENT_HEADS: 55,
  CURRENT_SECTORS_PER_TRACK: 56,
  CURRENT_CAPACITY: 57,
  /** Bit 8: bits 7:0 hold the current multiple setting. */
  MULTIPLE_SETTING: 59,
  /** Two words: sectors addressable by 28-bit commands. */
  LBA28_CAPACITY: 60,
  SWDMA_MODES: 62,
  MWDMA_MODES: 63,
  PIO_MODES: 64,
  ADDITIONAL_SUPPORTED: 69,
  MAJOR_VERSION: 80,
  MINOR_VERSION: 81,
  /** Words 82-84: features supported; 85-87: enabled. */
  COMMAND_SET_SUPPORTED: 82,
  COMMAND_SET_SUPPORTED_2: 83,
  COMMAND_SET_SUPPORTED_EXT: 84,
  COMMAND_SET_ENABLED: 85,
  COMMAND_SET_ENABLED_2: 86,
  COMMAND_SET_DEFAULT: 87,
  UDMA_MODES: 88,
  HARDWARE_RESET_RESULT: 93,
  /** Four words: sectors addressable by 48-bit commands. */
  LBA48_CAPACITY: 100,
  PHYSICAL_LOGICAL_SECTOR_SIZE: 106,
  /** Four words, most significant first: the World Wide Name (ACS-3 §7.12.7.58). */
  WORLD_WIDE_NAME: 108,
  DATA_SET_MANAGEMENT: 169,
  INTEGRITY: 255,
} as const;
export const ID_SERIAL_WORDS = 10;
export const ID_FIRMWARE_WORDS = 4;
export const ID_MODEL_WORDS = 20;
/** Word 84 bit 8 and word 87 bit 8: words 108-111 hold the World Wide Name (ACS-3 §7.12.7.43, §7.12.7.46). */
export const ID84_WWN = 1 << 8;
/** Word 83 bit 10 and word 86 bit 10: the 48-bit Address feature set. */
export const ID83_LBA48 = 1 << 10;
/** Word 82 bit 5 and word 85 bit 5: the volatile write cache. */
export const ID82_WRITE_CACHE = 1 << 5;
/** Word 83 bit 12: FLUSH CACHE; bit 13: FLUSH CACHE EXT. */
export const ID83_FLUSH_CACHE = 1 << 12;
export const ID83_FLUSH_CACHE_EXT = 1 << 13;
/** Word 49 bit 8: DMA supported. */
export const ID49_DMA = 1 << 8;
/** Word 53 bit 2: word 88 valid. */
export const ID53_WORD88_VALID = 1 << 2;
/** Word 59 bit 8: the multiple setting in bits 7:0 is valid. */
export const ID59_MULTIPLE_VALID = 0x100;
/** Word 255 bits 7:0: the integrity word's signature; bits 15:8 make the byte sum of the data zero. */
export const ID_INTEGRITY_SIGNATURE = 0xa5;

// ------------------------------------------------------------------------------------------------
// Bus Master IDE (BMIDE).

/** Register offsets within a channel's 8 bytes of the Bus Master block (primary +0, secondary +8), BMIDE §2. */
export const BM_REG_COMMAND = 0;
export const BM_REG_STATUS = 2;
/** Descriptor Table Pointer: 32 bits, dword aligned. */
export const BM_REG_PRDT = 4;
/** Bytes of Bus Master registers per channel. */
export const BM_CHANNEL_SIZE = 8;

/** Bus Master IDE Command register bits, BMIDE §2.1. */
export const BM_CMD_START = 0x01; // Start/Stop Bus Master
export const BM_CMD_READ = 0x08; // Read or Write Control: 1 = the bus master writes memory (a device-to-host READ DMA)

/** Bus Master IDE Status register bits, BMIDE §2.2. */
export const BM_ST_ACTIVE = 0x01; // Bus Master IDE Active (read-only)
export const BM_ST_ERROR = 0x02; // error transferring data to or from memory (write 1 to clear)
export const BM_ST_INTR = 0x04; // the IDE device asserted its interrupt line (write 1 to clear)
export const BM_ST_DMA0_CAP = 0x20; // drive 0 DMA capable (software-owned)
export const BM_ST_DMA1_CAP = 0x40; // drive 1 DMA capable (software-owned)

/**
 * Physical Region Descriptor, BMIDE §1.2: a 32-bit memory region base (bit 0 reserved), then a 16-bit byte count
 * (bit 0 reserved, 0 = 64 KiB) and a word whose bit 15 marks the last entry of the table.
 */
export const PRD_ENTRY_BYTES = 8;
export const PRD_EOT = 0x8000;
export const PRD_MAX_BYTES = 0x10000;
