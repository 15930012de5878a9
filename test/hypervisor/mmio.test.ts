/**
 * MMIO exits: a load or store to a range a device claimed is emulated by Xen and sent to the ioreq server as
 * IOREQ_TYPE_COPY (hvm/ioreq.h: type 1), the same slot and state machine as port I/O. The expected request
 * bytes are the Xen 4.17 example `ioreq_mmio_write_4_df1` (test/hypervisor/ioreq.test.ts decodes it) with the
 * direction flag cleared: byte 30 holds state:4 | data_is_ptr:1 | dir:1 | df:1, so 0x41 becomes 0x01.
 */
import { describe, expect, it } from "vitest";
import { type MmioDevice, MmioConflictError, type MmioSize } from "../../src/hypervisor/bus.ts";
import { GuestAccessError, Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { STATE_IOREQ_NONE } from "../../src/hypervisor/ioreq.ts";
import { Tracer } from "../../src/hypervisor/trace.ts";
import { recording } from "./helpers.ts";

class Regs implements MmioDevice {
  readonly log: string[] = [];
  readonly words = new Map<number, number>();
  mmioRead(addr: number, size: MmioSize): number {
    this.log.push(`r${size}@${addr.toString(16)}`);
    return this.words.get(addr) ?? 0;
  }
  mmioWrite(addr: number, size: MmioSize, value: number): void {
    this.log.push(`w${size}@${addr.toString(16)}=${value.toString(16)}`);
    this.words.set(addr, value);
  }
}

describe("MMIO exits", () => {
  it("a 4-byte store to 0xfee00000 is an IOREQ_TYPE_COPY ioreq laid out as Xen's, served by the claiming device", () => {
    const { hv, seen } = recording(1 << 20, 3);
    const dev = new Regs();
    hv.mmio.register(0xfee00000, 0x1000, dev, "lapic-like");
    hv.vcpu().writel(0xfee00000, 0xdeadbeef);
    expect(seen[0]!.request).toBe("0000e0fe00000000efbeadde0000000001000000040000000300000000000101");
    expect(dev.log).toEqual(["w4@fee00000=deadbeef"]);
    expect(hv.acct.counts.mmio).toBe(1);
    expect(hv.acct.exits).toBe(1);
    expect(hv.ioreqPage.state(0)).toBe(STATE_IOREQ_NONE);
  });

  it("a load returns the device's value through the slot (dir=1, IORESP_READY carries the data)", () => {
    const { hv, seen } = recording(1 << 20, 3);
    const dev = new Regs();
    dev.words.set(0xfee00030, 0x50014);
    hv.mmio.register(0xfee00000, 0x1000, dev, "lapic-like");
    expect(hv.vcpu().readl(0xfee00030)).toBe(0x50014);
    expect(seen[0]!.request).toBe("3000e0fe00000000000000000000000001000000040000000300000000002101");
    expect(seen[0]!.response).toBe("3000e0fe00000000140005000000000001000000040000000300000000002301");
  });

  it("addresses above 4 GiB travel in the high word of the 64-bit addr field", () => {
    const { hv, seen } = recording(1 << 20, 3);
    const dev = new Regs();
    const base = 0x1_2345_0000;
    hv.mmio.register(base, 0x100, dev, "high-bar");
    hv.vcpu().writew(base + 0x10, 0xbeef);
    expect(seen[0]!.request.slice(0, 16)).toBe("1000452301000000");
    expect(dev.log).toEqual([`w2@${(base + 0x10).toString(16)}=beef`]);
  });

  it("an unclaimed address reads all-ones and drops stores; widths are masked", () => {
    const hv = new Hypervisor({ ramSize: 1 << 20 });
    const v = hv.vcpu();
    expect(v.readb(0xe0000000)).toBe(0xff);
    expect(v.readw(0xe0000000)).toBe(0xffff);
    expect(v.readl(0xe0000000)).toBe(0xffffffff);
    v.writel(0xe0000000, 1);
    const dev = new Regs();
    hv.mmio.register(0xe0000000, 0x10, dev, "bar0");
    v.writeb(0xe0000004, 0x1234);
    expect(dev.log).toEqual(["w1@e0000004=34"]);
    expect(hv.acct.counts.mmio).toBe(5);
  });

  it("refuses overlapping claims, keeps neighbours, and finds each range after unregister", () => {
    const hv = new Hypervisor({ ramSize: 1 << 20 });
    const a = new Regs();
    const b = new Regs();
    hv.mmio.register(0x10000, 0x1000, a, "a");
    hv.mmio.register(0x12000, 0x1000, b, "b");
    expect(() => hv.mmio.register(0x10800, 0x100, new Regs(), "c")).toThrow(MmioConflictError);
    expect(() => hv.mmio.register(0x11f00, 0x200, new Regs(), "c")).toThrow(/overlaps b/);
    hv.mmio.register(0x11000, 0x1000, new Regs(), "between");
    expect(hv.mmio.nameAt(0x11fff)).toBe("between");
    expect(hv.mmio.unregister(0x11000)).toBe(true);
    expect(hv.mmio.nameAt(0x11000)).toBeUndefined();
    hv.vcpu().writel(0x12004, 7);
    expect(b.log).toEqual(["w4@12004=7"]);
    expect(() => hv.mmio.register(-1, 4, a, "bad")).toThrow(RangeError);
    expect(() => hv.vcpu().readl(-4)).toThrow(GuestAccessError);
  });

  it("is traced as an mmio event with the device's name", () => {
    const lines: string[] = [];
    const hv = new Hypervisor({ ramSize: 1 << 20, tracer: new Tracer({ write: (l) => lines.push(l) }) });
    hv.mmio.register(0xfebf0000, 0x1000, new Regs(), "bar");
    hv.vcpu().writel(0xfebf0010, 0x5);
    const ev = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.ev === "mmio");
    expect(ev).toMatchObject({ addr: 0xfebf0010, size: 4, dir: "out", value: 5, device: "bar" });
  });
});
