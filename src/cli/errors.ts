import { ImageError } from "../storage/errors.ts";
import { NbdError } from "../storage/nbd/url.ts";

/**
 * A mistake the user can fix (bad flag, missing file, image locked). The CLI prints its message as one line
 * and exits non-zero, without a stack trace.
 */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * An image or URL that could not be opened: the operation failed (exit 1), except a malformed NBD URL, which is a
 * usage error (exit 2) like any other malformed value.
 */
export function openFailure(e: ImageError): UsageError {
  return new UsageError(e.message, e instanceof NbdError && e.reason === "url" ? 2 : 1);
}
