// Where the protocol's own time goes: a V8 CPU profile of PV 4 KiB reads or IDE DMA 64 KiB commands on the
// null disk (no storage work), through the package's public entry point as a user's program drives them.
//
//   node bench/null-profile.mjs [pv|dma] [--ios 1000000] [--top 25]
//
// XENIDE_ENTRY=path/to/index.mjs profiles another build.
//
// Prints the time per I/O, the functions with the most self time, and the share of the groups that a
// rewrite of one part would address: the blkif ring's request/response encoding and segment mapping (PV),
// the PRD table walk and the port-exit handling (DMA). Run `npm run build` first (it reads dist/index.mjs).
import { Session } from "node:inspector/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { takeOption } from "./options.mjs";

const args = process.argv.slice(2);
const IOS = Number(takeOption(args, "ios", 1_000_000));
const TOP = Number(takeOption(args, "top", 25));
const which = args[0] ?? "pv";
if (which !== "pv" && which !== "dma") {
  console.error("null-profile: the path is pv or dma");
  process.exit(2);
}

// XENIDE_ENTRY: another build of the package (or src/index.ts under a TypeScript loader).
const entry = process.env.XENIDE_ENTRY
  ? pathToFileURL(path.resolve(process.env.XENIDE_ENTRY)).href
  : new URL("../dist/index.mjs", import.meta.url).href;
const x = await import(entry);

/** Run `n` I/Os on the chosen path; resolves when the last completes. */
let run;
let close;
if (which === "pv") {
  const m = x.buildMachine({ pc: false, pv: [{ medium: { backend: new x.NullBackend(65536) } }] });
  const p = await x.openPvPath(m);
  const buf = p.front.allocBuffer(4096);
  let k = 0;
  // blkfront's callback API, one request in flight (QD1), as `xenide bench` drives it.
  run = (n) =>
    new Promise((resolve, reject) => {
      let i = 0;
      const done = (e) => {
        if (e) return reject(e);
        if (++i < n) p.front.submitRead((k++ % 8000) * 8, buf, done);
        else resolve();
      };
      p.front.submitRead(0, buf, done);
    });
  close = async () => (await p.close(), await m.close());
} else {
  const m = x.buildMachine({
    ide: [{ position: "primary-master", medium: { backend: new x.NullBackend(131072) } }],
    pc: { firmwareInit: true },
  });
  const p = await x.openAtaPath(m, "dma");
  const buf = p.drive.allocBuffer(65536);
  let k = 0;
  run = async (n) => {
    for (let i = 0; i < n; i++) await p.drive.readInto((k++ % 1000) * 128, buf);
  };
  close = () => m.close();
}

await run(Math.min(200_000, IOS)); // JIT warm-up, outside the profile
const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.setSamplingInterval", { interval: 100 });
await session.post("Profiler.start");
const t0 = performance.now();
await run(IOS);
const us = ((performance.now() - t0) * 1000) / IOS;
const { profile } = await session.post("Profiler.stop");
session.disconnect();
await close();

// Self time per function (name and line), from the samples.
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map();
let total = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const n = byId.get(profile.samples[i]);
  const d = profile.timeDeltas[i] ?? 0;
  total += d;
  const cf = n.callFrame;
  const key = cf.functionName || "(anonymous)";
  self.set(key, (self.get(key) ?? 0) + d);
}
const share = (re) => [...self].filter(([k]) => re.test(k)).reduce((s, [, v]) => s + v, 0) / total;
console.log(
  `${which === "pv" ? "PV 4 KiB reads" : "IDE DMA 64 KiB commands"} on the null disk: ${us.toFixed(3)} us per I/O`,
);
console.log(`self time, top ${TOP} of ${self.size} functions:`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, TOP))
  console.log(`${((100 * v) / total).toFixed(1).padStart(6)}%  ${k}`);
const groups =
  which === "pv"
    ? {
        "ring encode/decode and segment mapping":
          /^(encode|decode)(Request|Response)|^mapSegments$|^unconsumedRequests$|^readRequest$/,
      }
    : {
        "PRD table walk": /^(walk|walkQemu|buildPrdTable|push|finish)$/,
        "ioreq handling": /^(handle|take|serve|publishPio)$/,
      };
for (const [name, re] of Object.entries(groups)) {
  const s = share(re);
  console.log(`${name}: ${(100 * s).toFixed(1)}% of the time, ${(s * us).toFixed(3)} us per I/O`);
}
