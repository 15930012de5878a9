/**
 * The documented deviations from QEMU 7.2, as comparison excuses. The list itself lives in the test kit
 * (`test/support/ide/deviations.ts`, exporting `DEVIATIONS`); this module only turns each entry's machine-readable
 * `diff` description into a predicate, so the comparison forgives exactly what is documented and nothing else.
 *
 * An entry's `diff`:
 *   where   regular expression (source) matched against the comparison label, e.g. "SRST=1\\): settles" or
 *           ": err$"; the label names the step and the field ("... command: err", "... done: BM status").
 *   qemu    the value QEMU shows there (exact string as the comparison prints it, e.g. "0x04"), if it matters
 *   xenide  the value xenide shows there, if it matters
 *   command opcode(s) the last command byte must be, if the difference belongs to certain commands only
 */

import { DEVIATIONS } from "../support/ide/deviations.ts";
import type { Excuse } from "./pair.ts";

export interface DeviationDiff {
  where: string;
  qemu?: string;
  xenide?: string;
  command?: number | number[];
}

interface DeviationLike {
  id: string;
  diff?: DeviationDiff | DeviationDiff[];
}

export function excusesFrom(list: readonly DeviationLike[]): Excuse[] {
  const out: Excuse[] = [];
  for (const d of list) {
    const diffs = d.diff === undefined ? [] : Array.isArray(d.diff) ? d.diff : [d.diff];
    for (const diff of diffs) {
      const where = new RegExp(diff.where);
      const cmds =
        diff.command === undefined ? null : Array.isArray(diff.command) ? diff.command : [diff.command];
      out.push({
        id: d.id,
        covers: (what, q, x, ctx) =>
          where.test(what) &&
          (diff.qemu === undefined || diff.qemu === q) &&
          (diff.xenide === undefined || diff.xenide === x) &&
          (cmds === null || cmds.includes(ctx.lastCommand)),
      });
    }
  }
  return out;
}

export const DEVIATION_EXCUSES: readonly Excuse[] = excusesFrom(DEVIATIONS);
