/**
 * strerror(3)'s text for the errors that opening or reading a named file gives, which QEMU's messages quote
 * (`Could not open 'X': No such file or directory`).
 */

const STRERROR: Readonly<Record<string, string>> = {
  ENOENT: "No such file or directory",
  EACCES: "Permission denied",
  EPERM: "Operation not permitted",
  ENOTDIR: "Not a directory",
  EISDIR: "Is a directory",
  ELOOP: "Too many levels of symbolic links",
  ENAMETOOLONG: "File name too long",
  EROFS: "Read-only file system",
  ETXTBSY: "Text file busy",
};

/** The text for a Node error code (`ENOENT`), or undefined for one not listed. */
export function strerror(code: string | undefined): string | undefined {
  return code === undefined ? undefined : STRERROR[code];
}
