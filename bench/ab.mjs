// Interleaved A/B rounds in one process, through the package's public entry point only (dist/index.mjs, or
// the file named by XENIDE_ENTRY): each round times the node:fs baseline and then each path for the same
// slice, so load on the machine hits both alike, and reports the median of the per-round ratios.
//
//   node bench/ab.mjs [--rounds 15] [--slice 100] [--only pv4k,pv64k,dma64k,pio,async]
//
// Baselines read into page-aligned memory (a WebAssembly.Memory, as guest RAM is); RAM is the default a
// user gets. The null-disk rows are the protocol alone; "floor" = baseline time + null-disk time per I/O.
// "async": 4 KiB random O_DIRECT reads, readSync at QD1 against libuv callbacks at QD32 (the floor of the async
// target: what the disk and libuv give a queue of 32 with no protocol) and PV on the sync and async engines at
// QD32. libuv runs fs requests on io_uring only when the process starts with UV_USE_IO_URING=1.
//
// `xenide bench` measures the same targets and floors in interleaved rounds of its own (src/bench/interleave.ts,
// the figures its targets and floor probes print); this script stays a standalone cross-check through the
// package's entry point, with its rounds and slice on the command line, and adds the PIO exit rate.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { takeOption } from "./options.mjs";

const args = process.argv.slice(2);
const ROUNDS = Number(takeOption(args, "rounds", 15));
const SLICE = Number(takeOption(args, "slice", 100));
const ONLY = takeOption(args, "only", "pv4k,pv64k,dma64k,pio,async").split(",");
const entry = process.env.XENIDE_ENTRY ?? new URL("../dist/index.mjs", import.meta.url).pathname;
const x = await import(pathToFileURL(path.resolve(entry)).href);

const dir = fs.mkdtempSync(path.join(process.env.XENIDE_AB_DIR ?? path.join(process.cwd(), "tmp"), "ab-"));
const IMG = path.join(dir, "ab.img");
const SIZE = 64 << 20;
{
  const fd = fs.openSync(IMG, "w");
  const chunk = new Uint8Array(1 << 20);
  for (let o = 0; o < SIZE; o += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4096) chunk[i] = (o + i) >>> 12;
    fs.writeSync(fd, chunk, 0, chunk.length, o);
  }
  fs.closeSync(fd);
}
process.on("exit", () => fs.rmSync(dir, { recursive: true, force: true }));

let seed = 0x1234567;
const rnd = () => ((seed ^= seed << 13), (seed ^= seed >>> 17), (seed ^= seed << 5), seed >>> 0);
const lbaRand = (bs) => (rnd() % (SIZE / bs)) * (bs / 512);
let seqPos = 0;
const lbaSeq = (bs) => {
  const l = seqPos;
  seqPos = (seqPos + bs / 512) % (SIZE / 512);
  return l;
};

/** A page-aligned buffer (WebAssembly.Memory), as the default guest RAM is. */
const aligned = (n) =>
  new Uint8Array(
    new WebAssembly.Memory({ initial: Math.ceil(n / 65536), maximum: Math.ceil(n / 65536) }).buffer,
    0,
    n,
  );

function baseline(bs, pick) {
  const fd = fs.openSync(IMG, "r");
  const buf = aligned(bs);
  return {
    name: `readSync ${bs / 1024} KiB`,
    run(ms) {
      const end = performance.now() + ms;
      let n = 0;
      while (performance.now() < end) {
        for (let i = 0; i < 16; i++) fs.readSync(fd, buf, 0, bs, pick(bs) * 512);
        n += 16;
      }
      return n;
    },
  };
}

async function pv(bs, pick, backendKind) {
  const medium =
    backendKind === "null"
      ? { backend: new x.NullBackend(SIZE / 512) }
      : { image: IMG, lock: false, readOnly: true };
  const m = x.buildMachine({ pc: false, pv: [{ medium }] });
  const p = await x.openPvPath(m);
  const front = p.front;
  const buf = front.allocBuffer(bs);
  return {
    name: `PV ${bs / 1024} KiB ${backendKind}`,
    ram: m.hv.mem.pageAligned,
    run(ms) {
      return new Promise((resolve, reject) => {
        const end = performance.now() + ms;
        let n = 0;
        const done = (e) => {
          if (e) return reject(e);
          n++;
          if ((n & 15) !== 0 || performance.now() < end) front.submitRead(pick(bs), buf, done);
          else resolve(n);
        };
        front.submitRead(pick(bs), buf, done);
      });
    },
    close: async () => {
      await p.close();
      await m.close();
    },
  };
}

