/**
 * The MMC/SPC commands of the CD-ROM drive, one handler per opcode, with the flags that decide whether a pending
 * unit attention or an absent medium stops them first (packet.ts). The set, and every reply byte, is QEMU 7.2's
 * hw/ide/atapi.c; where that departs from MMC-5 or SPC-3 the departure is kept and listed in
 * docs/conformance.md (section F). Any other opcode is CHECK CONDITION, ILLEGAL REQUEST / INVALID COMMAND
 * OPERATION CODE.
 */

import {
  ASC,
  CD_FRAMES_PER_SECOND,
  CD_MAX_BLOCKS,
  CD_MSF_OFFSET,
  CD_RAW_SECTOR_SIZE,
  CD_SECTOR_SIZE,
  GESN_CLASS_MEDIA,
  GESN_NEA,
  GESN_POLLED,
  INQUIRY_RMB,
  INQUIRY_STANDARD_LENGTH,
  INQUIRY_TYPE_CDDVD,
  MEDIA_EVENT,
  MEDIA_STATUS_PRESENT,
  MEDIA_STATUS_TRAY_OPEN,
  MMC_CMD,
  MODE_MEDIUM_TYPE_CD,
  MODE_PAGE_AUDIO_CTL,
  MODE_PAGE_CAPABILITIES,
  MODE_PAGE_R_W_ERROR,
  MODE_PC_CURRENT,
  MODE_PC_SAVED,
  PAMR_PREVENT,
  PROFILE_CD_ROM,
  PROFILE_DVD_ROM,
  READ_CD_ALL,
  READ_CD_USER_DATA,
  SENSE_ADDITIONAL_LENGTH,
  SENSE_FIXED_CURRENT,
  SENSE_FIXED_LENGTH,
  SENSE_KEY,
  SENSE_VALID,
  SSU_LOEJ,
  SSU_POWER_MASK,
  SSU_START,
  TOC_ADR_CONTROL_DATA,
  TOC_ADR_CONTROL_LEADOUT,
  TOC_LEADOUT_TRACK,
} from "../../spec/atapi.ts";
import type { AtaCore } from "../core.ts";
import {
  ALLOW_UA,
  CHECK_READY,
  CONDDATA,
  capacityBlocks,
  checkCondition,
  commandOk,
  mediaPresent,
  mediumInserted,
  NONDATA,
  type PacketCommand,
  readBlocks,
  reply,
  setPacketTable,
  validateByteCount,
} from "./packet.ts";
import { type CdState, cdState } from "./state.ts";

const be16 = (p: Uint8Array, o: number): number => (p[o]! << 8) | p[o + 1]!;
const be32 = (p: Uint8Array, o: number): number =>
  ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}
/** An SPC ASCII field: left-aligned, space padded (SPC-3 §4.4.1). */
function putAscii(b: Uint8Array, o: number, len: number, s: string): void {
  for (let i = 0; i < len; i++) b[o + i] = i < s.length ? s.charCodeAt(i) & 0xff : 0x20;
}
/** An MSF address (MMC-5 §4.2.3.2) with the 2 s pregap: 3 bytes minute, second, frame. */
function putMsf(b: Uint8Array, o: number, lba: number): void {
  const f = lba + CD_MSF_OFFSET;
  b[o] = Math.floor(f / CD_FRAMES_PER_SECOND / 60) & 0xff;
  b[o + 1] = Math.floor(f / CD_FRAMES_PER_SECOND) % 60;
  b[o + 2] = f % CD_FRAMES_PER_SECOND;
}

/** A fresh reply page of `n` zero bytes. */
function page(s: CdState, n: number): Uint8Array {
  const b = s.reply;
  b.fill(0, 0, n);
  return b;
}

const invalidField = (d: AtaCore): void =>
  checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.INVALID_FIELD_IN_CDB);

// ---- SPC.

const testUnitReady = (d: AtaCore): void => commandOk(d); // not-ready conditions were reported before

/** REQUEST SENSE (SPC-3 §6.27): fixed format; reading a unit attention clears it. */
function requestSense(d: AtaCore, s: CdState, p: Uint8Array): void {
  const b = page(s, SENSE_FIXED_LENGTH);
  b[0] = SENSE_VALID | SENSE_FIXED_CURRENT;
  b[2] = s.senseKey;
  b[7] = SENSE_ADDITIONAL_LENGTH;
  b[12] = s.asc;
  if (s.senseKey === SENSE_KEY.UNIT_ATTENTION) s.senseKey = SENSE_KEY.NO_SENSE;
  reply(d, SENSE_FIXED_LENGTH, p[4]!);
}

