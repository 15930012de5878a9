/**
 * Seeded random ATA command sequences, run on QEMU 7.2 and on `xenide qtest` side by side (one process of
 * each per profile for the whole run), comparing every reply and the settled channel state after every step,
 * and both images after every sequence. The sequences are shared between the two profiles: the default
 * profile ("xenide") runs with the documented deviations excused, "qemu-7.2" with no excuse at all, each on its
 * own seed. The seeds are printed; a failure prints the shrunk sequence and its qtest lines.
 *
 * XENIDE_DIFF_SEED=n fixes the seed (the "qemu-7.2" run uses n + 1); XENIDE_DIFF_SEQS=n sets the number of
 * sequences of both profiles together (default 1000, half each); XENIDE_DIFF_PROFILE=xenide|qemu-7.2 runs only
 * that profile (all the sequences); XENIDE_DIFF_INPROCESS=1 serves xenide's side in this process instead of a
 * `xenide qtest` child.
 */

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPAT_PROFILES, type CompatProfile } from "../../src/ide/compat.ts";
import { qemuStatus, patternImage, prng } from "./harness.ts";
import { DEVIATION_EXCUSES } from "./excuses.ts";
import { describeOp, genSequence, type Op } from "./ops.ts";
import { Mismatch } from "./pair.ts";
import { Session, shrink, withStderr } from "./session.ts";

const SECTORS = 2048; // 1 MiB: small enough to compare after every sequence
const status = qemuStatus();
const requireQemu = process.env.CI === "true";
const SEQS = Number(process.env.XENIDE_DIFF_SEQS ?? 1000);
const SEED = Number(process.env.XENIDE_DIFF_SEED ?? Date.now() % 0x7fffffff);
const ONLY = process.env.XENIDE_DIFF_PROFILE as CompatProfile | undefined;
if (ONLY !== undefined && !COMPAT_PROFILES.includes(ONLY))
  throw new Error(`XENIDE_DIFF_PROFILE must be one of ${COMPAT_PROFILES.join(", ")}`);
const PROFILES = ONLY ? [ONLY] : COMPAT_PROFILES;

if (!status.ok && requireQemu) {
  describe("differential: random sequences", () => {
    it("needs QEMU under CI", () => {
      throw new Error(status.reason);
    });
  });
} else if (!status.ok) {
  describe.skip(`differential: random sequences (skipped: ${status.reason})`, () => {
    it("skipped", () => {});
  });
} else {
  PROFILES.forEach((compat, i) => {
    // The sequences split between the profiles, so that both together cost what one run did.
    const seqs = Math.floor(SEQS / PROFILES.length) + (i < SEQS % PROFILES.length ? 1 : 0);
    randomRun(compat, seqs, compat === "xenide" ? SEED : SEED + 1);
  });
}

function randomRun(compat: CompatProfile, seqs: number, seed: number): void {
  const excuses = compat === "qemu-7.2" ? [] : DEVIATION_EXCUSES;
  const replay = `XENIDE_DIFF_SEED=${compat === "xenide" ? seed : seed - 1} XENIDE_DIFF_PROFILE=${compat} XENIDE_DIFF_SEQS=${seqs}`;
  describe(`differential: random sequences against QEMU 7.2, profile ${compat}`, () => {
    let session: Session;
    const start = patternImage(SECTORS, seed);

    beforeAll(async () => {
      session = await Session.start([start], excuses, process.env.XENIDE_DIFF_INPROCESS === "1", compat);
    });
    afterAll(async () => {
      await session?.stop();
    });

    it(`${seqs} seeded sequences agree (seed ${seed})`, { timeout: 15 * 60_000 }, async () => {
      process.stdout.write(
        `differential (${compat}): seed ${seed} (${replay} to replay), ${seqs} sequences\n`,
      );
      const rnd = prng(seed);
      let before = new Uint8Array(session.images.read("qemu", 0));
      let ops: Op[] = [];
      let seq = 0;
      try {
        for (; seq < seqs; seq++) {
          ops = genSequence(rnd, { sectors: SECTORS, compat }, 2 + (rnd() % 5));
          await session.run(ops, `seq ${seq}`);
          session.compareImages(`seq ${seq}`);
          before = new Uint8Array(session.images.read("qemu", 0));
        }
      } catch (e) {
        if (!(e instanceof Mismatch)) throw withStderr(e, session);
        const small = await shrink(before, ops, excuses, 40, compat).catch(() => null);
        const lines = [
          `profile ${compat}, seed ${seed}, sequence ${seq}: ${e.message}`,
          small
            ? `shrunk to ${small.ops.length} operation(s), failing with: ${small.mismatch.message}`
            : `(does not reproduce alone: depends on the state earlier sequences left; full sequence below)`,
          ...(small?.ops ?? ops).map((o, i) => `  ${i}: ${describeOp(o)}`),
        ];
        if (small) {
          const t = small.mismatch.transcript;
          lines.push(
            `qtest lines of the shrunk run (last 80 of ${t.length}):`,
            ...t.slice(-80).map((l) => `  ${l}`),
          );
        }
        expect.fail(lines.join("\n"));
      }
      process.stdout.write(
        `differential (${compat}): ${seq} sequences, ${session.pair.compared} comparisons, all equal\n`,
      );
    });
  });
}
