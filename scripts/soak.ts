/**
 * The long soak: a million mixed requests over PV (async engine, 4 queues, indirect segments, random faults and
 * latency) and IDE (PIO, REP string I/O and DMA, sync and async engines, random faults), every sector checked
 * against a shadow copy; then SIGKILL durability trials at random points on all three write paths.
 *
 *   node --expose-gc --import tsx scripts/soak.ts [--requests N] [--seed S] [--kills K]
 *
 * Exits 1 on any lost, duplicated or corrupted sector or request, on a lost durable write, or when the heap after
 * GC grew by more than 32 MiB between the first tenth of the run and its end.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { killTrial, type WriterMode } from "../test/support/durability/kill.ts";
import { runSoak } from "../test/support/soak/soak.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "1000000" },
    seed: { type: "string" },
    kills: { type: "string", default: "30" },
  },
});
const requests = Number(values.requests);
const kills = Number(values.kills);
const seed = values.seed !== undefined ? Number(values.seed) : (Math.random() * 0x7fffffff) | 0;
console.log(`xenide soak: ${requests} requests, ${kills} kill trials, seed ${seed}`);
if (!(globalThis as { gc?: unknown }).gc)
  console.log("(run with node --expose-gc for heap figures after GC)");

const r = await runSoak({ requests, seed, log: (l) => console.log(l) });
console.log(JSON.stringify(r, null, 2));
let bad = r.lost + r.corrupted + r.duplicated > 0;
const growth = r.heapEndMiB - r.heapEarlyMiB;
if (growth > 32) {
  console.error(`heap grew by ${growth} MiB over the run`);
  bad = true;
}

const dir = mkdtempSync(join(tmpdir(), "xenide-soak-"));
const modes: WriterMode[] = ["ide", "ide-nocache", "pv"];
let survived = 0;
let durable = 0;
try {
  for (let i = 0; i < kills; i++) {
    const mode = modes[i % modes.length]!;
    const ms = ((seed + i * 7919) >>> 0) % 800;
    try {
      const t = await killTrial(join(dir, `kill-${i}.img`), mode, seed + i, ms);
      survived++;
      durable += t.durableSectors;
      console.log(
        `kill ${i + 1}/${kills}: ${mode}, ${ms} ms after the first flush: ${t.acked} acknowledged, ${t.flushes} flushes, ${t.durableSectors} durable sectors intact`,
      );
    } catch (e) {
      bad = true;
      console.error(`kill ${i + 1}/${kills}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(
  `\n| requests soaked | PV | IDE | faults injected | sectors checked | lost | duplicated | corrupted | heap (MiB, early → end) | kills survived |\n` +
    `|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n` +
    `| ${r.requests} | ${r.pv} | ${r.ide} | ${r.faultsInjected} | ${r.sectorsChecked} | ${r.lost} | ${r.duplicated} | ${r.corrupted} | ${r.heapEarlyMiB} → ${r.heapEndMiB} | ${survived}/${kills} (${durable} durable sectors) |`,
);
process.exitCode = bad ? 1 : 0;
