/**
 * The child of the durability tests: writes through the emulated disk paths to a raw image until it is killed,
 * and reports on stdout, one line each:
 *   READY                      the disk is up
 *   A <gen> <lba> <count>      write <gen> of <count> sectors at <lba> was acknowledged to the guest
 *   F <gen>                    a flush issued after write <gen> was acknowledged completed
 * Every sector written carries (magic, lba, gen) and a gen-derived pattern, so the parent can tell which write
 * each sector of the image came from, and whether it is whole.
 *
 * Usage: node --import tsx test/durability/writer.ts <image> <ide|ide-nocache|pv> <seed>
 */
import { AtaDrive } from "../../../src/guest/ata-driver.ts";
import { Hypervisor } from "../../../src/hypervisor/hypervisor.ts";
import { createPc } from "../../../src/machine/pc.ts";
import { AsyncEngine, RawImageBackend, SyncEngine } from "../../../src/storage/index.ts";
import { createPvMachine } from "../../../src/machine/pv.ts";
import { fillSector } from "./sectors.ts";

const [image, mode, seedArg] = process.argv.slice(2);
if (!image || !mode) throw new Error("usage: writer.ts <image> <ide|ide-nocache|pv> <seed>");
let seed = Number(seedArg ?? 1) >>> 0 || 1;
const rand = (n: number) => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
};

const backend = RawImageBackend.open(image);
const SPAN = Math.min(backend.sectorCount, 4096);
const say = (line: string) => process.stdout.write(line + "\n");

function block(gen: number, lba: number, count: number): Uint8Array {
  const b = new Uint8Array(count * 512);
  for (let i = 0; i < count; i++) fillSector(b.subarray(i * 512, i * 512 + 512), lba + i, gen);
  return b;
}

interface Disk {
  write(lba: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
}

async function ideDisk(writeCache: boolean): Promise<Disk> {
  const hv = new Hypervisor({ ramSize: 8 * 1024 * 1024 });
  createPc({ hv, firmwareInit: true, primary: { master: { engine: new SyncEngine(backend) } } });
  const v = hv.vcpu(0);
  const d = new AtaDrive(v, { via: "pio", bufferSectors: 64 });
  await d.probe();
  if (!writeCache) {
    // SET FEATURES 82h: disable the volatile write cache (ACS §7.48.4); non-data, completes at once.
    v.outb(0x1f1, 0x82);
    v.outb(0x1f6, 0xe0);
    v.outb(0x1f7, 0xef);
    const st = v.inb(0x1f7);
    if (st & 0x81) throw new Error(`SET FEATURES 82h failed: status ${st.toString(16)}`);
  }
  return { write: (lba, data) => d.write(lba, data), flush: () => d.flush() };
}

async function pvDisk(): Promise<Disk> {
  const m = await createPvMachine({ engine: new AsyncEngine(backend), queues: 2 });
  return { write: (lba, data) => m.front.write(lba, data), flush: () => m.front.flush() };
}

const disk = mode === "pv" ? await pvDisk() : await ideDisk(mode !== "ide-nocache");
say("READY");
let gen = 0;
for (;;) {
  // A few writes in flight at once on PV (the ring carries them concurrently), one at a time on IDE.
  const n = mode === "pv" ? 1 + rand(4) : 1;
  const batch = Array.from({ length: n }, () => {
    const count = 1 + rand(8);
    const lba = rand(SPAN - count);
    return { gen: ++gen, lba, count };
  });
  await Promise.all(
    batch.map(async (w) => {
      await disk.write(w.lba, block(w.gen, w.lba, w.count));
      say(`A ${w.gen} ${w.lba} ${w.count}`);
    }),
  );
  if (rand(4) === 0) {
    const upTo = gen;
    await disk.flush();
    say(`F ${upTo}`);
  }
}