/**
 * INQUIRY (SPC-3 §6.4): standard data only, as QEMU (EVPD and page code are not looked at). Vendor is the first
 * word of the drive's model, product the model, revision the firmware ("QEMU" / "QEMU DVD-ROM" / "2.5+" when
 * configured as QEMU's).
 */
function inquiry(d: AtaCore, s: CdState, p: Uint8Array): void {
  const drive = d.drive!;
  const b = page(s, INQUIRY_STANDARD_LENGTH);
  b[0] = INQUIRY_TYPE_CDDVD;
  b[1] = INQUIRY_RMB;
  b[2] = 0x00; // no claim to a SCSI version, as ATAPI devices report it
  b[3] = 0x21; // response data format 1 with ATAPI version 2 in bits 7:4 (SFF-8020i, as QEMU)
  b[4] = INQUIRY_STANDARD_LENGTH - 5;
  putAscii(b, 8, 8, drive.model.split(" ")[0]!);
  putAscii(b, 16, 16, drive.model);
  putAscii(b, 32, 4, drive.firmware);
  reply(d, INQUIRY_STANDARD_LENGTH, p[4]!);
}

/**
 * MODE SENSE(10) (SPC-3 §6.10): current values of the read-write error recovery page, the CD audio control page
 * and the capabilities page; changeable or default values are an invalid field, saved values "saving
 * parameters not supported" (QEMU 7.2). The 8-byte header has no block descriptors.
 */
function modeSense(d: AtaCore, s: CdState, p: Uint8Array): void {
  const max = be16(p, 7);
  const pc = p[2]! >> 6;
  const code = p[2]! & 0x3f;
  if (pc === MODE_PC_SAVED) {
    checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.SAVING_PARAMETERS_NOT_SUPPORTED);
    return;
  }
  if (pc !== MODE_PC_CURRENT) {
    invalidField(d);
    return;
  }
  const header = (b: Uint8Array, len: number): void => {
    put16(b, 0, len - 2);
    b[2] = MODE_MEDIUM_TYPE_CD;
  };
  if (code === MODE_PAGE_R_W_ERROR) {
    const b = page(s, 16);
    header(b, 16);
    b[8] = MODE_PAGE_R_W_ERROR;
    b[9] = 16 - 10;
    b[11] = 0x05; // read retry count
    reply(d, 16, max);
  } else if (code === MODE_PAGE_AUDIO_CTL) {
    // Volume fields zero. QEMU leaves the other bytes of this page as its buffer held them (section F).
    const b = page(s, 24);
    header(b, 24);
    b[8] = MODE_PAGE_AUDIO_CTL;
    b[9] = 24 - 10;
    reply(d, 24, max);
  } else if (code === MODE_PAGE_CAPABILITIES) {
    const b = page(s, 30);
    header(b, 30);
    b[8] = MODE_PAGE_CAPABILITIES;
    b[9] = 30 - 10;
    b[10] = 0x3b; // reads CD-R, CD-RW, DVD-ROM, DVD-R, DVD-RAM
    b[12] = 0x71; // audio play (Linux looks for it before automounting), composite, digital ports, multi-session
    b[13] = 3 << 5; // CD-DA commands, accurate stream
    b[14] = 0x01 | 0x08 | (1 << 5) | (s.trayLocked ? 0x02 : 0); // lock, eject, tray loader; lock state
    put16(b, 16, 704); // maximum read speed, kB/s (4x)
    b[19] = 2; // volume levels
    put16(b, 20, 512); // buffer size, KiB
    put16(b, 22, 704); // current read speed
    reply(d, 30, max);
  } else invalidField(d);
}

/**
 * START STOP UNIT (MMC-5 §6.39): with LoEj, Start closes the tray and !Start opens it, unless PREVENT ALLOW MEDIUM
 * REMOVAL locked it (MEDIUM REMOVAL PREVENTED: NOT READY with a medium, ILLEGAL REQUEST without, as QEMU). A
 * power condition other than 0 does nothing.
 */
function startStopUnit(d: AtaCore, s: CdState, p: Uint8Array): void {
  const start = (p[4]! & SSU_START) !== 0;
  const loej = (p[4]! & SSU_LOEJ) !== 0;
  if (!(p[4]! & SSU_POWER_MASK) && loej) {
    if (!start && !s.trayOpen && s.trayLocked) {
      const key = mediumInserted(d) ? SENSE_KEY.NOT_READY : SENSE_KEY.ILLEGAL_REQUEST;
      checkCondition(d, key, ASC.MEDIA_REMOVAL_PREVENTED);
      return;
    }
    s.trayOpen = !start;
  }
  commandOk(d);
}

