/**
 * Drive kinds. A drive is of one kind (a hard disk in hd/, an ATAPI CD-ROM in cd/), and its kind gives everything
 * that differs between kinds: the signature it leaves after a reset, its status when ready, what it needs of
 * its medium, and its command table, where IDENTIFY behaviour and (for ATAPI) PACKET live. The ATA core, the
 * protocols (PIO, DMA, flush/verify) and the channel are shared. A new kind is a module beside hd/ that
 * defines a `DriveKind`, adds its name to `DriveKindNames` (device.ts) and registers itself (registry.ts), without
 * touching the hard disk's table.
 */

import type { CommandEntry, CommandHandler, CommandTable, KindProfile } from "./core.ts";
import type { MediumProfile } from "./device.ts";

export interface DriveKind extends KindProfile {
  /** The name a `DriveConfig.kind` gives. */
  readonly name: string;
  readonly medium: MediumProfile;
}

/** One row of a command table: opcode, name as in the standard, flags (CMD_FLAG_*), handler. */
export type CommandDef = readonly [op: number, name: string, flags: number, handler: CommandHandler];

/** A 256-entry table from rows; an opcode without a row aborts. */
export function commandTable(defs: readonly CommandDef[]): CommandTable {
  const table: (CommandEntry | undefined)[] = new Array(256);
  for (const [op, name, flags, handler] of defs) {
    if (table[op]) throw new RangeError(`command 0x${op.toString(16)} defined twice`);
    table[op] = { name, flags, handler };
  }
  return table;
}
