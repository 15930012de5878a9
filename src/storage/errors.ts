/**
 * Errors raised when opening or creating an image (as opposed to `IoError`, which is a failed request on an
 * open medium). Each has a stable `code` so a CLI can print one line and callers can branch without parsing text.
 */

export type ImageErrorCode =
  | "ELOCKED" // another live process holds the image in a way that excludes this use
  | "EBADSIZE" // file size or requested size is not a whole number of sectors, or unparsable
  | "EEXIST" // refusing to overwrite an existing file
  | "ENODIRECT" // the filesystem refuses O_DIRECT
  | "EOPEN"; // the file cannot be opened (missing, permissions...)

export class ImageError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    message: string,
    readonly path?: string,
    /** The system error behind an EOPEN (`ENOENT`, `EACCES`...), when there was one. */
    readonly errno?: string,
  ) {
    super(message);
    this.name = "ImageError";
  }
}

/**
 * The image is in use by process `pid` (0: a process this user cannot see), which holds it for `mode`
 * (undefined: QEMU's lock on the file says only that it forbids this use). `record` is the lock file that named
 * it, when a lock file did; otherwise it was found through the kernel lock (`program` is its command name).
 */
export class ImageLockedError extends ImageError {
  constructor(
    path: string,
    readonly pid: number,
    readonly lockPath: string,
    readonly mode: "read" | "write" | undefined = "write",
    readonly program?: string,
    readonly record?: string,
  ) {
    const who = pid > 0 ? `process ${pid}${program ? ` (${program})` : ""}` : "another process";
    const how = mode === "write" ? " for writing" : mode === "read" ? " for reading" : "";
    // A lock file alone cannot tell a xenide holder from an unrelated program that reused a dead holder's pid.
    const where = record
      ? ` (lock file ${record}; if process ${pid} is not xenide, that file is stale: delete it)`
      : pid > 0
        ? ""
        : " (QEMU's lock on the image file; that process is not visible to this user)";
    super("ELOCKED", `${path} is in use: ${who} holds it${how}${where}`, path);
    this.name = "ImageLockedError";
  }
}
