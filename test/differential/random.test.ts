/**
 * Seeded random ATA command sequences, run on QEMU 7.2 and on `xenide qtest` side by side (one process of
 * each for the whole run), comparing every reply and the settled channel state after every step, and both
 * images after every sequence. The seed is printed; a failure prints the shrunk sequence and its qtest lines.
 *
 * XENIDE_DIFF_SEED=n fixes the seed; XENIDE_DIFF_SEQS=n sets the number of sequences (default 1000);
 * XENIDE_DIFF_INPROCESS=1 serves xenide's side in this process instead of a `xenide qtest` child.
 */

import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
  describe("differential: random sequences against QEMU 7.2", () => {
    let session: Session;
    const start = patternImage(SECTORS, SEED);

    beforeAll(async () => {
      session = await Session.start([start], DEVIATION_EXCUSES, process.env.XENIDE_DIFF_INPROCESS === "1");
    });
    afterAll(async () => {
      await session?.stop();
    });

    it(`${SEQS} seeded sequences agree (seed ${SEED})`, { timeout: 15 * 60_000 }, async () => {
      process.stdout.write(
        `differential: seed ${SEED} (XENIDE_DIFF_SEED=${SEED} to replay), ${SEQS} sequences\n`,
      );
      const rnd = prng(SEED);
      let before = new Uint8Array(session.images.read("qemu", 0));
      let ops: Op[] = [];
      let seq = 0;
      try {
        for (; seq < SEQS; seq++) {
          ops = genSequence(rnd, { sectors: SECTORS }, 2 + (rnd() % 5));
          await session.run(ops, `seq ${seq}`);
          session.compareImages(`seq ${seq}`);
          before = new Uint8Array(session.images.read("qemu", 0));
        }
      } catch (e) {
        if (!(e instanceof Mismatch)) throw withStderr(e, session);
        const small = await shrink(before, ops, DEVIATION_EXCUSES).catch(() => null);
        const lines = [
          `seed ${SEED}, sequence ${seq}: ${e.message}`,
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
        `differential: ${seq} sequences, ${session.pair.compared} comparisons, all equal\n`,
      );
    });
  });
}
