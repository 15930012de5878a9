/**
 * Property: any chunk of qtest protocol lines (known commands with random, missing, huge, negative, octal or
 * garbage arguments, empty words, CRLF, unknown commands, random text) gets exactly one reply line per request,
 * each `OK...`, `FAIL...` or `ERR...`, interleaved only with `IRQ raise/lower N` lines, and nothing escapes the
 * server.
 */
import fc from "fast-check";
import { Hypervisor } from "../../../src/hypervisor/hypervisor.ts";
import { createPc } from "../../../src/machine/pc.ts";
import { QtestServer } from "../../../src/qtest/server.ts";
import { MemoryBackend, SyncEngine } from "../../../src/storage/index.ts";

const RAM = 1 << 20;

const COMMANDS = [
  "outb",
  "outw",
  "outl",
  "inb",
  "inw",
  "inl",
  "writeb",
  "writew",
  "writel",
  "writeq",
  "readb",
  "readw",
  "readl",
  "readq",
  "read",
  "b64read",
  "write",
  "b64write",
  "memset",
  "endianness",
  "irq_intercept_in",
  "irq_intercept_out",
  "set_irq_in",
  "clock_step",
  "clock_set",
];

const numWord = fc.oneof(
  fc.integer({ min: 0, max: 0xfff }).map((n) => `0x${n.toString(16)}`),
  fc.constantFrom(
    "0x1f0",
    "0x1f7",
    "0x3f6",
    "0x170",
    "0xcf8",
    "0xcfc",
    "0xc000",
    "0xec",
    "0x20",
    "0xa0",
    "0xe0",
  ),
  fc.integer({ min: 0, max: 4096 }).map(String),
  fc.integer({ min: 0, max: 0o7777 }).map((n) => `0${n.toString(8)}`),
  fc.bigInt({ min: 0n, max: (1n << 70n) - 1n }).map((n) => `0x${n.toString(16)}`),
  fc.bigInt({ min: -(1n << 64n), max: 1n << 65n }).map(String),
  fc.integer({ min: RAM - 64, max: RAM + 64 }).map((n) => `0x${n.toString(16)}`),
  fc.constantFrom(
    "",
    "-",
    "+",
    "0x",
    "08",
    "0xg",
    "1e3",
    " 1",
    "\t2",
    "-0x1",
    "00",
    "0X1F",
    "+7",
    "18446744073709551615",
    "18446744073709551616",
  ),
  fc.string({ maxLength: 6 }),
);
// Lengths stay small (a reply of a huge `read` is a huge line; that limit has its own test).
const lenWord = fc.oneof(
  fc.integer({ min: 0, max: 600 }).map(String),
  fc.constantFrom("0", "1", "2", "0x200", "-1", "0x", "x"),
);
const dataWord = fc.oneof(
  fc.uint8Array({ maxLength: 40 }).map((b) => `0x${Buffer.from(b).toString("hex")}`),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString("base64")),
  fc.constantFrom("", "0", "0x", "0x0", "0xzz", "====", "AA=", "QUJD", "0x1234567"),
  fc.string({ maxLength: 12 }),
);
const devWord = fc.constantFrom("ioapic", "/machine/ioapic", "", "/machine/i8259", "unnamed-gpio-in", "x");

const anyLineArb: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...COMMANDS),
        fc.array(fc.oneof(numWord, numWord, lenWord, dataWord, devWord), { maxLength: 5 }),
        fc.constantFrom("", "", "", "\r", " ", "  "),
      )
      .map(([c, args, tail]) => [c, ...args].join(" ") + tail),
  },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom("read", "write", "b64write", "memset", "b64read"), numWord, lenWord, dataWord)
      .map((w) => w.join(" ")),
  },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }).map((s) => s.replace(/\n/g, " ")) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("", " ", "\r", "OUTB 0x1f0 1", "outb\t0x1f0\t1", "inb  0x1f7", "clock_step"),
  },
);

/** One request line: a newline would make it two. */
const lineArb = anyLineArb.map((l) => l.replace(/\n/g, " "));

export interface QtestCase {
  chunks: string[][];
}

export const qtestCaseArb: fc.Arbitrary<QtestCase> = fc.record({
  chunks: fc.array(fc.array(lineArb, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 3 }),
});

class Failure extends Error {}

export class QtestWorld {
  readonly stats = { cases: 0, lines: 0, ok: 0, fail: 0, err: 0, irqLines: 0 };
  private server: QtestServer;
  private out = "";

  constructor() {
    const hv = new Hypervisor({ ramSize: RAM });
    const disk = new MemoryBackend(256);
    const engine = new SyncEngine(disk);
    createPc({ hv, primary: { master: { engine } } });
    this.server = new QtestServer({ hv, vcpu: hv.vcpu(0), settle: () => engine.drain() });
    this.server.open((s) => {
      this.out += s;
    });
  }

  async run(c: QtestCase): Promise<void> {
    this.stats.cases++;
    for (const chunk of c.chunks) {
      this.out = "";
      this.server.feed(chunk.join("\n") + "\n");
      await this.server.settle();
      const lines = this.out.split("\n");
      if (lines.pop() !== "")
        throw new Failure(`output does not end with a newline: ${JSON.stringify(this.out.slice(-80))}`);
      const replies = lines.filter((l) => !/^IRQ (raise|lower) \d+$/.test(l));
      this.stats.irqLines += lines.length - replies.length;
      if (replies.length !== chunk.length) {
        throw new Failure(`${chunk.length} requests got ${replies.length} replies: ${JSON.stringify(lines)}`);
      }
      replies.forEach((r, i) => {
        if (!/^(OK|FAIL|ERR)( |$)/.test(r))
          throw new Failure(`request ${JSON.stringify(chunk[i])} got ${JSON.stringify(r)}`);
        this.stats.lines++;
        if (r.startsWith("OK")) this.stats.ok++;
        else if (r.startsWith("FAIL")) this.stats.fail++;
        else this.stats.err++;
      });
    }
  }
}

export function qtestLinesProperty(world: QtestWorld) {
  return fc.asyncProperty(qtestCaseArb, async (c) => {
    await world.run(c);
  });
}
