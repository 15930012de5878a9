import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import type { AccessSize, PortIoDevice } from "../../src/hypervisor/bus.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { QtestClient } from "../../src/qtest/client.ts";
import { parseU64 } from "../../src/qtest/protocol.ts";
import { QTEST_CHUNK, QtestServer, fastNumber } from "../../src/qtest/server.ts";
import { listenUnix, serveStream } from "../../src/qtest/transport.ts";

/** A register file at 0x1f0-0x1f7: writes to +7 raise IRQ 14, reads of +7 lower it (like an ATA status read). */
class Regs implements PortIoDevice {
  readonly r = new Uint32Array(8);
  accesses: string[] = [];
  constructor(private readonly hv: Hypervisor) {}
  ioRead(port: number, size: AccessSize): number {
    this.accesses.push(`r${size}:${port.toString(16)}`);
    if (port === 0x1f7) this.hv.irq.lower(14);
    return this.r[port - 0x1f0]!;
  }
  ioWrite(port: number, size: AccessSize, value: number): void {
    this.accesses.push(`w${size}:${port.toString(16)}=${value.toString(16)}`);
    this.r[port - 0x1f0] = value;
    if (port === 0x1f7) this.hv.irq.raise(14);
  }
}

function setup(ramSize = 1 << 20) {
  const hv = new Hypervisor({ ramSize });
  const dev = new Regs(hv);
  hv.bus.register(0x1f0, 8, dev, "regs");
  const server = new QtestServer({ hv, vcpu: hv.vcpu(0) });
  const out: string[] = [];
  server.open((s) => void out.push(s));
  const run = (...lines: string[]): string[] => {
    out.length = 0;
    server.feed(lines.map((l) => l + "\n").join(""));
    return out.join("").split("\n").slice(0, -1);
  };
  return { hv, dev, server, run };
}

