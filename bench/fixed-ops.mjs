// A fixed number of I/Os through one path, for instruction counts that do not depend on the machine's load:
//
//   valgrind --tool=callgrind node --single-threaded bench/fixed-ops.mjs pv-null 2000
//   valgrind --tool=callgrind node --single-threaded bench/fixed-ops.mjs pv-null 22000
//
// (instructions of the second run - the first) / 20000 = instructions per I/O, start-up cancelled out.
// --single-threaded makes V8 compile on the main thread, so both runs tier up at the same points. Paths:
// pv-null (4 KiB PV reads), pv64-null (64 KiB PV reads), dma-null (64 KiB IDE DMA reads), pio-null (4 KiB 16-bit
// PIO reads: 2,064 port exits each, 2,048 of them data-port reads; divide by 2,064 for instructions per exit),
// all on the null disk, through the package's entry point (dist/index.mjs, or XENIDE_ENTRY).
// bench/pio-ab.mjs measures the PIO workload's exits per CPU-second for two builds in alternation.
import path from "node:path";
import { pathToFileURL } from "node:url";

const entry = process.env.XENIDE_ENTRY ?? new URL("../dist/index.mjs", import.meta.url).pathname;
const x = await import(pathToFileURL(path.resolve(entry)).href);
const [kind, count] = process.argv.slice(2);
const n = Number(count);
if (!["pv-null", "pv64-null", "dma-null", "pio-null"].includes(kind) || !(n > 0)) {
  console.error("usage: node bench/fixed-ops.mjs pv-null|pv64-null|dma-null|pio-null COUNT");
  process.exit(2);
}
const SECTORS = 131072;
if (kind === "pv-null" || kind === "pv64-null") {
  const bs = kind === "pv-null" ? 4096 : 65536;
  const m = x.buildMachine({ pc: false, pv: [{ medium: { backend: new x.NullBackend(SECTORS) } }] });
  const p = await x.openPvPath(m);
  const buf = p.front.allocBuffer(bs);
  let lba = 0;
  await new Promise((resolve, reject) => {
    let i = 0;
    const done = (e) => {
      if (e) return reject(e);
      if (++i === n) return resolve();
      lba = (lba + bs / 512) % SECTORS;
      p.front.submitRead(lba, buf, done);
    };
    p.front.submitRead(lba, buf, done);
  });
  await p.close();
  await m.close();
} else {
  const m = x.buildMachine({
    ide: [{ position: "primary-master", medium: { backend: new x.NullBackend(SECTORS) } }],
  });
  const p = await x.openAtaPath(m, kind === "dma-null" ? "dma" : "pio");
  const bs = kind === "dma-null" ? 65536 : 4096;
  const buf = p.drive.allocBuffer(bs);
  let lba = 0;
  for (let i = 0; i < n; i++) {
    await p.drive.readInto(lba, buf);
    lba = (lba + bs / 512) % SECTORS;
  }
  await m.close();
}
