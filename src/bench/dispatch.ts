/**
 * How many port exits per second the emulator turns around: a vCPU reading the IDE alternate status register
 * in a loop, each read a full exit (ioreq encoded into the vCPU's slot, handed to the ioreq server, decoded,
 * dispatched on the port bus to the PIIX IDE device, answered, slot returned to NONE) — next to the same reads
 * made straight on the port bus, which is the floor any ioreq encoding adds to.
 */
import { exitsOf } from "../hypervisor/accounting.ts";
import { buildMachine } from "../machine/builder.ts";
import { openAtaPath } from "../machine/disk-path.ts";
import { NullBackend } from "../storage/index.ts";
import { spread } from "./stats.ts";
import type { DispatchResult } from "./types.ts";

const ALT_STATUS = 0x3f6;
const BATCH = 4096;

/** Calls `fn(BATCH)` repeatedly for `budgetMs`; returns calls per second of wall time and of CPU time. */
function rate(
  fn: (n: number) => number,
  budgetMs: number,
): { perSec: number; perCpuSec: number; sink: number } {
  let sink = 0;
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + budgetMs;
  let t = t0;
  while (t < end) {
    sink ^= fn(BATCH);
    n += BATCH;
    t = performance.now();
  }
  const cpu = process.cpuUsage(c0);
  return { perSec: n / ((t - t0) / 1000), perCpuSec: n / ((cpu.user + cpu.system) / 1e6), sink };
}

export function measureDispatch(
  repeats: number,
  budgetMs: number,
): Omit<DispatchResult, "pioWorkloadExitsPerSec"> {
  const { hv } = buildMachine({
    ram: 1 << 20,
    ide: [{ position: "primary-master", medium: { backend: new NullBackend(2048) } }],
    pc: { firmwareInit: true },
  });
  const v = hv.vcpu(0);
  const bus = hv.bus;
  const viaIoreq = (n: number): number => {
    let x = 0;
    for (let i = 0; i < n; i++) x ^= v.inb(ALT_STATUS);
    return x;
  };
  const bare = (n: number): number => {
    let x = 0;
    for (let i = 0; i < n; i++) x ^= bus.read(ALT_STATUS, 1);
    return x;
  };
  // Warm both loops up before timing either.
  rate(viaIoreq, 50);
  rate(bare, 50);
  const full: number[] = [];
  const fullCpu: number[] = [];
  const direct: number[] = [];
  let sink = 0;
  for (let r = 0; r < repeats; r++) {
    const a = rate(viaIoreq, budgetMs);
    const b = rate(bare, budgetMs);
    full.push(a.perSec);
    fullCpu.push(a.perCpuSec);
    direct.push(b.perSec);
    sink ^= a.sink ^ b.sink;
  }
  if (sink === 0x7fffffff) console.log(""); // keeps the loops' results alive
  return {
    ioreqExitsPerSec: spread(full),
    bareDispatchPerSec: spread(direct),
    ioreqExitsPerCpuSec: spread(fullCpu),
  };
}

/**
 * Port exits per second of CPU time inside a real 16-bit PIO READ workload: the guest ATA driver (as a user's
 * program reaches it through `openAtaPath`) reading 64 KiB commands from the null disk, 256 data-port exits per
 * sector plus the task-file and status exits of each command. CPU time, not wall time: other processes on the
 * machine do not count against it.
 */
export async function measurePioWorkload(repeats: number, budgetMs: number) {
  const m = buildMachine({
    ide: [{ position: "primary-master", medium: { backend: new NullBackend(65536) } }],
  });
  try {
    const path = await openAtaPath(m, "pio");
    const drive = path.drive;
    const buf = drive.allocBuffer(65536);
    const acct = m.hv.acct;
    let lba = 0;
    const run = async (ms: number): Promise<number> => {
      const before = acct.snapshot();
      const c0 = process.cpuUsage();
      const end = performance.now() + ms;
      while (performance.now() < end) {
        await drive.readInto(lba, buf);
        lba = (lba + 128) % 65536;
      }
      const cpu = process.cpuUsage(c0);
      return exitsOf(acct.since(before)) / ((cpu.user + cpu.system) / 1e6);
    };
    await run(Math.min(200, budgetMs)); // JIT warm-up
    const rates: number[] = [];
    for (let r = 0; r < repeats; r++) rates.push(await run(budgetMs));
    return spread(rates);
  } finally {
    await m.close();
  }
}
