/**
 * The settings of an attached drive that the host changes with commands (SET MULTIPLE MODE, SET FEATURES,
 * INITIALIZE DEVICE PARAMETERS, SMART ENABLE/DISABLE, the power commands), with their power-on values, and
 * what a software reset does to them.
 */

import type { Geometry } from "./geometry.ts";

/** Largest DRQ block of READ/WRITE MULTIPLE (IDENTIFY word 47), QEMU's MAX_MULT_SECTORS; also the power-on setting. */
export const MAX_MULT_SECTORS = 16;

/** IDENTIFY words 62, 63 and 88 at power-on: modes 0-2 / 0-2 / 0-5 supported, UDMA 5 selected (as QEMU). */
export const SWDMA_DEFAULT = 0x07;
export const MWDMA_DEFAULT = 0x07;
export const UDMA_DEFAULT = 0x203f;

/** Power modes of the Power Management feature set; SLEEP is modelled as STANDBY. */
export type PowerMode = "active" | "idle" | "standby";

export class DriveSettings {
  multipleSectors = MAX_MULT_SECTORS;
  private cache: boolean;
  smartEnabled = true;
  /** SET FEATURES CCh/66h: whether a software reset reverts the settings to their power-on values. */
  revertOnReset = false;
  /** The CHS translation, or null after INITIALIZE DEVICE PARAMETERS set one the drive cannot use. */
  currentGeometry: Geometry | null;
  swdma = SWDMA_DEFAULT;
  mwdma = MWDMA_DEFAULT;
  udma = UDMA_DEFAULT;
  power: PowerMode = "active";

  /**
   * `onWriteCache` hears every change of the volatile write cache setting (SET FEATURES 02h/82h, a revert), so
   * the medium can make single writes durable while it is off (NBD's FUA) instead of being flushed after each.
   */
  constructor(
    private readonly writeCacheDefault: boolean,
    private readonly defaultGeometry: Geometry | null,
    private readonly onWriteCache?: (enabled: boolean) => void,
  ) {
    this.cache = writeCacheDefault;
    this.currentGeometry = defaultGeometry ? { ...defaultGeometry } : null;
  }

  /**
   * What a software reset restores on QEMU 7.2 after SET FEATURES CCh: the CHS translation only, and the
   * request itself is used up ("qemu-7.2" profile).
   */
  revertTranslation(): void {
    this.currentGeometry = this.defaultGeometry ? { ...this.defaultGeometry } : null;
    this.revertOnReset = false;
  }

  /** The volatile write cache (IDENTIFY word 85 bit 5): off, every write is made durable before it completes. */
  get writeCache(): boolean {
    return this.cache;
  }

  set writeCache(enabled: boolean) {
    if (enabled === this.cache) return;
    this.cache = enabled;
    this.onWriteCache?.(enabled);
  }

  /** The power-on values, which SET FEATURES CCh asks a software reset to restore. */
  revert(): void {
    this.multipleSectors = MAX_MULT_SECTORS;
    this.writeCache = this.writeCacheDefault;
    this.currentGeometry = this.defaultGeometry ? { ...this.defaultGeometry } : null;
    this.swdma = SWDMA_DEFAULT;
    this.mwdma = MWDMA_DEFAULT;
    this.udma = UDMA_DEFAULT;
  }
}
