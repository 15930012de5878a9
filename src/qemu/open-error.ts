/**
 * An image the launcher cannot open, reported as QEMU 7.2 reports it (block/file-posix.c, block/qcow2.c), led by
 * the option that named it: `-drive file=/x,if=ide: Could not open '/x': No such file or directory`. Anything
 * QEMU words differently, or that only xenide refuses (an unsupported qcow2 feature, say), keeps xenide's text.
 */

import { statSync } from "node:fs";

import { ImageError } from "../storage/errors.ts";
import { ImageFormatError } from "../storage/qcow2/format.ts";
import type { PlannedDrive } from "./config.ts";
import { strerror } from "./strerror.ts";

/** The error line (without the program name) for `image`, named by `option`, that failed to open with `e`. */
export function qemuOpenError(option: string, image: string, e: unknown): string {
  const where = option === "" ? "" : `${option}: `;
  if (e instanceof ImageFormatError && e.reason === "not-qcow2")
    return `${where}Image is not in qcow2 format`;
  if (e instanceof ImageError && e.code === "EOPEN") {
    const text = strerror(e.errno);
    if (text !== undefined) return `${where}Could not open '${image}': ${text}`;
    if (notRegularFile(image)) return `${where}'file' driver requires '${image}' to be a regular file`;
  }
  return `${where}${(e as Error)?.message ?? String(e)}`;
}

function notRegularFile(path: string): boolean {
  try {
    return !statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * An error of the machine's build: one opening a planned drive's image becomes that drive's line in QEMU's words;
 * anything else (a backing file, a configuration error) is returned as it is.
 */
export function driveOpenError(drives: readonly PlannedDrive[], e: unknown): unknown {
  if (!(e instanceof ImageError) || e.path === undefined) return e;
  const p = drives.find((d) => d.image === e.path);
  return p ? new Error(qemuOpenError(p.option, e.path, e)) : e;
}
