/**
 * The comparison machinery itself, without QEMU: two xenide machines in lock step must agree, a difference
 * in what they hold must be caught, and excuses forgive exactly what they describe.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { excusesFrom } from "./excuses.ts";
import { patternImage, startXenideInProcess } from "./harness.ts";
import { type Op, PCI_SETUP, runOp } from "./ops.ts";
import { Mismatch, Pair, PRIMARY } from "./pair.ts";

const dirs: string[] = [];
const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function twins(a: Uint8Array, b: Uint8Array, excuses = excusesFrom([])): Promise<Pair> {
  const dir = mkdtempSync(join(tmpdir(), "xenide-twins-"));
  dirs.push(dir);
  writeFileSync(join(dir, "a.img"), a);
  writeFileSync(join(dir, "b.img"), b);
  const x = startXenideInProcess([join(dir, "a.img")]);
  const y = startXenideInProcess([join(dir, "b.img")]);
  stops.push(async () => {
    await Promise.all([x.client.close(), y.client.close()]);
    await Promise.all([x.done, y.done]);
  });
  const pair = new Pair(x.client, y.client, PRIMARY, excuses);
  await pair.send(PCI_SETUP, "setup");
  return pair;
}

const read: Op = { k: "pioIn", cmd: 0x20, lba: 3, count: 2, ext: false, dword: false, unit: 0 };
const dma: Op = {
  k: "dma",
  cmd: 0xc8,
  write: false,
  lba: 3,
  count: 2,
  ext: false,
  prd: "split",
  startFirst: false,
  seed: 1,
};

describe("differential comparison", () => {
  it("identical machines agree on every reply and settled state", async () => {
    const img = patternImage(64, 1);
    const pair = await twins(img, img);
    for (const op of [read, dma, { k: "srst", sameBatch: false } as Op]) await runOp(pair, op, "op");
    expect(pair.compared).toBeGreaterThan(500);
  });

  it("catches one differing byte in PIO data and in DMA'd memory", async () => {
    const a = patternImage(64, 1);
    const b = new Uint8Array(a);
    b[4 * 512 + 100] = b[4 * 512 + 100]! ^ 1; // sector 4, word 50
    const pair = await twins(a, b);
    const e = await runOp(pair, read, "pio").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(Mismatch);
    expect((e as Mismatch).what).toMatch(/sector 1 line 50 to 'inw 0x1f0'/);
    const pair2 = await twins(a, b);
    const e2 = await runOp(pair2, dma, "dma").catch((x: unknown) => x);
    expect(e2).toBeInstanceOf(Mismatch);
    expect((e2 as Mismatch).what).toMatch(/guest memory/);
  });

  it("an excuse forgives only the described place, values and command", async () => {
    const ex = excusesFrom([
      { id: "T1", diff: { where: "to 'inw 0x1f0'$", qemu: "OK 0x1111", xenide: "OK 0x2222", command: 0x20 } },
    ]);
    const ctx = (lastCommand: number) => ({ lastCommand, transcript: [] });
    const e = ex[0]!;
    expect(e.covers("x line 3 to 'inw 0x1f0'", "OK 0x1111", "OK 0x2222", ctx(0x20))).toBe(true);
    expect(e.covers("x line 3 to 'inw 0x1f0'", "OK 0x1111", "OK 0x2223", ctx(0x20))).toBe(false);
    expect(e.covers("x line 3 to 'inw 0x1f0'", "OK 0x1111", "OK 0x2222", ctx(0xc4))).toBe(false);
    expect(e.covers("x line 3 to 'inw 0x1f2'", "OK 0x1111", "OK 0x2222", ctx(0x20))).toBe(false);
  });
});
