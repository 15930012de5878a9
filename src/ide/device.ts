/**
 * One ATA device position on a channel (device 0 or device 1): its shadow task file, which exists even when
 * no drive is attached (both positions latch every register write, ATA/ATAPI-6 §5.2.1), and, when a drive is
 * attached, the medium and the settings the host can change (multiple mode, write cache, CHS translation,
 * transfer mode, SMART, power mode).
 */

import type { BlockBackend, IoCompletion, IoEngine } from "../storage/types.ts";
import {
  DEV_ALWAYS_ON,
  DEV_LBA,
  DIAG_PASSED,
  MAX_MULT_SECTORS,
  SIG_LBAH,
  SIG_LBAL,
  SIG_LBAM,
  SIG_NSECT,
  ST_DRDY,
  ST_DSC,
} from "./ata.ts";
import {
  defaultSerial,
  type Geometry,
  geometryForSize,
  geometryFromMbr,
  type IdentifyState,
} from "./identify.ts";

export interface DriveConfig {
  engine: IoEngine;
  model?: string;
  serial?: string;
  firmware?: string;
  /** Volatile write cache enabled at power-on (default true, as QEMU's cache=writeback). */
  writeCache?: boolean;
}

export const DEFAULT_MODEL = "XENIDE HARDDISK";
export const DEFAULT_FIRMWARE = "0.1";

/** Sectors the drive buffers at once for PIO and READ VERIFY: a whole 256-sector LBA28 command (128 KiB). */
export const IO_BUF_SECTORS = 256;

/** Power modes of the Power Management feature set (ACS §4.15); SLEEP is modelled as STANDBY. */
export type PowerMode = "active" | "idle" | "standby";

/** What happens when the host has moved the last byte of the current DRQ data block. */
export const enum EndTransfer {
  None,
  /** IDENTIFY / SMART READ DATA: the single block is done; DRQ drops, no interrupt. */
  Single,
  /** PIO data-in: present the next block or finish. */
  ReadNext,
  /** PIO data-out: commit the block to the medium. */
  WriteCommit,
}

/** Word 88 at power-on: UDMA 0-5 supported, UDMA 5 selected (as QEMU). */
export const UDMA_DEFAULT = 0x203f;
export const SWDMA_DEFAULT = 0x07;
export const MWDMA_DEFAULT = 0x07;

export class IdeDevice {
  // --- Shadow task file (ATA/ATAPI-6 §7). `nsector` holds the 8-bit register; transfers keep their own count.
  feature = 0;
  hobFeature = 0;
  nsector = SIG_NSECT;
  hobNsector = 0;
  sector = SIG_LBAL;
  hobSector = 0;
  lcyl = SIG_LBAM;
  hobLcyl = 0;
  hcyl = SIG_LBAH;
  hobHcyl = 0;
  select = DEV_ALWAYS_ON;
  status = 0;
  error = 0;

  // --- Attached drive (all undefined/zero when the position is empty).
  readonly present: boolean;
  readonly engine: IoEngine | null;
  readonly backend: BlockBackend | null;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  readonly defaultGeometry: Geometry;
  readonly model: string;
  readonly serial: string;
  readonly firmware: string;
  private readonly writeCacheDefault: boolean;

  // --- Settings the host changes.
  multipleSectors = MAX_MULT_SECTORS;
  writeCache = true;
  smartEnabled = true;
  /** SET FEATURES CCh/66h: whether a software reset reverts the settings above to their power-on values. */
  revertOnReset = false;
  currentGeometry: Geometry | null;
  swdma = SWDMA_DEFAULT;
  mwdma = MWDMA_DEFAULT;
  udma = UDMA_DEFAULT;
  power: PowerMode = "active";

  // --- Data transfer (PIO): the DRQ window `xfer[dataPtr, dataEnd)`.
  xfer: Uint8Array;
  dataPtr = 0;
  dataEnd = 0;
  /** True while the window is a data-out block (the host writes the data port). */
  dataOut = false;
  endTransfer: EndTransfer = EndTransfer.None;
  /** The drive's sector buffer (PIO prefetch and commit, READ VERIFY, TRIM payloads). */
  buf: Uint8Array;
  readonly identifyWords = new Uint16Array(256);
  readonly identifyBytes = new Uint8Array(this.identifyWords.buffer);

