/**
 * A disk held in memory: for tests, for the "what does the protocol cost without a host disk" question, and
 * for small scratch disks. Behaves like the raw backend behind either engine (same validation, same errors);
 * discard zeroes. Requests arrive validated (see `BlockBackend`).
 */
import { ImageError } from "./errors.ts";
import { type BlockBackend, SECTOR_SIZE } from "./types.ts";

export interface MemoryBackendOptions {
  readOnly?: boolean;
}

export class MemoryBackend implements BlockBackend {
  readonly sectorSize = SECTOR_SIZE;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  readonly describe = "memory";
  /** The disk's bytes (the caller's array when one was given: no copy). */
  readonly data: Uint8Array;

  /** `init` is a sector count (a zeroed disk) or the disk's contents (a whole number of sectors, not copied). */
  constructor(init: number | Uint8Array, options: MemoryBackendOptions = {}) {
    if (typeof init === "number") {
      if (!Number.isSafeInteger(init) || init < 0) {
        throw new ImageError("EBADSIZE", `memory disk sector count must be a whole number, got ${init}`);
      }
      this.data = new Uint8Array(init * SECTOR_SIZE);
    } else {
      if (init.length % SECTOR_SIZE !== 0) {
        throw new ImageError(
          "EBADSIZE",
          `memory disk contents of ${init.length} bytes are not a whole number of ${SECTOR_SIZE}-byte sectors`,
        );
      }
      this.data = init;
    }
    this.sectorCount = this.data.length / SECTOR_SIZE;
    this.readOnly = options.readOnly ?? false;
  }

  read(sector: number, bufs: readonly Uint8Array[]): void {
    let pos = sector * SECTOR_SIZE;
    for (const buf of bufs) {
      buf.set(this.data.subarray(pos, pos + buf.length));
      pos += buf.length;
    }
  }

  write(sector: number, bufs: readonly Uint8Array[]): void {
    let pos = sector * SECTOR_SIZE;
    for (const buf of bufs) {
      this.data.set(buf, pos);
      pos += buf.length;
    }
  }

  flush(): void {}

  discard(sector: number, count: number): void {
    this.data.fill(0, sector * SECTOR_SIZE, (sector + count) * SECTOR_SIZE);
  }

  close(): void {}
}
