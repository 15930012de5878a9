/**
 * The guest driver's PIO data-in takes an interrupt that is already pending at once (STATUS, then the block),
 * as a CPU that enables interrupts before HLT does, and waits on the event loop only when it is not: with a
 * device model that completes at once (the sync engine), a whole PIO command runs inside the call that issues
 * it, every data-port read still its own exit. With the async engine the driver still waits for each block.
 */
import { describe, expect, it } from "vitest";
import { buildMachine } from "../../src/machine/builder.ts";
import { openAtaPath } from "../../src/machine/disk-path.ts";
import { MemoryBackend } from "../../src/storage/index.ts";

const SECTORS = 256;

function image(): Uint8Array {
  const d = new Uint8Array(SECTORS * 512);
  for (let i = 0; i < d.length; i++) d[i] = (i * 31 + (i >> 9) * 7) & 0xff;
  return d;
}

async function pioPath(engine: "sync" | "async", irq: boolean) {
  const data = image();
  const m = buildMachine({
    ide: [{ position: "primary-master", medium: { backend: new MemoryBackend(data) }, engine }],
  });
  const p = await openAtaPath(m, "pio", { irq });
  return { m, p, data };
}

describe("PIO data-in with the interrupt already pending", () => {
  it("runs a whole 16-sector command inside readInto on the sync engine: 256 data-port exits per sector", async () => {
    const { m, p, data } = await pioPath("sync", true);
    try {
      const buf = p.drive.allocBuffer(16 * 512);
      const before = m.hv.acct.snapshot();
      const done = p.drive.readInto(32, buf);
      const during = m.hv.acct.since(before);
      // Every exit of the command happened before readInto returned: 16 x 256 data words, a STATUS read per
      // block, the alternate status before the command and after the last block; the task file's 6 writes.
      expect(during.pioIn).toBe(16 * 256 + 16 + 2);
      expect(during.pioOut).toBe(6);
      expect(during.irqInject).toBe(16);
      await done;
      expect(m.hv.acct.since(before)).toEqual(during);
      expect(Buffer.from(buf).equals(Buffer.from(data.subarray(32 * 512, 48 * 512)))).toBe(true);
    } finally {
      await m.close();
    }
  });

  it("waits for the blocks the async engine has not delivered yet, and reads the same bytes", async () => {
    const { m, p, data } = await pioPath("async", true);
    try {
      const buf = p.drive.allocBuffer(16 * 512);
      const before = m.hv.acct.snapshot();
      const done = p.drive.readInto(32, buf);
      // The storage request is still in flight: no data-port exit yet.
      expect(m.hv.acct.since(before).pioIn).toBeLessThan(256);
      await done;
      expect(m.hv.acct.since(before).pioIn).toBe(16 * 256 + 16 + 2);
      expect(Buffer.from(buf).equals(Buffer.from(data.subarray(32 * 512, 48 * 512)))).toBe(true);
    } finally {
      await m.close();
    }
  });

  it("a polling driver (nIEN) reads the same bytes with the same exits", async () => {
    const { m, p, data } = await pioPath("sync", false);
    try {
      const buf = p.drive.allocBuffer(16 * 512);
      const before = m.hv.acct.snapshot();
      await p.drive.readInto(32, buf);
      expect(m.hv.acct.since(before).pioIn).toBe(16 * 256 + 16 + 2);
      expect(m.hv.acct.since(before).irqInject).toBe(0);
      expect(Buffer.from(buf).equals(Buffer.from(data.subarray(32 * 512, 48 * 512)))).toBe(true);
    } finally {
      await m.close();
    }
  });
});