/** PREVENT ALLOW MEDIUM REMOVAL (MMC-5 §6.13): Prevent locks the tray against eject. */
function preventAllow(d: AtaCore, s: CdState, p: Uint8Array): void {
  s.trayLocked = (p[4]! & PAMR_PREVENT) !== 0;
  commandOk(d);
}

// ---- MMC: capacity, reads, seek.

/** READ CAPACITY (MMC-5 §6.23): last LBA and the block length, always 8 bytes (QEMU ignores the allocation). */
function readCapacity(d: AtaCore, s: CdState): void {
  const b = page(s, 8);
  put32(b, 0, capacityBlocks(d) - 1);
  put32(b, 4, CD_SECTOR_SIZE);
  reply(d, 8, 8);
}

/** READ(10) / READ(12) (MMC-5 §6.16, §6.17): 2048-byte blocks; a range beyond the medium is LBA OUT OF RANGE. */
function read(d: AtaCore, _s: CdState, p: Uint8Array): void {
  const count = p[0] === MMC_CMD.READ_10 ? be16(p, 7) : be32(p, 6);
  if (count === 0) {
    commandOk(d);
    return;
  }
  const lba = be32(p, 2);
  const cap = capacityBlocks(d);
  if (lba >= cap || lba + count - 1 >= cap) {
    checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.LBA_OUT_OF_RANGE);
    return;
  }
  readBlocks(d, lba, count, CD_SECTOR_SIZE);
}

/**
 * READ CD (MMC-5 §6.19): byte 9 bits 7:3 choose what each block returns: nothing, user data (10h) or the whole
 * raw sector (F8h); the sector type field is not checked. The range is checked before the selection (QEMU 7.2).
 */
function readCd(d: AtaCore, _s: CdState, p: Uint8Array): void {
  const count = (p[6]! << 16) | (p[7]! << 8) | p[8]!;
  const lba = be32(p, 2);
  if (count === 0) {
    commandOk(d);
    return;
  }
  const cap = capacityBlocks(d);
  if (lba >= cap || lba + count - 1 >= cap) {
    checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.LBA_OUT_OF_RANGE);
    return;
  }
  const what = p[9]! & 0xf8;
  if (what === 0) {
    commandOk(d);
    return;
  }
  if (!validateByteCount(d)) return;
  if (what === READ_CD_USER_DATA) readBlocks(d, lba, count, CD_SECTOR_SIZE);
  else if (what === READ_CD_ALL) readBlocks(d, lba, count, CD_RAW_SECTOR_SIZE);
  else invalidField(d);
}

/** SEEK(10) (MMC-5 §6.38): only checks the address. */
function seek(d: AtaCore, _s: CdState, p: Uint8Array): void {
  if (be32(p, 2) >= capacityBlocks(d)) checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.LBA_OUT_OF_RANGE);
  else commandOk(d);
}

// ---- MMC: disc structure.

/**
 * READ TOC/PMA/ATIP (MMC-5 §6.26) for one data track: format 0 (TOC), 1 (session info), 2 (raw TOC), with LBA
 * or MSF addresses. The format is taken from byte 9 bits 7:6 (the SFF-8020i place, which Linux uses), as QEMU
 * does.
 */
function readToc(d: AtaCore, s: CdState, p: Uint8Array): void {
  const max = be16(p, 7);
  const format = p[9]! >> 6;
  const msf = (p[1]! & 0x02) !== 0;
  const startTrack = p[6]!;
  const blocks = capacityBlocks(d);
  const b = page(s, 48);
  const addr = (o: number, lba: number): void => {
    if (msf) putMsf(b, o + 1, lba);
    else put32(b, o, lba);
  };
  let len: number;
  if (format === 0) {
    if (startTrack > 1 && startTrack !== TOC_LEADOUT_TRACK) {
      invalidField(d);
      return;
    }
    b[2] = 1; // first track
    b[3] = 1; // last track
    let o = 4;
    if (startTrack <= 1) {
      b[o + 1] = TOC_ADR_CONTROL_DATA;
      b[o + 2] = 1;
      addr(o + 4, 0);
      o += 8;
    }
    b[o + 1] = TOC_ADR_CONTROL_LEADOUT;
    b[o + 2] = TOC_LEADOUT_TRACK;
    addr(o + 4, blocks);
    len = o + 8;
  } else if (format === 1) {
    b[2] = 1; // first session
    b[3] = 1; // last session
    len = 12;
  } else if (format === 2) {
    b[2] = 1;
    b[3] = 1;
    // Point A0h (first track), A1h (last track), A2h (lead-out), then track 1: 11-byte descriptors.
    const entry = (o: number, point: number): void => {
      b[o] = 1; // session
      b[o + 1] = TOC_ADR_CONTROL_DATA;
      b[o + 3] = point;
    };
    entry(4, 0xa0);
    b[4 + 8] = 1; // first track number
    entry(15, 0xa1);
    b[15 + 8] = 1; // last track number
    entry(26, 0xa2);
    if (msf) putMsf(b, 26 + 8, blocks);
    else put32(b, 26 + 7, blocks);
    entry(37, 1);
    if (msf) putMsf(b, 37 + 8, 0);
    len = 48;
  } else {
    invalidField(d);
    return;
  }
  put16(b, 0, len - 2);
  reply(d, len, max);
}

