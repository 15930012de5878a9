/**
 * Constants of the ATAPI PACKET protocol and of the SCSI command sets a CD-ROM speaks through it: SPC-3 (sense
 * data, INQUIRY) and MMC-5 (the CD/DVD commands, mode pages, profiles, events). Each cites its clause. The ATA
 * side of PACKET (opcodes A0h/A1h/08h, the signature) is in ata.ts.
 *
 * References: **ATA-6** = ATA/ATAPI-6 (INCITS 361-2002); **SPC-3** = SCSI Primary Commands-3 (INCITS 408-2005);
 * **MMC-5** = SCSI Multi-Media Commands-5 (INCITS 430-2007); **SFF-8020i** = ATA Packet Interface for CD-ROMs 2.6.
 */

/** A command packet is 12 bytes (ATA-6 §8.21: IDENTIFY PACKET DEVICE word 0 bits 1:0 = 00b). */
export const ATAPI_PACKET_SIZE = 12;

/** Bytes per logical block of a CD-ROM data track (MMC-5 §4.2.3.5, Mode 1 user data). */
export const CD_SECTOR_SIZE = 2048;
/** A whole raw CD sector, sync to EDC/ECC (MMC-5 §4.2.3.5 Table 9; READ CD "all" user data). */
export const CD_RAW_SECTOR_SIZE = 2352;
/** Sectors of a 2 s pregap: MSF addresses count from 00:02:00 (MMC-5 §4.2.3.2). */
export const CD_MSF_OFFSET = 150;
/** Frames per second of CD audio time (MMC-5 §4.2.3.2). */
export const CD_FRAMES_PER_SECOND = 75;
/** Largest CD capacity QEMU treats as a CD rather than a DVD (hw/ide/internal.h CD_MAX_SECTORS: 80 min). */
export const CD_MAX_BLOCKS = 80 * 60 * 75;

// ------------------------------------------------------------------------------------------------
// Interrupt reason (the Sector Count register during PACKET, ATA-6 §8.21 / §9.10 Table 27).

/** CoD: 1 = the DRQ block is the command packet (or the status phase), 0 = user data. */
export const INT_REASON_COD = 0x01;
/** IO: 1 = transfer to the host (data-in), 0 = to the device. */
export const INT_REASON_IO = 0x02;
/** REL: the device released the bus (overlap; never set without the overlapped feature set). */
export const INT_REASON_REL = 0x04;

/** PACKET Features bits (ATA-6 §8.21.4): DMA, and OVL (overlapped), which QEMU refuses. */
export const PACKET_FEAT_DMA = 0x01;
export const PACKET_FEAT_OVL = 0x02;

/** The Error register after a CHECK CONDITION carries the sense key in bits 7:4 (ATA-6 §8.21.5). */
export const ERR_SENSE_KEY_SHIFT = 4;
/** Media Change Requested / Media Changed bit of the Error register (ATA-6 §8.21.5 Table 26, MCR). */
export const ERR_MC = 0x20;

// ------------------------------------------------------------------------------------------------
// MMC/SPC operation codes (MMC-5 §6 and SPC-3 §6; 12-byte forms as ATAPI sends them).

export const MMC_CMD = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  INQUIRY: 0x12,
  START_STOP_UNIT: 0x1b,
  PREVENT_ALLOW_MEDIUM_REMOVAL: 0x1e,
  READ_CAPACITY: 0x25,
  READ_10: 0x28,
  SEEK_10: 0x2b,
  READ_TOC_PMA_ATIP: 0x43,
  GET_CONFIGURATION: 0x46,
  GET_EVENT_STATUS_NOTIFICATION: 0x4a,
  READ_DISC_INFORMATION: 0x51,
  MODE_SENSE_10: 0x5a,
  READ_12: 0xa8,
  READ_DVD_STRUCTURE: 0xad,
  SET_CD_SPEED: 0xbb,
  MECHANISM_STATUS: 0xbd,
  READ_CD: 0xbe,
} as const;

// ------------------------------------------------------------------------------------------------
// Sense data (SPC-3 §4.5).

/** Fixed-format sense data, current errors, with VALID set (SPC-3 §4.5.3: response code 70h). */
export const SENSE_FIXED_CURRENT = 0x70;
export const SENSE_VALID = 0x80;
/** Fixed-format sense data is 18 bytes; additional sense length 10 (SPC-3 §4.5.3 Table 26). */
export const SENSE_FIXED_LENGTH = 18;
export const SENSE_ADDITIONAL_LENGTH = 10;

/** Sense keys (SPC-3 §4.5.6 Table 27). */
export const SENSE_KEY = {
  NO_SENSE: 0x0,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
} as const;

