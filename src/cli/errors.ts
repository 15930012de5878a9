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