/**
 * GET CONFIGURATION (MMC-5 §6.6): the feature header and feature 0 (profile list: DVD-ROM, CD-ROM), the current
 * profile by the medium's size; only a starting feature of 0 is accepted, and at most 512 bytes are returned.
 */
function getConfiguration(d: AtaCore, s: CdState, p: Uint8Array): void {
  if (p[2] !== 0 || p[3] !== 0) {
    invalidField(d);
    return;
  }
  const max = Math.min(be16(p, 7), 512);
  const b = page(s, 20);
  const current = !mediaPresent(d) ? 0 : capacityBlocks(d) > CD_MAX_BLOCKS ? PROFILE_DVD_ROM : PROFILE_CD_ROM;
  put16(b, 6, current);
  b[10] = 0x03; // persistent, current
  b[11] = 8; // two profile descriptors
  put16(b, 12, PROFILE_DVD_ROM);
  b[14] = current === PROFILE_DVD_ROM ? 1 : 0;
  put16(b, 16, PROFILE_CD_ROM);
  b[18] = current === PROFILE_CD_ROM ? 1 : 0;
  put32(b, 0, 20 - 4);
  reply(d, 20, max);
}

/**
 * GET EVENT STATUS NOTIFICATION (MMC-5 §6.7), polled only: the media class, with the tray and medium status and
 * the new-media or eject-request event, each reported once.
 */
function getEventStatus(d: AtaCore, s: CdState, p: Uint8Array): void {
  if (!(p[1]! & GESN_POLLED)) {
    invalidField(d);
    return;
  }
  const max = be16(p, 7);
  const b = page(s, 8);
  b[3] = 1 << GESN_CLASS_MEDIA;
  let used = 4;
  if (p[4]! & (1 << GESN_CLASS_MEDIA)) {
    b[2] = GESN_CLASS_MEDIA;
    const status = s.trayOpen ? MEDIA_STATUS_TRAY_OPEN : mediumInserted(d) ? MEDIA_STATUS_PRESENT : 0;
    let event: number = MEDIA_EVENT.NO_CHANGE;
    if (status !== MEDIA_STATUS_TRAY_OPEN) {
      if (s.newMedia) {
        event = MEDIA_EVENT.NEW_MEDIA;
        s.newMedia = false;
      } else if (s.ejectRequest) {
        event = MEDIA_EVENT.EJECT_REQUEST;
        s.ejectRequest = false;
      }
    }
    b[4] = event;
    b[5] = status;
    used = 8;
  } else b[2] = GESN_NEA;
  put16(b, 0, used - 4);
  reply(d, used, max);
}

/** READ DISC INFORMATION (MMC-5 §6.22), data type 0: one complete session with one track, finalized. */
function readDiscInformation(d: AtaCore, s: CdState, p: Uint8Array): void {
  if ((p[1]! & 7) !== 0) {
    invalidField(d);
    return;
  }
  const b = page(s, 34);
  b[1] = 32;
  b[2] = 0x0e; // last session complete, disc finalized
  b[3] = 1; // first track on disc
  b[4] = 1; // sessions
  b[5] = 1; // first track of last session
  b[6] = 1; // last track of last session
  b[7] = 0x20; // unrestricted use
  reply(d, 34, be16(p, 7));
}

/**
 * READ DVD STRUCTURE (MMC-5 §6.25) as QEMU answers it: on a CD, any format below FFh is INCOMPATIBLE FORMAT;
 * physical format (0), copyright (1), manufacturing (4) and the list (FFh) for media type 0.
 */
