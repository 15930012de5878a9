/**
 * The CD-ROM on the command line: `qtest --cdrom` at every position (with an ISO or empty), `read --cdrom`
 * through the guest's ATAPI driver by PIO and DMA, `identify --cdrom`, and the mistakes a user can make (an ISO
 * that is not whole 2048-byte blocks, a disk and a CD at one position, blocks beyond the end), each one line
 * with exit status 1 or 2.
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cli } from "./in-process.ts";
import { xenide } from "./run.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-cd-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const BLOCKS = 24;
const iso = join(dir, "data.iso");
const data = new Uint8Array(BLOCKS * 2048);
for (let b = 0; b < BLOCKS; b++) {
  data.set(new TextEncoder().encode(`BLOCK${String(b).padStart(3, "0")}`), b * 2048);
  data.fill(b, b * 2048 + 8, (b + 1) * 2048);
}
writeFileSync(iso, data);

describe("xenide with a CD-ROM drive", { timeout: 60_000 }, () => {
  it("qtest --cdrom ISO / --slave-cdrom / --secondary-cdrom / --secondary-slave-cdrom: the PACKET signature there", () => {
    const lines: string[] = [];
    for (const [dev, base] of [
      [0xa0, 0x1f0],
      [0xb0, 0x1f0],
      [0xa0, 0x170],
      [0xb0, 0x170],
    ] as const)
      lines.push(
        `outb 0x${(base + 6).toString(16)} 0x${dev.toString(16)}`,
        `inb 0x${(base + 4).toString(16)}`,
        `inb 0x${(base + 5).toString(16)}`,
      );
    const args = [
      "qtest",
      "--cdrom",
      iso,
      "--slave-cdrom",
      iso,
      "--secondary-cdrom",
      iso,
      "--secondary-slave-cdrom",
    ];
    const r = xenide(args, { input: Buffer.from(lines.join("\n") + "\n") });
    expect(r.code, r.stderr).toBe(0);
    // ATA-6 §9.12: LBA Mid/High 14h/EBh at every position, the last one an empty drive.
    expect(r.stdout.trim().split("\n")).toEqual(Array(4).fill(["OK", "OK 0x0014", "OK 0x00eb"]).flat());
  });

  it("qtest --cdrom without a file is an empty drive: TEST UNIT READY fails NOT READY", () => {
    const packet = ["0x0", "0x0", "0x0", "0x0", "0x0", "0x0"].map((w) => `outw 0x1f0 ${w}`);
    const lines = [
      "outb 0x1f4 0x0",
      "outb 0x1f5 0x8",
      "outb 0x1f7 0xa0",
      ...packet,
      "inb 0x3f6",
      "inb 0x1f1",
    ];
    const r = xenide(["qtest", "--cdrom"], { input: Buffer.from(lines.join("\n") + "\n") });
    expect(r.code, r.stderr).toBe(0);
    const out = r.stdout.trim().split("\n");
    // CHECK CONDITION: DRDY|ERR, sense key NOT READY (2) in Error bits 7:4.
    expect(out.slice(-2)).toEqual(["OK 0x0041", "OK 0x0020"]);
  });

  it("read --cdrom by PIO and DMA returns the ISO's blocks; -o writes them", async () => {
    for (const via of ["pio", "dma"]) {
      const out = join(dir, `out-${via}.bin`);
      const r = await cli("read", iso, "--cdrom", "--lba", "3", "--count", "10", "--via", via, "-o", out);
      expect(r.code, r.stderr).toBe(0);
      expect(Buffer.compare(readFileSync(out), Buffer.from(data.subarray(3 * 2048, 13 * 2048)))).toBe(0);
    }
    const dump = await cli("read", iso, "--cdrom", "--lba", "5");
    expect(dump.code, dump.stderr).toBe(0);
    expect(dump.stdout.toString().split("\n")[0]).toMatch(/^00002800: 424c 4f43 4b30 3035 0505/);
    const json = await cli("read", iso, "--cdrom", "--lba", "1", "--count", "1", "--json");
    const j = JSON.parse(json.stdout.toString()) as { bytes: number; hex: string; cost: { exits: number } };
    expect(j.bytes).toBe(2048);
    expect(j.hex.slice(0, 16)).toBe(Buffer.from("BLOCK001").toString("hex"));
    expect(j.cost.exits).toBeGreaterThan(0);
  });

  it("identify --cdrom: IDENTIFY PACKET DEVICE, INQUIRY and the capacity", async () => {
    const r = await cli("identify", iso, "--cdrom", "--json");
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.toString()) as {
      identity: { model: string; removable: boolean };
      inquiry: { type: number; product: string };
      capacity: { blocks: number };
    };
    expect(j.identity).toMatchObject({ model: "XENIDE DVD-ROM", removable: true });
    expect(j.inquiry).toMatchObject({ type: 5, product: "XENIDE DVD-ROM" });
    expect(j.capacity.blocks).toBe(BLOCKS);
  });

  it("mistakes are one line with exit status 1 or 2", async () => {
    const odd = join(dir, "odd.iso");
    writeFileSync(odd, new Uint8Array(2048 * 2 + 512));
    const bad = await cli("read", odd, "--cdrom", "--lba", "0");
    expect([bad.code, bad.stderr.trim().split("\n").length]).toEqual([1, 1]);
    expect(bad.stderr).toMatch(/not a whole number of 2048-byte CD blocks/);
    const q = xenide(["qtest", "--secondary-cdrom", odd], { input: Buffer.from("") });
    expect(q.code).toBe(1);
    expect(q.stderr).toMatch(/2048-byte/);
    const both = await cli("qtest", "--disk", iso, "--cdrom", iso);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/one drive per position/);
    const past = await cli("read", iso, "--cdrom", "--lba", String(BLOCKS - 1), "--count", "2");
    expect(past.code).toBe(2);
    expect(past.stderr).toMatch(/beyond the end of the CD/);
    const via = await cli("read", iso, "--cdrom", "--lba", "0", "--via", "pv");
    expect(via.code).toBe(2);
    expect(via.stderr).toMatch(/pio or dma/);
    const boot = await cli("vm", iso, "--boot", "z");
    expect(boot.code).toBe(2);
  });
});
