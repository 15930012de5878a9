import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { QtestClient } from "../../src/qtest/client.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "xenide-qtest-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function image(name: string, sectors: number): { path: string; data: Uint8Array } {
  const data = new Uint8Array(sectors * 512);
  for (let s = 0; s < sectors; s++) for (let i = 0; i < 512; i++) data[s * 512 + i] = (s + i * 3) & 0xff;
  const path = join(dir, name);
  writeFileSync(path, data);
  return { path, data };
}

function xenide(args: string[]): QtestClient {
  return QtestClient.spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "qtest", ...args], {
    cwd: ROOT,
  });
}

/** Read one 512-byte sector by 256 `inw` from a PIO READ SECTORS, as a qtest client would. */
async function pioRead(c: QtestClient, lba: number): Promise<Uint8Array> {
  expect(
    await c.batch([
      "outb 0x1f6 0xe0",
      "outb 0x1f2 0x1",
      `outb 0x1f3 ${lba & 0xff}`,
      `outb 0x1f4 ${(lba >> 8) & 0xff}`,
      "outb 0x1f5 0x0",
      "outb 0x1f7 0x20",
    ]),
  ).toEqual(Array(6).fill("OK"));
  for (let i = 0; i < 100; i++) if (!((await c.in("b", 0x3f6)) & 0x80)) break;
  expect(await c.in("b", 0x3f6)).toBe(0x58);
  const words = await c.batch(Array(256).fill("inw 0x1f0"));
  const out = new Uint8Array(512);
  words.forEach((w, i) => {
    const v = Number(w.slice(3));
    out[2 * i] = v & 0xff;
    out[2 * i + 1] = v >> 8;
  });
  return out;
}

describe("xenide qtest on the emulated PC", () => {
  for (const engine of ["sync", "async"]) {
    it(`IDENTIFY with configured strings, a PIO read with IRQ lines (${engine} engine)`, async () => {
      const img = image(`a-${engine}.img`, 2048);
      const c = xenide([
        "--disk",
        img.path,
        "--engine",
        engine,
        "--model",
        "QEMU HARDDISK",
        "--serial",
        "QM00001",
      ]);
      try {
        // Reset state recorded on QEMU 7.2: status 0x50, NSECT/LBAL 01 (qemu-ide-observed §4.a).
        expect(await c.cmd("inb 0x1f7")).toBe("OK 0x0050");
        expect(await c.cmd("inw 0x1f2")).toBe("OK 0x0101");
        expect(await c.cmd("irq_intercept_in ioapic")).toBe("OK");
        expect(await c.batch(["outb 0x1f6 0xa0", "outb 0x1f7 0xec"])).toEqual(["OK", "OK"]);
        expect(c.irqEvents).toEqual(["IRQ raise 14"]);
        const words = (await c.batch(Array(256).fill("inw 0x1f0"))).map((w) => Number(w.slice(3)));
        // Words 27-46: "QEMU HARDDISK" byte-swapped per word; words 10-19 "QM00001".
        expect(words.slice(27, 30)).toEqual([0x5145, 0x4d55, 0x2048]);
        expect(words.slice(10, 14)).toEqual([0x514d, 0x3030, 0x3030, 0x3120]);
        expect(await c.cmd("inb 0x1f7")).toBe("OK 0x0050");
        expect(c.irqEvents).toEqual(["IRQ raise 14", "IRQ lower 14"]);
        const got = await pioRead(c, 77);
        expect(Buffer.from(got).equals(Buffer.from(img.data.subarray(77 * 512, 78 * 512)))).toBe(true);
        expect(c.irqLevel(14)).toBe(1);
        expect(await c.cmd("outb 0x10000 1")).toMatch(/^FAIL /);
        expect(await c.cmd("endianness")).toBe("OK little");
      } finally {
        await c.close();
      }
    });
  }

  for (const engine of ["sync", "async"]) {
    it(`a DMA read issued in one batch completes between chunks, in order (${engine} engine)`, async () => {
      const img = image(`dma-${engine}.img`, 64);
      const c = xenide(["--disk", img.path, "--engine", engine]);
      try {
        // PRD: one entry, 512 bytes at 0x20000, end of table (PIIX BMIDE: base, byte count, EOT bit 15).
        const prd = Buffer.alloc(8);
        prd.writeUInt32LE(0x20000, 0);
        prd.writeUInt16LE(512, 4);
        prd.writeUInt16LE(0x8000, 6);
        const replies = await c.batch([
          // BAR4 = 0xc000, PCI command: I/O space + bus master (what firmware does).
          "outl 0xcf8 0x80000920",
          "outl 0xcfc 0xc001",
          "outl 0xcf8 0x80000904",
          "outw 0xcfc 0x5",
          "memset 0x20000 512 0xa5",
          `write 0x10000 8 0x${prd.toString("hex")}`,
          "outl 0xc004 0x10000",
          "outb 0xc002 0x6",
          "outb 0x1f6 0xe0",
          "outb 0x1f2 0x1",
          "outb 0x1f3 0x5",
          "outb 0x1f4 0x0",
          "outb 0x1f5 0x0",
          "outb 0x1f7 0xc8", // READ DMA
          "outb 0xc000 0x9", // start, towards memory
          "inb 0xc002",
          "read 0x20000 2",
        ]);
        expect(replies.slice(0, 15)).toEqual(Array(15).fill("OK"));
        // Within the chunk that started it, a sync engine has finished the transfer (Bus Master status:
        // interrupt, no longer active) and an async one has not: still active. Its completion lands only
        // between chunks, as AIO completions do between QEMU main-loop dispatches. (Where the async read's
        // bytes are by then is a race with the I/O thread, as with a real disk's DMA: not asserted.)
        const sector = Buffer.from(img.data.subarray(5 * 512, 6 * 512)).toString("hex");
        if (engine === "async") expect(replies[15]).toBe("OK 0x0001");
        else expect(replies.slice(15)).toEqual(["OK 0x0004", `OK 0x${sector.slice(0, 4)}`]);
        let st = 0x80;
        for (let i = 0; i < 100 && st & 0x88; i++) st = await c.in("b", 0x3f6);
        expect(st).toBe(0x50);
        expect(await c.in("b", 0xc002)).toBe(0x04);
        expect(await c.batch(["outb 0xc000 0x0", "read 0x20000 512"])).toEqual(["OK", `OK 0x${sector}`]);
      } finally {
        await c.close();
      }
    });
  }

  it("serves a unix socket with --socket", async () => {
    const img = image("sock.img", 256);
    const path = join(dir, "q.sock");
    const server = xenide(["--disk", img.path, "--socket", path]);
    try {
      // Start-up through tsx takes seconds on a loaded machine: wait for the "listening" line up to 30 s.
      for (let i = 0; i < 600 && !server.stderr.includes("listening"); i++)
        await new Promise((r) => setTimeout(r, 50));
      const sock = connect(path);
      await once(sock, "connect");
      const c = new QtestClient(sock, sock);
      expect(await c.cmd("inb 0x1f7")).toBe("OK 0x0050");
      expect(Buffer.from(await pioRead(c, 3)).equals(Buffer.from(img.data.subarray(3 * 512, 4 * 512)))).toBe(
        true,
      );
      sock.end();
    } finally {
      await server.close();
    }
  });

  it("a missing image is one line and a non-zero exit", async () => {
    const c = xenide(["--disk", join(dir, "nope.img")]);
    await new Promise<void>((r) => c.child!.once("exit", () => r()));
    expect(c.child!.exitCode).not.toBe(0);
    expect(c.stderr.trim().split("\n")).toHaveLength(1);
  });
});