describe("qtest server: replies formatted as QEMU 7.2's softmmu/qtest.c", () => {
  it("port I/O goes through vCPU exits; inb/inw/inl print %04x", () => {
    const { hv, dev, run } = setup();
    expect(run("outb 0x1f2 0x1ff", "inb 0x1f2")).toEqual(["OK", "OK 0x00ff"]); // value truncated to the access size
    expect(run("outw 0x1f3 0xbeef", "inw 0x1f3")).toEqual(["OK", "OK 0xbeef"]);
    expect(run("outl 0x1f4 0x70008086", "inl 0x1f4")).toEqual(["OK", "OK 0x70008086"]);
    expect(run("inb 0x80")).toEqual(["OK 0x00ff"]); // unclaimed port floats high
    expect(run("inl 0x80")).toEqual(["OK 0xffffffff"]);
    expect(run("outb 500 1", "inb 0764")).toEqual(["OK", "OK 0x0001"]); // 500 = 0764 = 0x1f4: strtoul base 0
    expect(dev.accesses).toContain("w1:1f2=ff");
    expect(hv.acct.counts.pioIn).toBe(6);
    expect(hv.acct.counts.pioOut).toBe(4);
  });

  it("memory reads print 16 hex digits; writes are little-endian", () => {
    const { hv, run } = setup();
    expect(run("writel 0x1000 0xdeadbeef", "readq 0x1000")).toEqual(["OK", "OK 0x00000000deadbeef"]);
    expect(run("readb 0x1001", "readw 0x1002")).toEqual(["OK 0x00000000000000be", "OK 0x000000000000dead"]);
    expect(run("writeq 0x2000 0x0102030405060708", "read 0x2000 8")).toEqual(["OK", "OK 0x0807060504030201"]);
    expect(run("writew 0x3000 0x12345")).toEqual(["OK"]);
    expect(hv.mem.readU32(0x3000)).toBe(0x2345);
    expect(hv.acct.counts.pioIn + hv.acct.counts.pioOut).toBe(0); // memory commands cost no exits
  });

  it("write zero-fills short data; b64read/b64write round trip; memset", () => {
    const { hv, run } = setup();
    // QEMU 7.2 observation: `write 0x6000 4 0x01` -> bytes 01 00 00 00.
    expect(run("memset 0x6000 8 0xff", "write 0x6000 4 0x01", "read 0x6000 8")).toEqual([
      "OK",
      "OK",
      "OK 0x01000000ffffffff",
    ]);
    expect(run("b64write 0x7000 4 qwDvvg==", "read 0x7000 4", "b64read 0x7000 4")).toEqual([
      "OK",
      "OK 0xab00efbe",
      "OK qwDvvg==",
    ]);
    expect(run("memset 0x7000 0 0x55", "readb 0x7000")).toEqual(["OK", "OK 0x00000000000000ab"]);
    expect(run("write 0x7000 4 0x")).toEqual(["ERR invalid argument size"]);
    expect(hv.mem.readU8(0x7000)).toBe(0xab);
  });

  it("memory beyond RAM reads 0 and drops writes", () => {
    const { run } = setup(1 << 20);
    expect(run("writel 0x100000 0x11223344", "readl 0x100000")).toEqual(["OK", "OK 0x0000000000000000"]);
    expect(run("writeb 0xffffe 0x77", "read 0xffffe 4")).toEqual(["OK", "OK 0x77000000"]);
    expect(run("readq 0xfffffffffffffff8")).toEqual(["OK 0x0000000000000000"]);
  });

  it("FAIL for unknown commands and bad arguments, never a crash", () => {
    const { run } = setup();
    expect(run("foo 1 2")).toEqual(["FAIL Unknown command 'foo'"]);
    expect(run("")).toEqual(["FAIL Unknown command ''"]);
    const fails = run(
      "outb 0x10000 1", // QEMU g_asserts here and dies
      "inb",
      "inw zz",
      "outl 0x1f0",
      "read 0x1000 0",
      "read 0x1000",
      "write 0x1000 2 0xzz00",
      "b64write 0x1000 4 !!!!",
      "memset 0x1000 4",
      "clock_set",
      "irq_intercept_in",
      "outb  0x1f0 1", // two spaces: an empty word, as g_strsplit yields
    );
    expect(fails).toHaveLength(12);
    for (const f of fails) expect(f).toMatch(/^FAIL /);
    expect(run("endianness")).toEqual(["OK little"]);
  });

  it("a device that throws turns into FAIL for that line; the session keeps answering", () => {
    const { hv, run } = setup();
    hv.bus.register(
      0x80,
      1,
      {
        ioRead: () => {
          throw new Error("device exploded");
        },
        ioWrite: () => {},
      },
      "bomb",
    );
    expect(run("inb 0x80", "endianness", "readb 0x0")).toEqual([
      "FAIL Error: device exploded",
      "OK little",
      "OK 0x0000000000000000",
    ]);
  });

  it("clock_step/clock_set answer with the virtual clock in ns", () => {
    const { run } = setup();
    expect(run("clock_step", "clock_step 100", "clock_set 50", "clock_set 1000", "clock_step 0x10")).toEqual([
      "OK 0",
      "OK 100",
      "OK 100",
      "OK 1000",
      "OK 1016",
    ]);
  });

  it("irq_intercept_in ioapic reports level changes before the reply of the access that caused them", () => {
    const { run } = setup();
    expect(run("outb 0x1f7 0xec")).toEqual(["OK"]); // not intercepted yet: nothing reported
    expect(run("irq_intercept_in ioapic")).toEqual(["OK"]);
    expect(run("irq_intercept_in ioapic")).toEqual(["OK"]);
    expect(run("irq_intercept_in /machine/i8259")).toEqual(["FAIL Unknown device"]);
    // The line went high before the intercept; QEMU reports a change only against the level it last reported
    // (0 at start), so this lowering prints nothing.
    expect(run("inb 0x1f7")).toEqual(["OK 0x00ec"]);
    expect(run("outb 0x1f7 0x20", "inb 0x1f7")).toEqual(["IRQ raise 14", "OK", "IRQ lower 14", "OK 0x0020"]);
    expect(run("set_irq_in ioapic unnamed-gpio-in 5 1")).toEqual(["IRQ raise 5", "OK"]);
    expect(run("set_irq_in ioapic unnamed-gpio-in 5 0")).toEqual(["IRQ lower 5", "OK"]);
    expect(run("set_irq_in nodev unnamed-gpio-in 5 0")).toEqual(["FAIL Unknown device"]);
  });

  it("irq_intercept_out on the IOAPIC succeeds but reports nothing, and blocks a later intercept elsewhere", () => {
    const { run } = setup();
    expect(run("irq_intercept_out ioapic")).toEqual(["OK"]);
    expect(run("outb 0x1f7 1")).toEqual(["OK"]);
    expect(run("irq_intercept_in ioapic")).toEqual(["OK"]);
    expect(run("inb 0x1f7")).toEqual(["OK 0x0001"]);
  });

  it("parses integers like strtoull base 0, wrapping a minus sign", () => {
    expect(parseU64("0x10", "x")).toBe(16n);
    expect(parseU64("010", "x")).toBe(8n);
    expect(parseU64("0", "x")).toBe(0n);
    expect(parseU64("-1", "x")).toBe((1n << 64n) - 1n);
    expect(() => parseU64("08", "x")).toThrow();
    expect(() => parseU64("0x", "x")).toThrow();
    expect(() => parseU64("0x10000000000000000", "x")).toThrow();
  });

  it("the in-place number decoder takes only what strtoull reads the same way, and nothing else", () => {
    // Words over the characters that matter to strtoull base 0, up to 12 long: wherever the fast decoder
    // answers, parseU64 (the definition) gives the same value; where it declines, the general path decides.
    const alphabet = "0178x9aAfFgX+- \t";
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    let taken = 0;
    for (let i = 0; i < 20000; i++) {
      let w = "";
      for (let n = rand(13); n > 0; n--) w += alphabet[rand(alphabet.length)];
      const fast = fastNumber(w, 0, w.length);
      if (fast < 0) continue;
      taken++;
      expect(BigInt(fast), w).toBe(parseU64(w, "x"));
    }
    expect(taken).toBeGreaterThan(100);
    for (const w of ["0", "7", "010", "0x1f0", "0XFfFf", "65535", "0xffffffff", "07777777777", "999999999"]) {
      expect(BigInt(fastNumber(w, 0, w.length)), w).toBe(parseU64(w, "x"));
    }
    // Declined: strtoull accepts these, or rejects them, by rules the fast decoder leaves to parseU64.
    for (const w of ["", "+1", "-1", " 1", "08", "0x", "0x100000000", "1000000000", "1a", "0x1g"]) {
      expect(fastNumber(w, 0, w.length), w).toBe(-1);
    }
    // A window inside a longer string: the decoder reads only [start, end).
    expect(fastNumber("inw 0x1f0\ninw 0x1f7\n", 4, 9)).toBe(0x1f0);
  });

  it("port requests decoded in place answer exactly as the general path does", () => {
    const { run } = setup();
    // Same request spelled so that one takes the in-place decoder and the other the general parser (a
    // trailing word is ignored by QEMU's g_strsplit-based parser, and forces the general path here).
    const pairs: [string, string][] = [
      ["outb 0x1f3 0x5a", "outb 0x1f3 0x5a extra"],
      ["inb 0x1f3", "inb 0x1f3 extra"],
      ["outw 0x1f4 0xbeef", "outw 0x1f4 +0xbeef"],
      ["inw 0x1f4", "inw +0x1f4"],
      ["outl 0x1f5 0xffffffff", "outl 0x1f5 -1"],
      ["inl 0x1f5", "inl 0x1f5 "],
      ["inb 0x80", "inb 0x0080 x"],
    ];
    for (const [fast, general] of pairs) expect(run(fast), fast).toEqual(run(general));
    expect(run("outb 0x1f3 0x123456789", "inb 0x1f3")).toEqual(["OK", "OK 0x0089"]); // > 32 bits: truncated
  });
});