function readDvdStructure(d: AtaCore, s: CdState, p: Uint8Array): void {
  const max = be16(p, 8);
  const media = p[1]!;
  const format = p[7]!;
  // QEMU clears its buffer, which holds the packet, before it reads the layer number (byte 6).
  const layer = max > 6 ? 0 : p[6]!;
  if (format < 0xff) {
    if (mediaPresent(d) && capacityBlocks(d) <= CD_MAX_BLOCKS) {
      checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.INCOMPATIBLE_FORMAT);
      return;
    }
    if (!mediaPresent(d)) {
      invalidField(d);
      return;
    }
  }
  if (media !== 0 || !(format <= 0x7f || format === 0xff)) {
    invalidField(d);
    return;
  }
  const b = page(s, 2052);
  let len: number;
  switch (format) {
    case 0x00: {
      if (layer !== 0) {
        invalidField(d);
        return;
      }
      const blocks = capacityBlocks(d);
      if (blocks === 0) {
        checkCondition(d, SENSE_KEY.ILLEGAL_REQUEST, ASC.MEDIUM_NOT_PRESENT);
        return;
      }
      b[4] = 1; // DVD-ROM, part version 1
      b[5] = 0x0f; // 120 mm, maximum rate not specified
      b[6] = 1; // one layer, read-only
      put32(b, 12, blocks - 1); // end of the data area
      put32(b, 16, blocks - 1); // end of layer 0
      len = 2048 + 4;
      break;
    }
    case 0x01:
      len = 4 + 4; // no copy protection, no region restriction
      break;
    case 0x04:
      len = 2048 + 4;
      break;
    case 0xff:
      // The structures this drive returns: each with its readable flag and length.
      b[5] = 0x40;
      put16(b, 6, 2048 + 4);
      b[8] = 0x01;
      b[9] = 0x40;
      put16(b, 10, 4 + 4);
      b[12] = 0x03;
      b[13] = 0x40;
      put16(b, 14, 188 + 4);
      b[16] = 0x04;
      b[17] = 0x40;
      put16(b, 18, 2048 + 4);
      len = 16 + 4;
      break;
    default:
      invalidField(d);
      return;
  }
  put16(b, 0, len - 2);
  reply(d, len, max);
}

/** MECHANISM STATUS (MMC-5 §6.11): no changer, no current LBA, one slot table entry count. */
function mechanismStatus(d: AtaCore, s: CdState, p: Uint8Array): void {
  const b = page(s, 8);
  b[5] = 1;
  reply(d, 8, be16(p, 8));
}

const setCdSpeed = (d: AtaCore): void => commandOk(d);

// ---- The table.

const C = MMC_CMD;
const rows: [number, string, number, PacketCommand["handler"]][] = [
  [C.TEST_UNIT_READY, "TEST UNIT READY", CHECK_READY | NONDATA, testUnitReady],
  [C.REQUEST_SENSE, "REQUEST SENSE", ALLOW_UA, requestSense],
  [C.INQUIRY, "INQUIRY", ALLOW_UA, inquiry],
  [C.START_STOP_UNIT, "START STOP UNIT", NONDATA, startStopUnit],
  [C.PREVENT_ALLOW_MEDIUM_REMOVAL, "PREVENT ALLOW MEDIUM REMOVAL", NONDATA, preventAllow],
  [C.READ_CAPACITY, "READ CAPACITY", CHECK_READY, readCapacity],
  [C.READ_10, "READ(10)", CHECK_READY, read],
  [C.SEEK_10, "SEEK(10)", CHECK_READY | NONDATA, seek],
  [C.READ_TOC_PMA_ATIP, "READ TOC/PMA/ATIP", CHECK_READY, readToc],
  [C.GET_CONFIGURATION, "GET CONFIGURATION", ALLOW_UA, getConfiguration],
  [C.GET_EVENT_STATUS_NOTIFICATION, "GET EVENT STATUS NOTIFICATION", ALLOW_UA, getEventStatus],
  [C.READ_DISC_INFORMATION, "READ DISC INFORMATION", CHECK_READY, readDiscInformation],
  [C.MODE_SENSE_10, "MODE SENSE(10)", 0, modeSense],
  [C.READ_12, "READ(12)", CHECK_READY, read],
  [C.READ_DVD_STRUCTURE, "READ DVD STRUCTURE", CHECK_READY, readDvdStructure],
  [C.SET_CD_SPEED, "SET CD SPEED", NONDATA, setCdSpeed],
  [C.MECHANISM_STATUS, "MECHANISM STATUS", 0, mechanismStatus],
  [C.READ_CD, "READ CD", CHECK_READY | CONDDATA, readCd],
];

/** The packet commands by opcode; an opcode without an entry is ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE. */
export const MMC_COMMANDS: readonly (PacketCommand | undefined)[] = (() => {
  const t: (PacketCommand | undefined)[] = new Array(256);
  for (const [op, name, flags, handler] of rows) t[op] = { name, flags, handler };
  return t;
})();

setPacketTable(MMC_COMMANDS);
