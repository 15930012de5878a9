/**
 * The text cost summary that `identify`, `read` and `write` print (formatCost): "total exits" must be the sum
 * of the exit lines printed above it; events that are not exits are listed apart.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

import { costReport, formatCost, openDisk } from "../../src/cli/disk-options.ts";
import { COUNTER_KINDS, type Counts, exitsOf } from "../../src/hypervisor/accounting.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-cost-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const num = (s: string) => Number(s.replace(/,/g, ""));

/** The printed total, the counter lines printed above it, and the counter lines printed after it. */
function readSummary(text: string) {
  const lines = text.split("\n");
  const at = lines.findIndex((l) => /^\s+total exits\s/.test(l));
  expect(at, text).toBeGreaterThan(0);
  const counter = /^\s+([a-zA-Z]+)\s+([\d,]+)(?:\s|$)/;
  const kinds = (ls: string[]) =>
    Object.fromEntries(
      ls.flatMap((l) => (counter.test(l) ? [[counter.exec(l)![1]!, num(counter.exec(l)![2]!)]] : [])),
    );
  return {
    total: num(/total exits\s+([\d,]+)/.exec(lines[at]!)![1]!),
    above: kinds(lines.slice(0, at)) as Record<string, number>,
    below: kinds(lines.slice(at + 1).filter((l) => !/^\s+cycles/.test(l))) as Record<string, number>,
  };
}
const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

/** Every counter kind non-zero, each a different power of two, so any wrong sum shows. */
function everyKind(): Counts {
  const c = {} as Counts;
  COUNTER_KINDS.forEach((k, i) => (c[k] = 2 ** i));
  return c;
}

describe("the text cost summary", () => {
  it("prints a total of exits equal to the sum of the exit lines above it", () => {
    const counts = everyKind();
    const text = formatCost("cost:", costReport(new Hypervisor({ ramSize: 1 << 16 }), counts, 8));
    const s = readSummary(text);
    expect(s.total).toBe(exitsOf(counts));
    expect(sum(s.above)).toBe(s.total);
    expect(Object.keys(s.above).sort()).toEqual(
      ["pioIn", "pioOut", "stringIo", "mmio", "bufferedWrite", "hypercall"].sort(),
    );
    // The events that are not exits come after, under their own heading.
    expect(text).toMatch(/total exits[\s\S]*other events \(not exits\):/);
    expect(s.below).toEqual({
      irqInject: counts.irqInject,
      evtchnNotify: counts.evtchnNotify,
      grantMap: counts.grantMap,
      grantCopy: counts.grantCopy,
    });
  });

  it("the check above rejects the old format, which listed IRQ injections among the exits", () => {
    // What formatCost printed before (an IDE read: 4 interrupts listed above "total exits", not in it).
    const old = [
      "cost of reading 4 sector(s) via rep (sync engine):",
      "  pioIn                     6",
      "  pioOut                    6",
      "  stringIo                  4",
      "  irqInject                 4",
      "  total exits              16",
      "  exits/sector              4",
      "  cycles               94,792 (modelled)",
    ].join("\n");
    const s = readSummary(old);
    expect(sum(s.above)).not.toBe(s.total);
  });

  for (const via of ["pio", "rep", "dma", "pv"] as const) {
    it(`adds up for a real read --via ${via}`, async () => {
      const img = path.join(dir, `${via}.img`);
      fs.writeFileSync(img, new Uint8Array(256 * 512));
      const disk = await openDisk(img, { engine: "sync", cost: [], via, readOnly: true });
      try {
        const before = disk.hv.acct.snapshot();
        await disk.path.read(0, 16);
        const r = costReport(disk.hv, disk.hv.acct.since(before), 16);
        for (const text of [
          formatCost("read:", r),
          formatCost("setup:", costReport(disk.hv, disk.setup, 0)),
        ]) {
          const s = readSummary(text);
          expect(sum(s.above), text).toBe(s.total);
        }
        expect(readSummary(formatCost("read:", r)).total).toBe(r.exits);
      } finally {
        await disk.close();
      }
    });
  }
});
