/**
 * The "qemu-7.2" profile's PIIX4 PM I/O block driven through the qtest server: the ACPI PM timer counts the
 * machine's virtual clock that `clock_step` moves (3.579545 MHz, ACPI 2.0 §4.7.2.1), TMR_STS sets when bit 23 of
 * the count changes, and with TMR_EN the SCI (GSI 9) follows it. Expected values as QEMU 7.2 answered the same
 * lines under the qtest accelerator (test/differential/qemu-profile.test.ts compares them live when that
 * accelerator is built): 1 ms is 0DFBh ticks; TMR_STS cleared at tick 0DFBh overflows at tick 800000h, i.e.
 * between 2.343 s and 2.344 s.
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openQtestSession } from "../../src/qtest/session.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-pm-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function setup(compat: "qemu-7.2" | "xenide") {
  const image = join(dir, `${compat}.img`);
  writeFileSync(image, new Uint8Array(64 * 512));
  const s = openQtestSession({ images: [image], compat });
  const out: string[] = [];
  s.server.open((t) => void out.push(t));
  const run = (...lines: string[]): string[] => {
    out.length = 0;
    s.server.feed(lines.map((l) => l + "\n").join(""));
    return out.join("").split("\n").slice(0, -1);
  };
  return { s, run };
}

/** PMBA = 600h, PMREGMISC bit 0 set. */
const ENABLE = ["outl 0xcf8 0x80000b40", "outl 0xcfc 0x601", "outl 0xcf8 0x80000b80", "outb 0xcfc 0x1"];

describe("PIIX4 PM timer and SCI (qemu-7.2 profile)", () => {
  it("counts the virtual clock, sets TMR_STS at the overflow and raises the SCI when enabled", async () => {
    const { s, run } = setup("qemu-7.2");
    try {
      run("irq_intercept_in ioapic");
      expect(run("inl 0x608")).toEqual(["OK 0xffffffff"]); // not decoded before PMBA is enabled
      run(...ENABLE);
      expect(run("inw 0x600", "inl 0x608")).toEqual(["OK 0x0001", "OK 0x0000"]); // TMR_STS set at reset
      expect(run("clock_step 1000000", "inl 0x608", "inb 0x60a")).toEqual([
        "OK 1000000",
        "OK 0x0dfb",
        "OK 0x00fb", // any access reads the count
      ]);
      expect(run("outw 0x600 0x1", "inw 0x600", "outw 0x602 0x1")).toEqual(["OK", "OK 0x0000", "OK"]);
      expect(run("clock_step 2342000000", "inw 0x600")).toEqual(["OK 2343000000", "OK 0x0000"]);
      // The overflow falls inside this step: the timer fires there and the SCI rises before the reply.
      expect(run("clock_step 1000000", "inw 0x600", "inl 0x608")).toEqual([
        "IRQ raise 9",
        "OK 2344000000",
        "OK 0x0001",
        "OK 0x800735",
      ]);
      expect(run("outw 0x600 0x1")).toEqual(["IRQ lower 9", "OK"]);
      // Armed again for the next change of bit 23; clock_step without a time goes to that deadline.
      expect(run("clock_step", "inw 0x600")).toEqual(["IRQ raise 9", "OK 4686968874", "OK 0x0001"]);
      // A machine reset stops the block: PMBA back to 1, unmapped, SCI low (QEMU's piix4_pm_reset).
      s.machine.reset();
      expect(run("inl 0x608", "outl 0xcf8 0x80000b40", "inl 0xcfc")).toEqual([
        "OK 0xffffffff",
        "OK",
        "OK 0x0001",
      ]);
      expect(s.machine.hv.irq.isRaised(9)).toBe(false);
    } finally {
      await s.close();
    }
  });

  it("SLP_EN asks the machine to power off (type 0) or suspend (type 1); other types only store the bits", async () => {
    const { s, run } = setup("qemu-7.2");
    try {
      const requests: string[] = [];
      s.machine.pc!.pm!.onSleepRequest = (kind, type) => requests.push(`${kind} ${type}`);
      run(...ENABLE, "outw 0x604 0x2001", "outw 0x604 0x2401", "outw 0x604 0x2801", "outw 0x604 0x3c01");
      expect(requests).toEqual(["shutdown 0", "suspend 1", "shutdown 2"]);
      expect(run("inw 0x604")).toEqual(["OK 0x1c01"]); // SLP_EN is write-only
    } finally {
      await s.close();
    }
  });

  it("the default profile has no PIIX4 PM function", async () => {
    const { s, run } = setup("xenide");
    try {
      expect(run("outl 0xcf8 0x80000b00", "inl 0xcfc", "inb 0xafe0")).toEqual([
        "OK",
        "OK 0xffffffff",
        "OK 0x00ff",
      ]);
    } finally {
      await s.close();
    }
  });
});
