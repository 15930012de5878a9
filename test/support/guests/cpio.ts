/**
 * A writer for the "newc" cpio format (the SVR4 format without checksums), the only archive format the Linux
 * kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte
 * ASCII header of 13 eight-digit hex fields, the NUL-terminated name, then the data, both padded to 4 bytes.
 */

import { gzipSync } from "node:zlib";

export interface CpioEntry {
  path: string;
  /** Full st_mode: type bits | permissions (0o100755 file, 0o040755 directory, 0o020600 char device, 0o120777 link). */
  mode: number;
  data?: Uint8Array | string;
  /** Device number of a device node. */
  rdev?: { major: number; minor: number };
}

export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFLNK = 0o120000;

const hex8 = (n: number) => n.toString(16).padStart(8, "0");
const pad4 = (n: number) => (4 - (n % 4)) % 4;

export function cpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const parts: Buffer[] = [];
  let ino = 1;
  const add = (e: CpioEntry) => {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    const name = Buffer.from(e.path.replace(/^\/+/, "") + "\0");
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    const fields = [
      ino++,
      e.mode,
      0, // uid
      0, // gid
      isDir ? 2 : 1, // nlink
      0, // mtime: fixed, so the archive is reproducible
      data.length,
      0,
      0, // devmajor, devminor of the file system
      e.rdev?.major ?? 0,
      e.rdev?.minor ?? 0,
      name.length,
      0, // check: unused by newc
    ];
    const header = Buffer.from("070701" + fields.map(hex8).join(""), "ascii");
    parts.push(
      header,
      name,
      Buffer.alloc(pad4(header.length + name.length)),
      data,
      Buffer.alloc(pad4(data.length)),
    );
  };
  for (const e of entries) add(e);
  add({ path: "TRAILER!!!", mode: 0 });
  return new Uint8Array(Buffer.concat(parts));
}

export function gzipCpio(entries: readonly CpioEntry[]): Uint8Array {
  return new Uint8Array(gzipSync(cpioNewc(entries), { level: 1 }));
}