describe("qtest transports", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("serves a stream: a client sees replies in order and IRQ lines separately", async () => {
    const hv = new Hypervisor({ ramSize: 1 << 20 });
    hv.bus.register(0x1f0, 8, new Regs(hv), "regs");
    const server = new QtestServer({ hv, vcpu: hv.vcpu(0) });
    const toServer = new PassThrough();
    const fromServer = new PassThrough();
    const done = serveStream(server, toServer, fromServer);
    const c = new QtestClient(toServer, fromServer);
    expect(await c.cmd("irq_intercept_in ioapic")).toBe("OK");
    expect(await c.batch(["outb 0x1f7 0x30", "inb 0x1f7"])).toEqual(["OK", "OK 0x0030"]);
    expect(c.irqEvents).toEqual(["IRQ raise 14", "IRQ lower 14"]);
    expect(c.irqLevel(14)).toBe(0);
    // A batch longer than one 1024-byte chunk still answers every line, in order.
    const many = Array.from({ length: 300 }, (_, i) => `outb 0x1f2 ${i & 0xff}`);
    expect(await c.batch(many)).toEqual(many.map(() => "OK"));
    toServer.end();
    await done;
  });

  it("device work pending after a 1024-byte chunk settles before the next chunk, not within one", async () => {
    // A command register whose work completes only in settle(): a status read sees 0x80 (busy) until then.
    const hv = new Hypervisor({ ramSize: 1 << 20 });
    let pending = false;
    let settles = 0;
    hv.bus.register(
      0x1f7,
      1,
      {
        ioRead: () => (pending ? 0x80 : 0x40),
        ioWrite: () => void (pending = true),
      },
      "cmd",
    );
    const server = new QtestServer({
      hv,
      vcpu: hv.vcpu(0),
      busy: () => pending,
      settle: async () => {
        settles++;
        await new Promise((r) => setTimeout(r, 5));
        pending = false;
      },
    });
    const toServer = new PassThrough();
    const fromServer = new PassThrough();
    const done = serveStream(server, toServer, fromServer);
    const c = new QtestClient(toServer, fromServer);
    const polls = 150;
    const replies = await c.batch(["outb 0x1f7 0x1", ...Array.from({ length: polls }, () => "inb 0x1f7")]);
    // "outb 0x1f7 0x1\n" is 15 bytes and each poll 10: 100 polls end inside the first 1024 bytes.
    const inFirst = Math.floor((QTEST_CHUNK - 15) / 10);
    expect(inFirst).toBe(100);
    expect(replies.slice(1, 1 + inFirst)).toEqual(Array(inFirst).fill("OK 0x0080"));
    expect(replies.slice(1 + inFirst)).toEqual(Array(polls - inFirst).fill("OK 0x0040"));
    expect(settles).toBe(1);
    // Nothing pending: no settle at all, however many chunks.
    expect(await c.batch(Array.from({ length: polls }, () => "inb 0x1f7"))).toEqual(
      Array(polls).fill("OK 0x0040"),
    );
    expect(settles).toBe(1);
    toServer.end();
    await done;
  });

  it("listens on a unix socket and serves clients one after another", async () => {
    const dir = mkdtempSync(join(tmpdir(), "xenide-qtest-"));
    dirs.push(dir);
    const path = join(dir, "qtest.sock");
    const hv = new Hypervisor({ ramSize: 1 << 20 });
    hv.bus.register(0x1f0, 8, new Regs(hv), "regs");
    const server = new QtestServer({ hv, vcpu: hv.vcpu(0) });
    const srv = await listenUnix(server, path);
    try {
      for (const value of [0x11, 0x22]) {
        const sock = connect(path);
        await once(sock, "connect");
        const c = new QtestClient(sock, sock);
        expect(await c.cmd(`outb 0x1f3 ${value}`)).toBe("OK");
        expect(await c.cmd("inb 0x1f3")).toBe(`OK 0x00${value.toString(16)}`);
        expect(await c.cmd("bogus")).toBe("FAIL Unknown command 'bogus'");
        sock.end();
        await once(sock, "close");
      }
    } finally {
      srv.close();
    }
  });
});
