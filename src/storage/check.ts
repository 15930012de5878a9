/**
 * Request validation (done once per request, by the engines: the media's precondition) and errno mapping, so
 * that the same bad request gets the same `IoError` whichever medium or engine is behind a device.
 */
import { IoError, type IoErrorCode } from "./types.ts";

/**
 * The error for an I/O of `bytes` bytes at `sector`, or undefined when it is valid: the buffer must be a
 * positive whole number of sectors and lie inside the medium; writes need a writable medium.
 */
export function checkRange(sectorCount: number, sector: number, sectors: number): IoError | undefined {
  if (!Number.isSafeInteger(sector) || sector < 0) {
    const at = Number.isFinite(sector) && sector > 0 ? Math.floor(sector) : 0;
    return new IoError("ERANGE", `sector ${sector} is not a valid sector number`, at);
  }
  if (sector + sectors > sectorCount) {
    // Nothing is transferred; the first failing sector is the first one past the end of the medium.
    return new IoError(
      "ERANGE",
      `sectors [${sector}, ${sector + sectors}) are outside the medium of ${sectorCount} sectors`,
      Math.max(sector, sectorCount),
    );
  }
  return undefined;
}

export function checkBuffer(sectorSize: number, buf: Uint8Array, sector: number): IoError | undefined {
  if (buf.length === 0 || buf.length % sectorSize !== 0) {
    return new IoError(
      "EINVAL",
      `buffer of ${buf.length} bytes is not a positive whole number of ${sectorSize}-byte sectors`,
      sector,
    );
  }
  return undefined;
}

export interface MediumShape {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  readonly describe: string;
}

/** Full check for a vectored read or write: `bufs` are consecutive sectors from `sector` on. */
export function checkVec(
  m: MediumShape,
  write: boolean,
  sector: number,
  bufs: readonly Uint8Array[],
): IoError | undefined {
  if (bufs.length === 0)
    return new IoError("EINVAL", `${write ? "write" : "read"} without data buffers`, sector);
  if (write && m.readOnly) return new IoError("EROFS", `${m.describe} is read-only`, sector);
  let sectors = 0;
  for (const buf of bufs) {
    const err = checkBuffer(m.sectorSize, buf, sector + sectors);
    if (err) return err;
    sectors += buf.length / m.sectorSize;
  }
  return checkRange(m.sectorCount, sector, sectors);
}

/** Full check for a discard of `count` sectors at `sector` on `m`. */
export function checkDiscard(m: MediumShape, sector: number, count: number): IoError | undefined {
  if (m.readOnly) return new IoError("EROFS", `${m.describe} is read-only`, sector);
  if (!Number.isSafeInteger(count) || count < 0) {
    return new IoError("EINVAL", `discard sector count ${count} is not a whole number`, sector);
  }
  return checkRange(m.sectorCount, sector, count);
}

/** Map a Node fs error (errno code) to an `IoError`; `sector` is the first sector the failed call covered. */
export function fsError(err: unknown, sector: number, what: string): IoError {
  if (err instanceof IoError) return err;
  const errno = (err as NodeJS.ErrnoException | null)?.code;
  let code: IoErrorCode;
  switch (errno) {
    case "ENOSPC":
    case "EDQUOT":
      code = "ENOSPC";
      break;
    case "EROFS":
    case "EBADF": // a descriptor opened read-only
    case "EPERM":
    case "EACCES":
      code = "EROFS";
      break;
    case "EINVAL":
      code = "EINVAL";
      break;
    case "EFBIG":
      code = "ERANGE";
      break;
    case "EOPNOTSUPP":
    case "ENOTSUP":
      code = "ENOTSUP";
      break;
    default:
      code = "EIO";
  }
  const msg = (err as Error | null)?.message ?? String(err);
  return new IoError(code, `${what} failed at sector ${sector}: ${msg}`, sector);
}
