/**
 * Errors raised when opening or creating an image (as opposed to `IoError`, which is a failed request on an
 * open medium). Each has a stable `code` so a CLI can print one line and callers can branch without parsing text.
 */

export type ImageErrorCode =
  | "ELOCKED" // another live process holds the image for writing
  | "EBADSIZE" // file size or requested size is not a whole number of sectors, or unparsable
  | "EEXIST" // refusing to overwrite an existing file
  | "ENODIRECT" // the filesystem refuses O_DIRECT
  | "EOPEN"; // the file cannot be opened (missing, permissions...)

export class ImageError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    message: string,
    readonly path?: string,
  ) {
    super(message);
    this.name = "ImageError";
  }
}

/** The image is held for writing by process `pid` (recorded in `lockPath`). */
export class ImageLockedError extends ImageError {
  constructor(
    path: string,
    readonly pid: number,
    readonly lockPath: string,
  ) {
    super(
      "ELOCKED",
      `${path} is in use: process ${pid} holds it for writing (lock file ${lockPath}; remove it only if that process is not running xenide)`,
      path,
    );
    this.name = "ImageLockedError";
  }
}
