/**
 * Survey mode for the differential suite: run seeded random sequences against QEMU and xenide, and instead of
 * stopping at the first mismatch, restart both on the failing sequence's start image and go on, then print
 * each distinct kind of mismatch once with its shortest example. For triage; the test is random.test.ts.
 *
 *   npx tsx test/differential/survey.ts [SEQS] [SEED] [xenide|qemu-7.2]
 *
 * In the "qemu-7.2" profile nothing is excused but what the survey has already seen.
 */
import { patternImage, prng } from "./harness.ts";
import { DEVIATION_EXCUSES } from "./excuses.ts";
import { describeOp, genSequence, type Op } from "./ops.ts";
import { type Excuse, Mismatch } from "./pair.ts";
import { Session } from "./session.ts";
import { COMPAT_PROFILES, type CompatProfile, DEFAULT_COMPAT } from "../../src/ide/compat.ts";

const SEQS = Number(process.argv[2] ?? 200);
const SEED = Number(process.argv[3] ?? 1);
const SECTORS = 2048;
const COMPAT = (process.argv[4] ?? DEFAULT_COMPAT) as CompatProfile;
if (!COMPAT_PROFILES.includes(COMPAT)) throw new Error(`unknown profile ${COMPAT}`);

const kinds = new Map<string, { count: number; example: string; ops: Op[] }>();
/** Once seen, a kind of mismatch (where, QEMU value, xenide value) is forgiven so the survey finds the next. */
const seen = new Set<string>();
const norm = (what: string): string => {
  // "seq 3 op 4 (pioIn cmd=0x20 lba=...) command: err" -> "pioIn cmd=0x20 command: err"
  const m = /^(?:seq|replay) (?:\d+ )?op \d+ \| (.*?) \|(.*)$/.exec(what);
  if (!m) return what.replace(/\d+/g, "N");
  const desc = m[1]!.startsWith("{")
    ? (JSON.parse(m[1]!) as { k: string }).k
    : m[1]!.split(" ").slice(0, 2).join(" ");
  return `${desc}${m[2]!.replace(/sector \d+/g, "sector N")}`;
};
const surveyExcuse: Excuse = { id: "survey", covers: (what, q, x) => seen.has(`${norm(what)}|${q}|${x}`) };
const excuses = COMPAT === "qemu-7.2" ? [surveyExcuse] : [...DEVIATION_EXCUSES, surveyExcuse];
const rnd = prng(SEED);
let start = patternImage(SECTORS, SEED);
let s = await Session.start([start], excuses, true, COMPAT);
for (let seq = 0; seq < SEQS; seq++) {
  const ops = genSequence(rnd, { sectors: SECTORS, compat: COMPAT }, 2 + (rnd() % 5));
  try {
    await s.run(ops, `seq ${seq}`);
    s.compareImages(`seq ${seq}`);
    start = new Uint8Array(s.images.read("qemu", 0));
  } catch (e) {
    if (!(e instanceof Mismatch)) throw e;
    const what = norm(e.what);
    seen.add(`${what}|${e.qemu}|${e.xen}`);
    const k = kinds.get(what);
    if (k) k.count++;
    else {
      kinds.set(what, { count: 1, example: e.message, ops });
      console.log(`new: ${e.message}`);
    }
    await s.stop();
    s = await Session.start([start], excuses, true, COMPAT);
  }
}
await s.stop();
console.log(`seed ${SEED}, ${SEQS} sequences, ${kinds.size} kinds of mismatch`);
for (const [what, k] of [...kinds].sort((a, b) => b[1].count - a[1].count)) {
  console.log(`\n[${k.count}x] ${what}\n  e.g. ${k.example}`);
  k.ops.forEach((o, i) => console.log(`    ${i}: ${describeOp(o)}`));
}