  // --- The command in progress.
  cmd = -1;
  /** Task-file addressing of the command: 0 = CHS, 1 = LBA28, 2 = LBA48 (for writing the address back). */
  addrMode: 0 | 1 | 2 = 1;
  lba = 0;
  remaining = 0;
  blockSectors = 1;
  /** Sectors [pfStart, pfStart + pfValid) are in `buf` (PIO data-in prefetch); pfError is the failing one. */
  pfStart = 0;
  pfValid = 0;
  pfError = -1;
  pfErrorCode = "";
  /** PIO data-out blocks held in `buf` (write cache): `wbCount` sectors from `wbStart`. */
  wbStart = 0;
  wbCount = 0;
  /** A DMA command waits for (or is served by) the bus master. */
  dmaPending = false;
  dmaWrite = false;
  dmaTrim = false;
  dmaInflight = false;

  // --- Storage requests in flight: completions with tags in [batchFirst, batchLast] belong to `cont`.
  tagSeq = 0;
  batchFirst = 1;
  batchLast = 0;
  batchLeft = 0;
  batchError: IoCompletion["error"] = undefined;
  cont: ((err: IoCompletion["error"]) => void) | null = null;
  readonly comps: IoCompletion[] = [];

  constructor(
    readonly unit: 0 | 1,
    config: DriveConfig | undefined,
    position: string,
  ) {
    // An empty position never transfers data: no buffer.
    this.buf = new Uint8Array(config ? IO_BUF_SECTORS * 512 : 0);
    this.xfer = this.buf;
    if (!config) {
      this.present = false;
      this.engine = null;
      this.backend = null;
      this.sectorCount = 0;
      this.readOnly = true;
      this.defaultGeometry = { cylinders: 0, heads: 0, sectors: 0 };
      this.currentGeometry = null;
      this.model = this.serial = this.firmware = "";
      this.writeCacheDefault = false;
      return;
    }
    const b = config.engine.backend;
    if (b.sectorSize !== 512)
      throw new RangeError(`IDE disks have 512-byte sectors; ${b.describe} has ${b.sectorSize}`);
    this.present = true;
    this.engine = config.engine;
    this.backend = b;
    this.sectorCount = b.sectorCount;
    this.readOnly = b.readOnly;
    let g: Geometry | null = null;
    if (b.sectorCount > 0) {
      // Setup-time read of the MBR for the default geometry (the guest has not run yet).
      const s0 = new Uint8Array(512);
      try {
        b.readSync(0, s0);
        g = geometryFromMbr(s0, b.sectorCount);
      } catch {
        g = null;
      }
    }
    this.defaultGeometry = g ?? geometryForSize(b.sectorCount);
    this.currentGeometry = { ...this.defaultGeometry };
    this.model = config.model ?? DEFAULT_MODEL;
    this.firmware = config.firmware ?? DEFAULT_FIRMWARE;
    this.serial = config.serial ?? defaultSerial(`${position}|${b.describe}|${b.sectorCount}`);
    this.writeCacheDefault = config.writeCache ?? true;
    this.writeCache = this.writeCacheDefault;
    // Power-on: the diagnostic ran (ATA/ATAPI-6 §9.1), so the Error register holds its result.
    this.status = ST_DRDY | ST_DSC;
    this.error = DIAG_PASSED;
  }

  /** The settings SET FEATURES CCh asks to restore at the next software reset. */
  revertSettings(): void {
    this.multipleSectors = MAX_MULT_SECTORS;
    this.writeCache = this.writeCacheDefault;
    this.currentGeometry = { ...this.defaultGeometry };
    this.swdma = SWDMA_DEFAULT;
    this.mwdma = MWDMA_DEFAULT;
    this.udma = UDMA_DEFAULT;
  }

  /** Signature and diagnostic result (ATA/ATAPI-6 §9.12), as left by a reset or EXECUTE DEVICE DIAGNOSTIC. */
  setSignature(): void {
    this.select = DEV_ALWAYS_ON;
    this.nsector = SIG_NSECT;
    this.sector = SIG_LBAL;
    this.lcyl = SIG_LBAM;
    this.hcyl = SIG_LBAH;
    this.error = DIAG_PASSED;
  }