async function ide(via, bs, pick, backendKind) {
  const medium =
    backendKind === "null"
      ? { backend: new x.NullBackend(SIZE / 512) }
      : { image: IMG, lock: false, readOnly: true };
  const m = x.buildMachine({ ide: [{ position: "primary-master", medium }] });
  const p = await x.openAtaPath(m, via);
  const drive = p.drive;
  const buf = drive.allocBuffer(bs);
  return {
    name: `IDE ${via} ${bs / 1024} KiB ${backendKind}`,
    ram: m.hv.mem.pageAligned,
    hv: m.hv,
    async run(ms) {
      const end = performance.now() + ms;
      let n = 0;
      while (performance.now() < end) {
        await drive.readInto(pick(bs), buf);
        n++;
      }
      return n;
    },
    close: () => m.close(),
  };
}

const median = (a) => {
  const s = [...a].sort((p, q) => p - q);
  return s[s.length >> 1];
};

async function compare(label, base, paths) {
  const us = new Map();
  for (const p of [base, ...paths]) us.set(p, []);
  // Warm-up: 3 slices each.
  for (let r = 0; r < 3; r++) for (const p of [base, ...paths]) await p.run(SLICE);
  for (let r = 0; r < ROUNDS; r++) {
    for (const p of [base, ...paths]) {
      const t = performance.now();
      const n = await p.run(SLICE);
      us.get(p).push(((performance.now() - t) * 1000) / n);
    }
  }
  const b = us.get(base);
  console.log(`\n${label} (${ROUNDS} interleaved rounds of ${SLICE} ms; load ${os.loadavg()[0].toFixed(1)})`);
  console.log(`  ${base.name.padEnd(26)} ${median(b).toFixed(2)} us/IO`);
  for (const p of paths) {
    const a = us.get(p);
    const ratios = a.map((v, i) => b[i] / v);
    console.log(
      `  ${p.name.padEnd(26)} ${median(a).toFixed(2)} us/IO  ratio ${median(ratios).toFixed(3)}x ` +
        `(${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})  RAM ${p.ram ? "page-aligned" : "UNALIGNED"}`,
    );
  }
  const nul = paths.find((p) => /null/.test(p.name));
  if (nul) {
    const floor = median(b) + median(us.get(nul));
    console.log(
      `  floor (readSync + protocol on the null disk) ${floor.toFixed(2)} us/IO = ${(median(b) / floor).toFixed(3)}x`,
    );
  }
  for (const p of paths) await p.close?.();
}

if (ONLY.includes("pv4k"))
  await compare("PV 4 KiB random reads QD1, sync engine", baseline(4096, lbaRand), [
    await pv(4096, lbaRand, "raw"),
    await pv(4096, lbaRand, "null"),
  ]);
if (ONLY.includes("pv64k"))
  await compare("PV 64 KiB sequential reads QD1, sync engine", baseline(65536, lbaSeq), [
    await pv(65536, lbaSeq, "raw"),
    await pv(65536, lbaSeq, "null"),
  ]);
if (ONLY.includes("dma64k"))
  await compare("IDE DMA 64 KiB sequential reads, sync engine", baseline(65536, lbaSeq), [
    await ide("dma", 65536, lbaSeq, "raw"),
    await ide("dma", 65536, lbaSeq, "null"),
  ]);
if (ONLY.includes("pio")) {
  // Port exits per CPU-second on a real 16-bit PIO READ workload (null disk: the exits, not the medium).
  const p = await ide("pio", 65536, lbaSeq, "null");
  for (let r = 0; r < 3; r++) await p.run(SLICE);
  const rates = [];
  for (let r = 0; r < ROUNDS; r++) {
    const before = p.hv.acct.snapshot();
    const c0 = process.cpuUsage();
    await p.run(SLICE);
    const c = process.cpuUsage(c0);
    rates.push(x.exitsOf(p.hv.acct.since(before)) / ((c.user + c.system) / 1e6));
  }
  console.log(
    `\nIDE PIO 16-bit 64 KiB reads, null disk: ${(median(rates) / 1e6).toFixed(2)} M port exits per CPU-second (${(Math.min(...rates) / 1e6).toFixed(1)}-${(Math.max(...rates) / 1e6).toFixed(1)})`,
  );
  await p.close();
}

