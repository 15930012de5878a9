/**
 * The long blkif ring stress: frontend and backend on separate worker threads, a million requests by default.
 *
 *   tsx scripts/pv-stress.ts [--requests N] [--abi x86_64-abi|x86_32-abi] [--pages P] [--seed S] [--spin N]
 *                            [--no-grants] [--backend ring|blkback]
 *
 * By default every data and ring page is granted, mapped and revoked through grant table v1; --no-grants
 * passes guest frame numbers instead and measures the ring transport alone. --backend blkback serves the ring
 * with blkback's data path (src/xenblk/blkback-io.ts) on the backend worker instead of the ring-level backend.
 *
 * Prints a summary; exits 1 on any lost, duplicated or corrupted request or response.
 */
import { parseArgs } from "node:util";
import type { BlkifAbi } from "../src/xenblk/abi.ts";
import { runRingStress } from "../test/support/xenblk/worker-stress.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "1000000" },
    abi: { type: "string", default: "x86_64-abi" },
    pages: { type: "string", default: "1" },
    seed: { type: "string", default: "1" },
    spin: { type: "string", default: "2000" },
    "no-grants": { type: "boolean", default: false },
    backend: { type: "string", default: "ring" },
  },
});
const abi = values.abi as BlkifAbi;
const backend = values.backend as "ring" | "blkback";
if (backend !== "ring" && backend !== "blkback") {
  console.error(`--backend must be ring or blkback`);
  process.exit(2);
}
if (abi !== "x86_64-abi" && abi !== "x86_32-abi") {
  console.error(`--abi must be x86_64-abi or x86_32-abi`);
  process.exit(2);
}
const r = await runRingStress({
  requests: Number(values.requests),
  abi,
  ringPages: Number(values.pages),
  seed: Number(values.seed),
  maxSpin: Number(values.spin),
  grants: !values["no-grants"],
  backend,
});
const f = r.frontend;
const b = r.backend;
console.log(
  `${r.config.requests} requests (${f.reads} reads, ${f.writes} writes, ${f.flushes} flushes, ` +
    `${(f.sectors / 2048).toFixed(0)} MiB), ${r.config.abi}, ${r.config.ringPages}-page ring, ` +
    (r.config.backend === "blkback"
      ? "blkback"
      : `ring-level backend, ${r.config.grants ? "grant table v1" : "frame numbers as grant refs"}`),
);
console.log(
  `frontend ${f.ms.toFixed(0)} ms (${Math.round(r.requestsPerSecond)} req/s), backend ${b.ms.toFixed(0)} ms`,
);
console.log(
  `answered out of order: ${f.reordered}; final-check races caught: ${f.finalCheckRaces + b.finalCheckRaces}`,
);
if (r.toBackend && r.toFrontend) {
  console.log(
    `events to backend: ${r.toBackend.sends} sends, ${r.toBackend.wakeups} wake-ups; ` +
      `to frontend: ${r.toFrontend.sends} sends, ${r.toFrontend.wakeups} wake-ups`,
  );
} else {
  console.log(`events to backend: ${f.notifies}; to frontend: ${b.notifies}`);
}
const ok = f.ok && b.ok && r.diskMismatches === 0 && b.completed === r.config.requests;
for (const e of [...f.errors, ...b.errors]) console.error(`error: ${e}`);
if (r.diskMismatches)
  console.error(`error: ${r.diskMismatches} disk sectors differ from the frontend's model`);
console.log(ok ? "OK: no lost, duplicated or corrupted request or response" : "FAILED");
process.exit(ok ? 0 : 1);
