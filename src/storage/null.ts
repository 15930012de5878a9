/**
 * A disk that does nothing: every request succeeds at once, reads leave the buffer untouched, nothing is
 * stored. Used to measure the cost of a protocol (IDE exits, the blkif ring) with no I/O and no data movement.
 * The engines still validate requests, so a device model's range errors show up as they would on a real disk.
 */
import { ImageError } from "./errors.ts";
import { type BlockBackend, SECTOR_SIZE } from "./types.ts";

export class NullBackend implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly readOnly = false;
  readonly describe = "null";

  constructor(readonly sectorCount: number) {
    if (!Number.isSafeInteger(sectorCount) || sectorCount < 0) {
      throw new ImageError("EBADSIZE", `null disk sector count must be a whole number, got ${sectorCount}`);
    }
  }

  read(): void {}
  write(): void {}
  flush(): void {}
  discard(): void {}
  close(): void {}
}