/** Additional sense codes, ASCQ 00h unless noted (SPC-3 Annex D Table D.1, MMC-5 Annex F). */
export const ASC = {
  NONE: 0x00,
  UNRECOVERED_READ_ERROR: 0x11,
  INVALID_COMMAND_OPERATION_CODE: 0x20,
  LBA_OUT_OF_RANGE: 0x21,
  INVALID_FIELD_IN_CDB: 0x24,
  /** NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED. */
  MEDIUM_MAY_HAVE_CHANGED: 0x28,
  /** CANNOT READ MEDIUM, INCOMPATIBLE FORMAT (ASCQ 02h in SPC-3; QEMU reports ASCQ 00h). */
  INCOMPATIBLE_FORMAT: 0x30,
  SAVING_PARAMETERS_NOT_SUPPORTED: 0x39,
  MEDIUM_NOT_PRESENT: 0x3a,
  /** MEDIUM REMOVAL PREVENTED (ASCQ 02h in SPC-3; QEMU reports ASCQ 00h). */
  MEDIA_REMOVAL_PREVENTED: 0x53,
} as const;

// ------------------------------------------------------------------------------------------------
// INQUIRY (SPC-3 §6.4.2).

/** Peripheral device type 05h: CD/DVD device (SPC-3 §6.4.2 Table 83). */
export const INQUIRY_TYPE_CDDVD = 0x05;
/** RMB: removable medium (byte 1 bit 7). */
export const INQUIRY_RMB = 0x80;
/** Standard INQUIRY data is 36 bytes (additional length 31). */
export const INQUIRY_STANDARD_LENGTH = 36;

// ------------------------------------------------------------------------------------------------
// MODE SENSE (SPC-3 §7.4, MMC-5 §7).

/** Page control field (CDB byte 2 bits 7:6, SPC-3 §6.9.1 Table 98). */
export const MODE_PC_CURRENT = 0;
export const MODE_PC_SAVED = 3;
/** Read-write error recovery page (MMC-5 §7.3). */
export const MODE_PAGE_R_W_ERROR = 0x01;
/** CD audio control page (MMC-2 §5.5.4; obsolete in MMC-5, still answered by QEMU). */
export const MODE_PAGE_AUDIO_CTL = 0x0e;
/** MM capabilities and mechanical status page (MMC-3 §5.5.10; legacy in MMC-5). */
export const MODE_PAGE_CAPABILITIES = 0x2a;
/** Medium type code "120 mm CD-ROM data only, door closed or caddy inserted" (SFF-8020i Table 10). */
export const MODE_MEDIUM_TYPE_CD = 0x70;

// ------------------------------------------------------------------------------------------------
// GET CONFIGURATION (MMC-5 §6.6) and profiles (MMC-5 §5.3.1 Table 89).

export const PROFILE_CD_ROM = 0x0008;
export const PROFILE_DVD_ROM = 0x0010;

// ------------------------------------------------------------------------------------------------
// GET EVENT STATUS NOTIFICATION (MMC-5 §6.7).

/** Polled bit (CDB byte 1 bit 0): asynchronous operation is optional and not offered. */
export const GESN_POLLED = 0x01;
/** Notification class 4, media (MMC-5 §6.7.2.2 Table 134). */
export const GESN_CLASS_MEDIA = 4;
/** NEA: no event available (event header byte 2 bit 7). */
export const GESN_NEA = 0x80;
/** Media event codes (MMC-5 §6.7.2.5 Table 141). */
export const MEDIA_EVENT = { NO_CHANGE: 0, EJECT_REQUEST: 1, NEW_MEDIA: 2 } as const;
/** Media status bits (MMC-5 §6.7.2.5 Table 142). */
export const MEDIA_STATUS_TRAY_OPEN = 0x01;
export const MEDIA_STATUS_PRESENT = 0x02;

// ------------------------------------------------------------------------------------------------
// START STOP UNIT (MMC-5 §6.39) and PREVENT ALLOW MEDIUM REMOVAL (MMC-5 §6.13).

/** CDB byte 4: Start, LoEj (load/eject), power conditions in bits 7:4. */
export const SSU_START = 0x01;
export const SSU_LOEJ = 0x02;
export const SSU_POWER_MASK = 0xf0;
/** CDB byte 4 bit 0: Prevent. */
export const PAMR_PREVENT = 0x01;

// ------------------------------------------------------------------------------------------------
// READ TOC/PMA/ATIP (MMC-5 §6.26) and READ CD (MMC-5 §6.19).

/** Control nibble 4h (data track, copy not permitted) with ADR 1 (MMC-5 §6.26.3.2 Table 335). */
export const TOC_ADR_CONTROL_DATA = 0x14;
/** Lead-out entry: ADR 1, control 6h as QEMU answers it (hw/block/cdrom.c). */
export const TOC_ADR_CONTROL_LEADOUT = 0x16;
/** Track number of the lead-out area (MMC-5 §6.26.3.2). */
export const TOC_LEADOUT_TRACK = 0xaa;
/** READ CD byte 9 bits 7:3: what to return; 10h = user data, F8h = sync, headers, user data, EDC/ECC. */
export const READ_CD_USER_DATA = 0x10;
export const READ_CD_ALL = 0xf8;
