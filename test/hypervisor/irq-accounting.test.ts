import { describe, expect, it } from "vitest";
import { CostModel, DEFAULT_COSTS, exitsOf } from "../../src/hypervisor/accounting.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { Tracer } from "../../src/hypervisor/trace.ts";

describe("interrupt lines", () => {
  it("are level-triggered: one injection per assertion, not per raise call", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    hv.irq.raise(14);
    hv.irq.raise(14);
    expect(hv.acct.counts.irqInject).toBe(1);
    expect(hv.vcpu().irqRaised(14)).toBe(true);
    hv.irq.lower(14);
    expect(hv.vcpu().irqRaised(14)).toBe(false);
    hv.irq.raise(14);
    expect(hv.acct.counts.irqInject).toBe(2);
    expect(() => hv.irq.raise(99)).toThrow(RangeError);
  });

  it("wakes a waiting vCPU when its line goes active, and times out otherwise", async () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const v = hv.vcpu();
    const woke = v.waitIrq(15, 5000);
    setTimeout(() => hv.irq.raise(15), 5);
    expect(await woke).toBe(true);
    expect(await v.waitIrq(14, 20)).toBe(false);
    expect(await v.waitIrq(15, 20)).toBe(true); // already active
  });

  it("tells observers about every level change", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const seen: string[] = [];
    hv.irq.onChange((l, lvl) => seen.push(`${l}:${lvl}`));
    hv.irq.set(14, true);
    hv.irq.set(14, true);
    hv.irq.set(14, false);
    expect(seen).toEqual(["14:1", "14:0"]);
  });
});

describe("accounting and cost model", () => {
  it("counts each exit by kind and models cycles from the cited defaults", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const v = hv.vcpu();
    v.outb(0x80, 1);
    v.outb(0x80, 2);
    v.inb(0x80);
    v.insw(0x80, 0, 4);
    const c = hv.acct.snapshot();
    expect(c).toMatchObject({ pioOut: 2, pioIn: 1, stringIo: 1 });
    expect(exitsOf(c)).toBe(4);
    expect(hv.acct.cycles).toBe(3 * DEFAULT_COSTS.pioOut.cycles + DEFAULT_COSTS.stringIo.cycles);
    expect(DEFAULT_COSTS.pioOut.cycles).toBe(5287);
    expect(DEFAULT_COSTS.pioOut.source).toMatch(/pci-testdev/);
  });

  it("lets the user override every cost, and rejects unknown kinds", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16, costs: { pioIn: 1000 } });
    hv.vcpu().inb(0x80);
    expect(hv.acct.cycles).toBe(1000);
    expect(hv.acct.model.costs.pioIn.source).toBe("user override");
    expect(CostModel.parseOverrides(["pioOut=10", "irqInject=2.5"])).toEqual({ pioOut: 10, irqInject: 2.5 });
    expect(() => CostModel.parseOverrides(["bogus=1"])).toThrow(/unknown cost kind/);
    expect(() => CostModel.parseOverrides(["pioOut"])).toThrow(/kind=cycles/);
    expect(() => new CostModel({ pioIn: -1 })).toThrow(/non-negative/);
  });

  it("reports the difference since a snapshot", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const v = hv.vcpu();
    v.inb(0x80);
    const before = hv.acct.snapshot();
    v.outw(0x80, 1);
    expect(hv.acct.since(before)).toMatchObject({ pioIn: 0, pioOut: 1 });
  });
});

describe("tracing", () => {
  it("writes one JSON line per exit and IRQ change when on", () => {
    const { tracer, lines } = Tracer.toArray();
    const hv = new Hypervisor({ ramSize: 1 << 16, tracer });
    hv.bus.register(0x1f0, 8, { ioRead: () => 0x50, ioWrite: () => {} }, "ide0");
    const v = hv.vcpu();
    v.outb(0x1f6, 0xe0);
    v.inb(0x1f7);
    hv.irq.raise(14);
    const evs = lines.map((l) => JSON.parse(l));
    expect(evs).toEqual([
      expect.objectContaining({
        seq: 0,
        ev: "ioreq",
        port: 0x1f6,
        dir: "out",
        value: 0xe0,
        size: 1,
        device: "ide0",
      }),
      expect.objectContaining({ seq: 1, ev: "ioreq", port: 0x1f7, dir: "in", value: 0x50 }),
      expect.objectContaining({ seq: 2, ev: "irq", line: 14, level: 1 }),
    ]);
  });

  it("records nothing when off", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    expect(hv.tracer).toBeNull();
    hv.vcpu().inb(0x80);
  });
});
