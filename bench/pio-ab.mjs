// Port exits per CPU-second in the real 16-bit PIO READ workload (as `xenide bench` measures it: the guest ATA
// driver through openAtaPath(m, "pio") reading 64 KiB commands from the null disk), for one or more builds of
// the package in alternation, so that the machine's drift hits each build alike:
//
//   node bench/pio-ab.mjs [--rounds 10] [--slice 300] [ENTRY ...]
//
// Each ENTRY is a bundle of the package (default dist/index.mjs). Each round measures every entry for one slice
// of wall time, in turn (the order alternating between rounds); the report gives each entry's median, and each
// entry's median ratio to the first. Two copies of one build measured this way differ by up to ~7% (the build
// loaded first faster), so run both orders before reading a small difference. A copy of the old bundle can be
// made with esbuild as scripts/build.mjs does, into any directory.
import path from "node:path";
import { pathToFileURL } from "node:url";

import { takeOption } from "./options.mjs";

const args = process.argv.slice(2);
const ROUNDS = Number(takeOption(args, "rounds", 10));
const SLICE = Number(takeOption(args, "slice", 300));
const entries = args.length ? args : [new URL("../dist/index.mjs", import.meta.url).pathname];

const median = (a) => {
  const s = [...a].sort((p, q) => p - q);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function setup(entry) {
  const x = await import(pathToFileURL(path.resolve(entry)).href);
  const m = x.buildMachine({
    ide: [{ position: "primary-master", medium: { backend: new x.NullBackend(65536) } }],
  });
  const p = await x.openAtaPath(m, "pio");
  const buf = p.drive.allocBuffer(65536);
  const acct = m.hv.acct;
  let lba = 0;
  /** Exits per CPU-second over `ms` of wall time. */
  const run = async (ms) => {
    const before = acct.snapshot();
    const c0 = process.cpuUsage();
    const end = performance.now() + ms;
    while (performance.now() < end) {
      await p.drive.readInto(lba, buf);
      lba = (lba + 128) % 65536;
    }
    const cpu = process.cpuUsage(c0);
    return x.exitsOf(acct.since(before)) / ((cpu.user + cpu.system) / 1e6);
  };
  return { entry, run, close: () => m.close() };
}

const runs = [];
for (const e of entries) runs.push(await setup(e));
for (const r of runs) await r.run(200); // JIT warm-up
const rates = runs.map(() => []);
for (let round = 0; round < ROUNDS; round++) {
  // Alternate the order each round so that no build always runs first.
  const order = runs.map((_, i) => (round % 2 ? runs.length - 1 - i : i));
  for (const i of order) rates[i].push(await runs[i].run(SLICE));
}
for (let i = 0; i < runs.length; i++) {
  const ratio = median(rates[i].map((v, k) => v / rates[0][k]));
  console.log(
    `${runs[i].entry}: median ${(median(rates[i]) / 1e6).toFixed(2)} M exits/CPU-s ` +
      `(min ${(Math.min(...rates[i]) / 1e6).toFixed(2)}, max ${(Math.max(...rates[i]) / 1e6).toFixed(2)})` +
      (i ? `, ratio to first ${ratio.toFixed(3)}x` : ""),
  );
}
for (const r of runs) await r.close();
