/**
 * The command ledger against a scripted port-write sequence (what ata_piix does for an LBA48 DMA read and an
 * LBA28 PIO write), with exits counted by the hypervisor's own accounting.
 */

import { describe, expect, it } from "vitest";
import { Accounting } from "../../src/hypervisor/accounting.ts";
import { CommandLedger } from "../../src/hosts/v86/ledger.ts";

const BM = 0xc000;

function machine() {
  const acct = new Accounting();
  const ledger = new CommandLedger(acct, () => BM, "test");
  const out = (port: number, value: number, size: 1 | 2 | 4 = 1) => {
    ledger.onWrite(port, size, value);
    acct.counts.pioOut++;
  };
  const inb = (n = 1) => (acct.counts.pioIn += n);
  return { acct, ledger, out, inb };
}

describe("CommandLedger", () => {
  it("attributes setup, command, data and completion exits to each command, and counts its sectors", () => {
    const { acct, ledger, out, inb } = machine();
    // READ DMA EXT of 0x0180 sectors (12 setup and command writes, start, 3 status reads, stop): PRD address
    // and direction first, then the LBA48 task file (HOB bytes first), the command, start, the interrupt,
    // then status reads and the Bus Master stop.
    out(BM + 4, 0x1000, 4);
    out(BM, 0x08);
    out(0x1f2, 0x01); // count, HOB
    out(0x1f3, 0);
    out(0x1f4, 0);
    out(0x1f5, 0);
    out(0x1f2, 0x80); // count, low
    out(0x1f3, 0x10);
    out(0x1f4, 0);
    out(0x1f5, 0);
    out(0x1f6, 0x40);
    out(0x1f7, 0x25); // READ DMA EXT
    out(BM, 0x09);
    acct.counts.irqInject++;
    inb(3);
    out(BM, 0x08);
    // WRITE SECTORS (LBA28), count 0 = 256 sectors, moved as 256 string exits.
    out(0x1f2, 0x00);
    out(0x1f6, 0xe0);
    out(0x1f7, 0x30);
    acct.counts.stringIo += 256;
    inb(256);
    ledger.mark("second");
    const [first, second] = ledger.finish();
    expect(first!.phase).toBe("test");
    expect(first!.commands.map((c) => [c.command, c.count, c.sectors, c.exits])).toEqual([
      ["READ_DMA_EXT", 1, 0x180, 12 + 1 + 3 + 1],
      ["WRITE_SECTORS", 1, 256, 3 + 256 + 256],
    ]);
    expect(first!.commands[0]!.irqInjections).toBe(1);
    expect(first!.bytes).toBe((0x180 + 256) * 512);
    expect(first!.exits).toBe(acct.counts.pioIn + acct.counts.pioOut + acct.counts.stringIo);
    expect(first!.exitsPerMiB).toBeCloseTo(first!.exits / ((0x180 + 256) / 2048));
    expect(second!.commandCount).toBe(0);
  });
});
