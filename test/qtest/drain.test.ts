/**
 * Stopping the Bus Master while its transfer's storage request is in flight (docs/conformance.md D1), with the
 * async engine. QEMU 7.2 drains the request inside the stop write (hw/ide/pci.c bmdma_cmd_writeb ->
 * ide_cancel_dma_sync), so the next qtest request already sees the command ended: BM status 04h, STATUS 50h, IRQ
 * 14 raised (observed on QEMU 7.2 with the same lines; test/differential/qemu-profile.test.ts compares it live).
 * In the "qemu-7.2" profile the qtest server answers the stop write only once the request has completed, as a
 * vCPU waits for a Xen ioreq server's late IORESP_READY; in the default profile the stop is answered at once and
 * the completion comes later.
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import type { CompatProfile } from "../../src/ide/compat.ts";
import { openQtestSession } from "../../src/qtest/session.ts";
import { serveStream } from "../../src/qtest/transport.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-qtest-drain-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SECTORS = 4096;
const BM = 0xc000;

/** PCI set-up, a PRD table for 64 sectors at 0x20000, READ DMA of 64 sectors at LBA 16, waiting for the engine. */
const SETUP = [
  "outl 0xcf8 0x80000920",
  "outl 0xcfc 0xc001",
  "outl 0xcf8 0x80000904",
  "outw 0xcfc 0x5",
  "irq_intercept_in ioapic",
  "writel 0x10000 0x20000",
  "writel 0x10004 0x80008000",
  `outl ${BM + 4} 0x10000`,
  "outb 0x1f6 0xe0",
  "outb 0x1f2 0x40",
  "outb 0x1f3 0x10",
  "outb 0x1f4 0x0",
  "outb 0x1f5 0x0",
  "outb 0x1f7 0xc8",
];

/** Start the engine and stop it in one input chunk, then read BM status, STATUS and the first data word. */
const START_STOP = [`outb ${BM} 0x9`, `outb ${BM} 0x0`, `inb ${BM + 2}`, "inb 0x1f7", "readw 0x20000"];

function serve(compat: CompatProfile) {
  const image = join(dir, `${compat}.img`);
  const data = new Uint8Array(SECTORS * 512);
  for (let s = 0; s < SECTORS; s++) data.fill(s & 0xff, s * 512, s * 512 + 512);
  writeFileSync(image, data);
  const m = openQtestSession({ images: [image], engine: "async", compat });
  const toServer = new PassThrough();
  const fromServer = new PassThrough();
  let text = "";
  fromServer.setEncoding("latin1");
  fromServer.on("data", (d: string) => (text += d));
  const done = serveStream(m.server, toServer, fromServer);
  /** Send lines in one write; resolve with the lines received once `replies` replies (not IRQ lines) are in. */
  const send = async (lines: string[], replies: number): Promise<string[]> => {
    text = "";
    toServer.write(lines.join("\n") + "\n");
    for (let i = 0; i < 2000; i++) {
      const got = text.split("\n").filter((l) => l.length > 0);
      if (got.filter((l) => !l.startsWith("IRQ")).length >= replies) return got;
      await new Promise((r) => setTimeout(r, 1));
    }
    throw new Error(`no replies to ${lines.join("; ")}: ${text}`);
  };
  const close = async () => {
    toServer.end();
    await done;
    await m.close();
  };
  return { m, send, close };
}

describe("a Bus Master stopped with its transfer in flight, async engine", () => {
  it("qemu-7.2: the stop write is answered after the drain; the next request sees the ended command", async () => {
    const s = serve("qemu-7.2");
    try {
      await s.send(SETUP, SETUP.length);
      const got = await s.send(START_STOP, START_STOP.length);
      // The completion's interrupt is reported before the stop write's reply, as QEMU reports it within it.
      expect(got).toEqual([
        "OK",
        "IRQ raise 14",
        "OK",
        "OK 0x0004",
        "IRQ lower 14", // reading STATUS acknowledges it
        "OK 0x0050",
        "OK 0x0000000000001010", // sector 16 is in memory
      ]);
    } finally {
      await s.close();
    }
  });

  it("xenide: the stop is answered at once and the transfer ends later (D1)", async () => {
    const s = serve("xenide");
    try {
      await s.send(SETUP, SETUP.length);
      const got = await s.send(START_STOP, START_STOP.length);
      expect(got.slice(0, 4)).toEqual(["OK", "OK", "OK 0x0000", "OK 0x0058"]);
      await s.m.machine.settle();
      const after = await s.send([`inb ${BM + 2}`, "inb 0x1f7"], 2);
      expect(after.filter((l) => !l.startsWith("IRQ"))).toEqual(["OK 0x0004", "OK 0x0050"]);
    } finally {
      await s.close();
    }
  });

  it("input fed while a reply is held runs after it, in order", async () => {
    const image = join(dir, "order.img");
    writeFileSync(image, new Uint8Array(SECTORS * 512));
    const m = openQtestSession({ images: [image], engine: "async", compat: "qemu-7.2" });
    try {
      const out: string[] = [];
      m.server.open((t) => void out.push(t));
      m.server.feed(SETUP.join("\n") + "\n");
      while (m.server.busy()) await m.server.settle();
      out.length = 0;
      m.server.feed(`outb ${BM} 0x9\noutb ${BM} 0x0\ninb ${BM + 2}\n`);
      m.server.feed("inb 0x1f7\n");
      expect(out.join("")).toBe("OK\n"); // the start's reply only: the stop waits for its drain
      expect(m.server.busy()).toBe(true);
      await m.server.settle();
      expect(m.server.waiting).toBe(true);
      m.server.feed("");
      expect(out.join("").split("\n").slice(0, -1)).toEqual([
        "OK",
        "IRQ raise 14",
        "OK", // the stop, once drained
        "OK 0x0004",
        "IRQ lower 14",
        "OK 0x0050",
      ]);
    } finally {
      await m.close();
    }
  });

  it("the synchronous vCPU API: the stop asks for a drain once, and settling ends the command", async () => {
    const s = serve("qemu-7.2");
    try {
      await s.send(SETUP, SETUP.length);
      const { machine } = s.m;
      const v = machine.hv.vcpu(0);
      v.outb(BM, 0x9);
      v.outb(BM, 0x0);
      expect(machine.takeDrainRequest()).toBe(true);
      expect(machine.takeDrainRequest()).toBe(false);
      expect(v.inb(BM + 2)).toBe(0x00); // not drained yet: the caller did not wait
      await machine.settle();
      expect([v.inb(BM + 2), v.inb(0x1f7)]).toEqual([0x04, 0x50]);
      // A stop with nothing in flight asks for nothing.
      v.outb(BM, 0x9);
      v.outb(BM, 0x0);
      expect(machine.takeDrainRequest()).toBe(false);
    } finally {
      await s.close();
    }
  });
});
