/**
 * The drive kinds a `DriveConfig` can name: the hard disk built in, others registered by their modules.
 */

import type { DriveKindName } from "./device.ts";
import { CD_ROM } from "./cd/kind.ts";
import { HARD_DISK } from "./hd/kind.ts";
import type { DriveKind } from "./kind.ts";

const KINDS = new Map<string, DriveKind>([
  [HARD_DISK.name, HARD_DISK],
  [CD_ROM.name, CD_ROM],
]);

/** Make `kind` available under its name (once: a second kind of the same name is refused). */
export function registerDriveKind(kind: DriveKind): void {
  if (KINDS.has(kind.name)) throw new RangeError(`drive kind "${kind.name}" is already registered`);
  KINDS.set(kind.name, kind);
}

/** The kind a configuration names; a hard disk when it names none. */
export function driveKind(name: DriveKindName | undefined): DriveKind {
  const k = KINDS.get(name ?? "hd");
  if (!k) throw new RangeError(`unknown drive kind "${name}"`);
  return k;
}
