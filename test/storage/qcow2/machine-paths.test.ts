// The qcow2 medium behind the emulated disk paths: random writes, flushes and reads by the guest's ATA driver
// (PIO and Bus Master DMA) and by blkfront over the PV ring (with discards), into a qcow2 overlay on a raw base
// and into a fresh image, through both storage engines; then qemu-img check finds the image clean and
// qemu-img compare identical to the raw shadow, and the base is unchanged.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { buildMachine } from "../../../src/machine/builder.ts";
import { openAtaPath, openPvPath, type DiskPath } from "../../../src/machine/disk-path.ts";
import { createQcow2 } from "../../../src/storage/qcow2/index.ts";
import { fastTempDir, qemuImg, qemuIo, requireQemuUtils } from "./qemu.ts";
import { expectCleanAndEqual, rng } from "./storm.ts";

const ok = requireQemuUtils("the qcow2 disk path tests");

const SIZE = 8 << 20;

async function guestStorm(
  p: DiskPath,
  shadow: Buffer,
  ops: number,
  seed: number,
  discard?: (lba: number, count: number) => Promise<void>,
): Promise<void> {
  const r = rng(seed);
  const total = SIZE / 512;
  for (let op = 0; op < ops; op++) {
    const kind = r();
    const lba = Math.floor(r() * total);
    const count = Math.min(total - lba, 1 + Math.floor(r() * 24));
    if (kind < 0.6) {
      const data = Buffer.alloc(count * 512, (op * 13 + seed) & 0xff);
      data.writeUInt32LE(op, 0);
      await p.write(lba, data);
      data.copy(shadow, lba * 512);
    } else if (kind < 0.7 && discard) {
      await discard(lba, count);
      shadow.fill(0, lba * 512, (lba + count) * 512);
    } else if (kind < 0.8) {
      await p.flush();
    } else {
      const got = Buffer.from(await p.read(lba, count));
      expect(got.equals(shadow.subarray(lba * 512, (lba + count) * 512))).toBe(true);
    }
  }
}

(ok ? describe : describe.skip)("qcow2 through IDE and PV", () => {
  const dir = fastTempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const [via, engine] of [
    ["pio", "sync"],
    ["dma", "async"],
    ["pv", "sync"],
    ["pv", "async"],
  ] as const) {
    it(`${via} with the ${engine} engine, on an overlay of a raw base (format probed)`, async () => {
      const base = path.join(dir, `base-${via}-${engine}.raw`);
      fs.writeFileSync(base, Buffer.alloc(SIZE));
      qemuIo("raw", base, ["write -P 0x3c 0 8m"]);
      const img = path.join(dir, `top-${via}-${engine}.qcow2`);
      qemuImg([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        path.basename(base),
        "-F",
        "raw",
        img,
      ]);
      const shadow = fs.readFileSync(base);
      const before = Buffer.from(shadow);
      const disk = { medium: { image: img }, engine };
      const machine = buildMachine(
        via === "pv" ? { pc: false, pv: [disk] } : { ide: [{ position: "primary-master", ...disk }] },
      );
      try {
        const p = via === "pv" ? await openPvPath(machine) : await openAtaPath(machine, via);
        expect(p.sectors).toBe(SIZE / 512);
        const discard =
          via === "pv" && "front" in p
            ? (l: number, c: number) =>
                (p as { front: { discard(l: number, c: number): Promise<void> } }).front.discard(l, c)
            : undefined;
        await guestStorm(p, shadow, via === "pio" ? 150 : 400, 5, discard);
        await p.close();
      } finally {
        await machine.close();
      }
      expectCleanAndEqual(img, shadow, dir);
      expect(fs.readFileSync(base).equals(before)).toBe(true);
    });
  }

  it("a fresh xenide image named with format qcow2, written over PV", async () => {
    const img = path.join(dir, "fresh.qcow2");
    createQcow2(img, { size: SIZE, clusterSize: 65536, compat: "0.10" });
    const shadow = Buffer.alloc(SIZE);
    const machine = buildMachine({ pc: false, pv: [{ medium: { image: img, format: "qcow2" } }] });
    try {
      const p = await openPvPath(machine);
      await guestStorm(p, shadow, 400, 9);
      await p.close();
    } finally {
      await machine.close();
    }
    expectCleanAndEqual(img, shadow, dir);
  });
});
