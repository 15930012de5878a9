import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

import { openDisk } from "../../src/cli/disk-options.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { Tracer, traceRecord } from "../../src/hypervisor/trace.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-trace-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const parse = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

describe("trace lines", () => {
  it("give I/O ports as numbers and, right after, in hex", () => {
    const { tracer, lines } = Tracer.toArray();
    const hv = new Hypervisor({ ramSize: 1 << 16, tracer });
    hv.bus.register(0x1f0, 8, { ioRead: () => 0x50, ioWrite: () => {} }, "ide0");
    hv.bus.register(0x80, 1, { ioRead: () => 0, ioWrite: () => {} }, "post", { bufferedWrites: true });
    hv.mmio.register(0xfebf0000, 0x1000, { mmioRead: () => 0, mmioWrite: () => {} }, "bar");
    const v = hv.vcpu();
    v.inb(0x1f7);
    v.insw(0x1f0, 0x2000, 4);
    v.outb(0x80, 1);
    v.writel(0xfebf0010, 5);
    const evs = parse(lines);

    const status = evs.find((e) => e.ev === "ioreq" && e.dataIsPtr === false)!;
    expect(status).toMatchObject({ ev: "ioreq", port: 0x1f7, portHex: "0x1f7", dir: "in", value: 0x50 });
    // The hex twin sits right after the number it renders, so a reader sees them together.
    const keys = Object.keys(status);
    expect(keys.indexOf("portHex")).toBe(keys.indexOf("port") + 1);
    expect(keys[0]).toBe("seq");
    // The raw line, as a person reads it.
    expect(lines[0]).toContain(`"port":503,"portHex":"0x1f7"`);

    const str = evs.find((e) => e.ev === "ioreq" && e.dataIsPtr === true)!;
    expect(str).toMatchObject({ port: 0x1f0, portHex: "0x1f0", gpa: 0x2000, gpaHex: "0x2000", count: 4 });

    expect(evs.find((e) => e.ev === "bufioreq")).toMatchObject({ port: 0x80, portHex: "0x80", value: 1 });
    expect(evs.find((e) => e.ev === "mmio")).toMatchObject({ addr: 0xfebf0010, addrHex: "0xfebf0010" });
  });

  it("leave event-channel ports decimal (they are not I/O ports) and other events unchanged", () => {
    expect(traceRecord(3, { ev: "evtchn", from: 1, port: 5, to: 0 })).toEqual({
      seq: 3,
      ev: "evtchn",
      from: 1,
      port: 5,
      to: 0,
    });
    expect(traceRecord(0, { ev: "irq", line: 14, level: 1 })).toEqual({
      seq: 0,
      ev: "irq",
      line: 14,
      level: 1,
    });
  });

  it("mark a phase with its own event", () => {
    const { tracer, lines } = Tracer.toArray();
    tracer.emit({ ev: "note", text: "probe" });
    tracer.phase("transfer");
    tracer.phase("done", "closing");
    expect(parse(lines)).toEqual([
      { seq: 0, ev: "note", text: "probe" },
      { seq: 1, ev: "phase", phase: "transfer" },
      { seq: 2, ev: "phase", phase: "done", text: "closing" },
    ]);
  });
});

describe("a disk command's trace", () => {
  // What a command does: open (set-up), mark the transfer, measure it, mark the end.
  for (const via of ["pio", "rep", "dma", "pv"] as const) {
    it(`--via ${via}: the lines between the phase marks are exactly the transfer's counted events`, async () => {
      const img = path.join(dir, `${via}.img`);
      fs.writeFileSync(img, new Uint8Array(256 * 512));
      const file = path.join(dir, `${via}.jsonl`);
      const disk = await openDisk(img, { engine: "sync", cost: [], via, trace: file, readOnly: true });
      let counts;
      try {
        disk.tracer?.phase("transfer");
        const before = disk.hv.acct.snapshot();
        await disk.path.read(8, 16);
        counts = disk.hv.acct.since(before);
        disk.tracer?.phase("done");
      } finally {
        await disk.close();
      }
      const evs = parse(fs.readFileSync(file, "utf8").trim().split("\n"));
      const at = (p: string) => evs.findIndex((e) => e.ev === "phase" && e.phase === p);
      expect(evs.filter((e) => e.ev === "phase")).toHaveLength(2);
      expect(at("transfer")).toBeGreaterThan(0); // set-up happened before it
      const during = evs.slice(at("transfer") + 1, at("done"));
      const n = (f: (e: Record<string, unknown>) => boolean) => during.filter(f).length;
      expect({
        pioIn: n((e) => e.ev === "ioreq" && !e.dataIsPtr && e.dir === "in"),
        pioOut: n((e) => e.ev === "ioreq" && !e.dataIsPtr && e.dir === "out"),
        stringIo: n((e) => e.ev === "ioreq" && e.dataIsPtr === true),
        bufferedWrite: n((e) => e.ev === "bufioreq"),
        mmio: n((e) => e.ev === "mmio"),
        hypercall: n((e) => e.ev === "hypercall"),
        irqInject: n((e) => e.ev === "irq" && e.level === 1),
      }).toEqual({
        pioIn: counts.pioIn,
        pioOut: counts.pioOut,
        stringIo: counts.stringIo,
        bufferedWrite: counts.bufferedWrite,
        mmio: counts.mmio,
        hypercall: counts.hypercall,
        irqInject: counts.irqInject,
      });
      // Every port-I/O line of the transfer carries its port in hex as well.
      for (const e of during.filter((x) => x.ev === "ioreq" || x.ev === "bufioreq"))
        expect(e.portHex).toBe(`0x${(e.port as number).toString(16)}`);
    });
  }
});