  /**
   * What a software reset clears besides the signature: the Features and HOB registers, and the multiple
   * setting back to its power-on value (as QEMU 7.2's ide_reset; ATA leaves the latter vendor-specific).
   */
  resetRegisters(): void {
    this.feature = 0;
    this.hobFeature = this.hobNsector = this.hobSector = this.hobLcyl = this.hobHcyl = 0;
    this.multipleSectors = MAX_MULT_SECTORS;
  }

  stopTransfer(): void {
    this.dataPtr = this.dataEnd = 0;
    this.dataOut = false;
    this.endTransfer = EndTransfer.None;
    this.xfer = this.buf;
  }

  identifyState(): IdentifyState {
    return {
      model: this.model,
      serial: this.serial,
      firmware: this.firmware,
      sectorCount: this.sectorCount,
      geometry: this.defaultGeometry,
      current: this.currentGeometry,
      multipleSectors: this.multipleSectors,
      writeCache: this.writeCache,
      smartEnabled: this.smartEnabled,
      swdma: this.swdma,
      mwdma: this.mwdma,
      udma: this.udma,
    };
  }

  // ---- Task-file addressing (ATA/ATAPI-6 §6.2: CHS, 28-bit and 48-bit LBA).

  /** Sector count of a 28-bit command (0 means 256) or a 48-bit one (0 means 65536). */
  count(lba48: boolean): number {
    if (lba48) return (this.hobNsector << 8) | this.nsector || 65536;
    return this.nsector || 256;
  }

  /**
   * The address in the task file, or -1 when it names no sector: a CHS address with sector 0, a head or sector
   * beyond the current translation, or no valid translation at all (ATA/ATAPI-6 §8.16: IDNF until fixed).
   */
  address(lba48: boolean): number {
    if (lba48) {
      this.addrMode = 2;
      return (
        (this.hobHcyl * 0x10000 + this.hobLcyl * 0x100 + this.hobSector) * 0x1000000 +
        ((this.hcyl << 16) | (this.lcyl << 8) | this.sector)
      );
    }
    if (this.select & DEV_LBA) {
      this.addrMode = 1;
      return (((this.select & 0x0f) << 24) | (this.hcyl << 16) | (this.lcyl << 8) | this.sector) >>> 0;
    }
    this.addrMode = 0;
    const g = this.currentGeometry;
    const head = this.select & 0x0f;
    if (!g || this.sector === 0 || this.sector > g.sectors || head >= g.heads) return -1;
    const cyl = (this.hcyl << 8) | this.lcyl;
    return (cyl * g.heads + head) * g.sectors + this.sector - 1;
  }

  /** Write `n` back into the task file in the command's addressing mode (QEMU's ide_set_sector). */
  setAddress(n: number): void {
    if (this.addrMode === 2) {
      this.sector = n & 0xff;
      this.lcyl = (n >>> 8) & 0xff;
      this.hcyl = (n >>> 16) & 0xff;
      const hi = Math.floor(n / 0x1000000);
      this.hobSector = hi & 0xff;
      this.hobLcyl = (hi >>> 8) & 0xff;
      this.hobHcyl = (hi >>> 16) & 0xff;
    } else if (this.addrMode === 1) {
      this.select = (this.select & 0xf0) | ((n >>> 24) & 0x0f);
      this.hcyl = (n >>> 16) & 0xff;
      this.lcyl = (n >>> 8) & 0xff;
      this.sector = n & 0xff;
    } else {
      const g = this.currentGeometry;
      if (!g) return;
      const perCyl = g.heads * g.sectors;
      const cyl = Math.floor(n / perCyl);
      const r = n % perCyl;
      this.hcyl = (cyl >>> 8) & 0xff;
      this.lcyl = cyl & 0xff;
      this.select = (this.select & 0xf0) | (Math.floor(r / g.sectors) & 0x0f);
      this.sector = (r % g.sectors) + 1;
    }
  }
}
