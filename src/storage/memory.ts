/**
 * A disk held in memory: for tests, for the "what does the protocol cost without a host disk" question, and
 * for small scratch disks. Behaves like the raw backend (same validation, same errors); discard zeroes.
 */
import { checkDiscard, checkIo } from "./check.ts";
import { ImageError } from "./errors.ts";
import { type BlockBackend, IoError, SECTOR_SIZE } from "./types.ts";

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

  readSync(sector: number, buf: Uint8Array): void {
    const err = checkIo(this, false, sector, buf);
    if (err) throw err;
    const pos = sector * SECTOR_SIZE;
    buf.set(this.data.subarray(pos, pos + buf.length));
  }

  writeSync(sector: number, buf: Uint8Array): void {
    const err = checkIo(this, true, sector, buf);
    if (err) throw err;
    this.data.set(buf, sector * SECTOR_SIZE);
  }

  flushSync(): void {}

  discardSync(sector: number, count: number): void {
    const err = checkDiscard(this, sector, count);
    if (err) throw err;
    this.data.fill(0, sector * SECTOR_SIZE, (sector + count) * SECTOR_SIZE);
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

/** Run a sync operation and report its outcome as a promise (an `IoError` becomes a rejection). */
export function settle(op: () => void): Promise<void> {
  try {
    op();
    return Promise.resolve();
  } catch (e) {
    return Promise.reject(e instanceof IoError ? e : new IoError("EIO", String(e)));
  }
}
