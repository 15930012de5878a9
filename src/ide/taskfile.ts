/**
 * The shadow task file of one device position: the command block registers the host writes, each with its
 * high-order-byte (HOB) copy for 48-bit commands, and the addressing they encode. Both positions of a channel
 * latch every register write, whether a drive is there or not (ATA-6 §5.2.1), so an empty position has one too.
 * The device writes results back into the same registers (the address of the failing or next sector, counts).
 */

import {
  ATA_SIGNATURE,
  DEV_HEAD_MASK,
  DEV_LBA,
  DEV_OBS,
  type DeviceSignature,
  REG_DEVICE,
  REG_FEATURES,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
} from "../spec/ata.ts";
import type { Geometry } from "./geometry.ts";

/** How the command in progress addressed the medium, so that an address is written back the same way. */
export const enum AddrMode {
  Chs = 0,
  Lba28 = 1,
  Lba48 = 2,
}

export class TaskFile {
  // Power-on values are the signature of a non-PACKET device; a drive kind with another one sets its own.
  features = 0;
  hobFeatures = 0;
  /** The 8-bit register; a transfer keeps its own sector count. */
  sectorCount = ATA_SIGNATURE.sectorCount;
  hobSectorCount = 0;
  lbaLow = ATA_SIGNATURE.lbaLow;
  hobLbaLow = 0;
  lbaMid = ATA_SIGNATURE.lbaMid;
  hobLbaMid = 0;
  lbaHigh = ATA_SIGNATURE.lbaHigh;
  hobLbaHigh = 0;
  device = DEV_OBS;
  addrMode: AddrMode = AddrMode.Lba28;
  /** The last command that addressed the medium was a 48-bit one (QEMU's sticky `lba48`, cleared by a reset). */
  lba48 = false;

  /**
   * A host write to a command block register: the previous value moves to the HOB copy (the two-deep FIFO that
   * 48-bit commands use, ATA-6 §7.1). The Device register keeps its obsolete bits set.
   */
  latch(reg: number, v: number): void {
    switch (reg) {
      case REG_FEATURES:
        this.hobFeatures = this.features;
        this.features = v;
        break;
      case REG_SECTOR_COUNT:
        this.hobSectorCount = this.sectorCount;
        this.sectorCount = v;
        break;
      case REG_LBA_LOW:
        this.hobLbaLow = this.lbaLow;
        this.lbaLow = v;
        break;
      case REG_LBA_MID:
        this.hobLbaMid = this.lbaMid;
        this.lbaMid = v;
        break;
      case REG_LBA_HIGH:
        this.hobLbaHigh = this.lbaHigh;
        this.lbaHigh = v;
        break;
      case REG_DEVICE:
        this.device = v | DEV_OBS;
        break;
    }
  }

  /** The signature a reset or EXECUTE DEVICE DIAGNOSTIC leaves (ATA-6 §9.12); the Device register is cleared. */
  setSignature(sig: DeviceSignature): void {
    this.device = DEV_OBS;
    this.sectorCount = sig.sectorCount;
    this.lbaLow = sig.lbaLow;
    this.lbaMid = sig.lbaMid;
    this.lbaHigh = sig.lbaHigh;
  }

  /** What a software reset clears besides the signature: Features and the HOB copies (as QEMU 7.2's ide_reset). */
  clearForReset(): void {
    this.features = 0;
    this.hobFeatures = this.hobSectorCount = this.hobLbaLow = this.hobLbaMid = this.hobLbaHigh = 0;
    this.lba48 = false;
  }

  // ---- Addressing (ATA-6 §6.2: CHS, 28-bit and 48-bit LBA).

  /** Sector count of a 28-bit command (0 means 256) or a 48-bit one (0 means 65536). */
  commandCount(lba48: boolean): number {
    if (lba48) return (this.hobSectorCount << 8) | this.sectorCount || 65536;
    return this.sectorCount || 256;
  }

  /**
   * The address in the task file, or -1 when it names no sector: a CHS address with sector 0, a head or sector
   * beyond the translation `g`, or no valid translation at all (ATA-6 §8.16: IDNF until one is set). Remembers
   * the addressing for `setAddress`.
   *
   * `qemu`: decode as QEMU 7.2's ide_get_sector does: the Device register's LBA bit chooses LBA or CHS for
   * 48-bit commands too, and a CHS address is not checked against the translation (only a negative result,
   * sector 0 of cylinder 0 head 0, names no sector). No valid translation stays a refusal (QEMU divides by zero).
   */
  commandAddress(lba48: boolean, g: Geometry | null, qemu = false): number {
    this.lba48 = lba48;
    if (qemu && !(this.device & DEV_LBA)) {
      this.addrMode = AddrMode.Chs;
      if (!g || g.sectors === 0) return -1;
      const cyl = (this.lbaHigh << 8) | this.lbaMid;
      const n = (cyl * g.heads + (this.device & DEV_HEAD_MASK)) * g.sectors + this.lbaLow - 1;
      return n < 0 ? -1 : n;
    }
    if (lba48) {
      this.addrMode = AddrMode.Lba48;
      return (
        (this.hobLbaHigh * 0x10000 + this.hobLbaMid * 0x100 + this.hobLbaLow) * 0x1000000 +
        ((this.lbaHigh << 16) | (this.lbaMid << 8) | this.lbaLow)
      );
    }
    if (this.device & DEV_LBA) {
      this.addrMode = AddrMode.Lba28;
      return (
        (((this.device & DEV_HEAD_MASK) << 24) | (this.lbaHigh << 16) | (this.lbaMid << 8) | this.lbaLow) >>>
        0
      );
    }
    this.addrMode = AddrMode.Chs;
    const head = this.device & DEV_HEAD_MASK;
    if (!g || this.lbaLow === 0 || this.lbaLow > g.sectors || head >= g.heads) return -1;
    const cyl = (this.lbaHigh << 8) | this.lbaMid;
    return (cyl * g.heads + head) * g.sectors + this.lbaLow - 1;
  }

  /** Write sector `n` back in the command's addressing (QEMU's ide_set_sector); CHS through translation `g`. */
  setAddress(n: number, g: Geometry | null): void {
    if (this.addrMode === AddrMode.Lba48) {
      this.lbaLow = n & 0xff;
      this.lbaMid = (n >>> 8) & 0xff;
      this.lbaHigh = (n >>> 16) & 0xff;
      const hi = Math.floor(n / 0x1000000);
      this.hobLbaLow = hi & 0xff;
      this.hobLbaMid = (hi >>> 8) & 0xff;
      this.hobLbaHigh = (hi >>> 16) & 0xff;
    } else if (this.addrMode === AddrMode.Lba28) {
      this.device = (this.device & 0xf0) | ((n >>> 24) & DEV_HEAD_MASK);
      this.lbaHigh = (n >>> 16) & 0xff;
      this.lbaMid = (n >>> 8) & 0xff;
      this.lbaLow = n & 0xff;
    } else {
      if (!g) return;
      const perCyl = g.heads * g.sectors;
      const cyl = Math.floor(n / perCyl);
      const r = n % perCyl;
      this.lbaHigh = (cyl >>> 8) & 0xff;
      this.lbaMid = cyl & 0xff;
      this.device = (this.device & 0xf0) | (Math.floor(r / g.sectors) & DEV_HEAD_MASK);
      this.lbaLow = (r % g.sectors) + 1;
    }
  }
}
