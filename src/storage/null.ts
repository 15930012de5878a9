/**
 * A disk that does nothing: every request succeeds at once, reads leave the buffer untouched, nothing is
 * stored. Used to measure the cost of a protocol (IDE exits, the blkif ring) with no I/O and no data movement.
 * Requests are still validated, so a device model's range errors show up as they would on a real disk.
 */
import { checkDiscard, checkIo } from "./check.ts";
import { ImageError } from "./errors.ts";
import { settle } from "./memory.ts";
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

  readSync(sector: number, buf: Uint8Array): void {
    const err = checkIo(this, false, sector, buf);
    if (err) throw err;
  }
  writeSync(sector: number, buf: Uint8Array): void {
    const err = checkIo(this, true, sector, buf);
    if (err) throw err;
  }
  flushSync(): void {}
  discardSync(sector: number, count: number): void {
    const err = checkDiscard(this, sector, count);
    if (err) throw err;
  }

  read(sector: number, buf: Uint8Array): Promise<void> {
    return settle(() => this.readSync(sector, buf));
  }
  write(sector: number, buf: Uint8Array): Promise<void> {
    return settle(() => this.writeSync(sector, buf));
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  discard(sector: number, count: number): Promise<void> {
    return settle(() => this.discardSync(sector, count));
  }
  close(): void {}
}