if (ONLY.includes("async")) {
  // 4 KiB random O_DIRECT reads at QD32: the floor (libuv) and the target (PV async against PV sync).
  const QD = 32;
  const BS = 4096;
  const directFd = () => fs.openSync(IMG, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  const bufs = (n) => {
    const all = aligned(n * BS);
    return Array.from({ length: n }, (_, i) => all.subarray(i * BS, (i + 1) * BS));
  };
  /** Keep `qd` reads in flight for `ms`, each issuing the next from its completion; resolves to the count. */
  const inFlight = (qd, ms, issue) =>
    new Promise((resolve, reject) => {
      const end = performance.now() + ms;
      let n = 0;
      let active = 0;
      let stop = false;
      const start = (slot) => {
        active++;
        issue(slot, (e) => {
          active--;
          if (e) return reject(e);
          n++;
          if (!stop && performance.now() >= end) stop = true;
          if (!stop) start(slot);
          else if (active === 0) resolve(n);
        });
      };
      for (let s = 0; s < qd; s++) start(s);
    });
  const syncFd = directFd();
  const syncBuf = bufs(1)[0];
  const base = {
    name: "readSync QD1 O_DIRECT",
    run(ms) {
      const end = performance.now() + ms;
      let n = 0;
      while (performance.now() < end) {
        fs.readSync(syncFd, syncBuf, 0, BS, lbaRand(BS) * 512);
        n++;
      }
      return n;
    },
    close: () => fs.closeSync(syncFd),
  };
  const uvFd = directFd();
  const uvBufs = bufs(QD);
  const libuv = {
    name: `fs.read QD${QD} O_DIRECT`,
    run: (ms) => inFlight(QD, ms, (s, done) => fs.read(uvFd, uvBufs[s], 0, BS, lbaRand(BS) * 512, done)),
    close: () => fs.closeSync(uvFd),
  };
  const pvq = async (engine) => {
    const m = x.buildMachine({
      pc: false,
      pv: [{ medium: { image: IMG, lock: false, readOnly: true, direct: true }, engine }],
    });
    const p = await x.openPvPath(m);
    const views = Array.from({ length: QD }, () => p.front.allocBuffer(BS));
    return {
      name: `PV ${engine} QD${QD} O_DIRECT`,
      ram: m.hv.mem.pageAligned,
      run: (ms) => inFlight(QD, ms, (s, done) => p.front.submitRead(lbaRand(BS), views[s], done)),
      close: async () => {
        await p.close();
        await m.close();
      },
    };
  };
  const paths = [base, libuv, await pvq("sync"), await pvq("async")];
  const us = new Map(paths.map((p) => [p, []]));
  for (let r = 0; r < 3; r++) for (const p of paths) await p.run(SLICE);
  for (let r = 0; r < ROUNDS; r++) {
    for (const p of paths) {
      const t = performance.now();
      const n = await p.run(SLICE);
      us.get(p).push(((performance.now() - t) * 1000) / n);
    }
  }
  const ratio = (a, b) => {
    const rs = us.get(b).map((v, i) => v / us.get(a)[i]);
    return `${median(rs).toFixed(2)}x (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})`;
  };
  const uring = /^[1-9]/.test(process.env.UV_USE_IO_URING ?? "") ? "io_uring" : "thread pool, io_uring off";
  console.log(
    `\n4 KiB random O_DIRECT reads (${ROUNDS} interleaved rounds of ${SLICE} ms; libuv: ${uring}, ` +
      `UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}; load ${os.loadavg()[0].toFixed(1)})`,
  );
  for (const p of paths) console.log(`  ${p.name.padEnd(26)} ${(1e6 / median(us.get(p))).toFixed(0)} IOPS`);
  const [, uv, pvS, pvA] = paths;
  console.log(`  floor: libuv QD${QD} / readSync QD1   ${ratio(uv, base)}`);
  console.log(`  target: PV async / PV sync        ${ratio(pvA, pvS)}   (goal >= 3x)`);
  console.log(`  PV async / libuv QD${QD}            ${ratio(pvA, uv)}`);
  console.log(`  PV sync / readSync QD1           ${ratio(pvS, base)}`);
  for (const p of paths) await p.close?.();
}
