/**
 * Machine reset against QEMU 7.2, "qemu-7.2" profile, no excuses: the guest writes 06h to PIIX3's Reset Control
 * register (0xCF9) in the middle of a sequence — during a PIO data-in phase, a PIO data-out phase after
 * acknowledged blocks, a DMA transfer in flight, after SET FEATURES and SET MULTIPLE — and then every reply must
 * be QEMU's: the settled task file and Bus Master status, the configuration space of every PCI function, the Bus
 * Master registers once BAR4 is assigned again, the IDENTIFY words, and at the end both images byte for byte.
 *
 * QEMU runs with its default accelerator for -qtest (qtest), which performs the reset the guest asks for on its
 * next main-loop iteration, and without -no-reboot (which would turn the reset into a shutdown).
 */

import { afterEach, describe, expect, it } from "vitest";
import { QtestClient } from "../../src/qtest/client.ts";
import { ImageSet, patternImage, QEMU, qemuStatus, startXenideInProcess } from "./harness.ts";
import { Mismatch, Pair, PRIMARY } from "./pair.ts";
import { withStderr } from "./session.ts";

const status = qemuStatus();
const requireQemu = process.env.CI === "true";
const SECTORS = 2048;
const PRDT = 0x10000;
const BUF = 0x20000;
const { cmd: C, bm: BM } = PRIMARY;
const h = (n: number): string => `0x${n.toString(16)}`;

/** BAR4 at BM, I/O decode and bus mastering on (what the harness's PCI set-up does, without the IRQ intercept). */
const PCI_ENABLE = [
  "outl 0xcf8 0x80000920",
  `outl 0xcfc ${h(BM | 1)}`,
  "outl 0xcf8 0x80000904",
  "outw 0xcfc 0x5",
];

interface Run {
  pair: Pair;
  images: ImageSet;
  /** End both machines, their images written back (QEMU exits; xenide's machine closes). */
  end(): Promise<void>;
  stop(): Promise<void>;
}

const runs: Run[] = [];
afterEach(async () => {
  for (const r of runs.splice(0)) await r.stop().catch(() => {});
});

async function start(): Promise<Run> {
  const images = new ImageSet([patternImage(SECTORS, 7)]);
  const qemu = QtestClient.spawn(QEMU, [
    "-machine",
    "pc",
    "-S",
    "-qtest",
    "stdio",
    "-qtest-log",
    "none",
    "-display",
    "none",
    "-nodefaults",
    "-m",
    "128M",
    "-drive",
    `file=${images.qemu[0]},format=raw,if=ide,index=0,cache=writeback`,
  ]);
  const { client: xen, done } = startXenideInProcess(images.xen, "qemu-7.2");
  const pair = new Pair(qemu, xen, PRIMARY, []);
  let stopped = false;
  const run: Run = {
    pair,
    images,
    async end() {
      await Promise.allSettled([qemu.close(), xen.close()]);
      await done.catch(() => {});
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await run.end();
      images.remove();
    },
  };
  runs.push(run);
  await pair.send([...PCI_ENABLE, "irq_intercept_in ioapic"], "PCI setup");
  return run;
}

/** Dirty the PCI functions' writable registers (none that remap memory or IRQ routing). */
const PCI_DIRTY = [
  "outl 0xcf8 0x8000090c",
  "outb 0xcfc 0x10", // IDE cache line size
  "outl 0xcf8 0x8000093c",
  "outb 0xcfc 0x0e", // IDE interrupt line
  "outl 0xcf8 0x80000940",
  "outl 0xcfc 0x80008000", // IDETIM
  "outl 0xcf8 0x80000944",
  "outb 0xcfc 0x11", // SIDETIM
  "outl 0xcf8 0x8000080c",
  "outb 0xcfc 0x08", // ISA bridge cache line size
  "outl 0xcf8 0x8000084c",
  "outb 0xcfc 0x4f", // ISA bridge IORT
  "outl 0xcf8 0x8000000c",
  "outb 0xcfc 0x08", // host bridge cache line size
  "outl 0xcf8 0x80000b3c",
  "outb 0xcfc 0x09", // ACPI interrupt line
  "outb 0xcf9 0x02", // Reset Control: System Reset type
];

/** Every dword of the configuration space of 00:00.0, 00:01.0, 00:01.1 and 00:01.3. */
function pciDump(): string[] {
  const lines: string[] = [];
  for (const fn of [0x0000, 0x0800, 0x0900, 0x0b00])
    for (let off = 0; off < 256; off += 4)
      lines.push(`outl 0xcf8 ${h((0x80000000 | fn | off) >>> 0)}`, "inl 0xcfc");
  return lines;
}

/** The guest's reset, then everything a reset defines, compared. */
async function resetAndCompare(pair: Pair, label: string): Promise<void> {
  await pair.send(["outb 0xcf9 0x06"], `${label}: reset`);
  await pair.settle(`${label}: after reset`);
  await pair.send(
    ["inb 0xcf9", "inl 0xcf8", `inb ${h(BM + 2)}`],
    `${label}: RCR, CONFIG_ADDRESS, BM unmapped`,
  );
  await pair.send(pciDump(), `${label}: PCI configuration`);
  await pair.send(
    [...PCI_ENABLE, `inb ${h(BM)}`, `inb ${h(BM + 2)}`, `inl ${h(BM + 4)}`, `inb ${h(BM + 10)}`],
    `${label}: BM registers`,
  );
  for (const dev of [0xa0, 0xb0]) {
    await pair.send([`outb ${h(C + 6)} ${h(dev)}`, `outb ${h(C + 7)} 0xec`], `${label}: IDENTIFY ${h(dev)}`);
    const st = await pair.settle(`${label}: IDENTIFY ${h(dev)}`);
    if (st.alt & 0x08)
      await pair.send(
        Array.from({ length: 256 }, () => `inw ${h(C)}`),
        `${label}: IDENTIFY words`,
      );
  }
  await pair.settle(`${label}: end`);
}

/** LBA28 command block writes for device 0. */
function lba28(cmd: number, lba: number, count: number): string[] {
  return [
    `outb ${h(C + 6)} ${h(0xe0 | ((lba >>> 24) & 0xf))}`,
    `outb ${h(C + 2)} ${h(count & 0xff)}`,
    `outb ${h(C + 3)} ${h(lba & 0xff)}`,
    `outb ${h(C + 4)} ${h((lba >>> 8) & 0xff)}`,
    `outb ${h(C + 5)} ${h((lba >>> 16) & 0xff)}`,
    `outb ${h(C + 7)} ${h(cmd)}`,
  ];
}

async function scenario(
  label: string,
  body: (r: Run) => Promise<void>,
  after?: (r: Run) => Promise<void>,
): Promise<void> {
  const r = await start();
  try {
    await body(r);
    await r.pair.send(PCI_DIRTY, `${label}: dirty`);
    await resetAndCompare(r.pair, label);
    await after?.(r);
    // A reset leaves a working drive: READ SECTORS of LBA 3 afterwards.
    await r.pair.send(lba28(0x20, 3, 1), `${label}: read after reset`);
    const st = await r.pair.settle(`${label}: read after reset`);
    expect(st.alt).toBe(0x58);
    await r.pair.send(
      Array.from({ length: 256 }, () => `inw ${h(C)}`),
      `${label}: data after reset`,
    );
    await r.pair.settle(`${label}: final`);
    await r.end();
    r.pair.compareBytes(`${label}: image`, r.images.read("qemu", 0), r.images.read("xen", 0));
  } catch (e) {
    throw e instanceof Mismatch ? withStderr(e, r.pair) : e;
  }
}

const suite = status.ok || requireQemu ? describe : describe.skip;
suite(
  status.ok
    ? `machine reset against ${status.version}, no excuses`
    : `machine reset (skipped: ${status.reason})`,
  { timeout: 60_000 },
  () => {
    if (!status.ok) {
      it("needs QEMU under CI", () => {
        throw new Error(status.reason);
      });
      return;
    }

    it("in a PIO data-in phase (READ SECTORS, one and a half blocks read)", async () => {
      await scenario("pio in", async ({ pair }) => {
        await pair.send(lba28(0x20, 5, 4), "READ SECTORS");
        await pair.settle("READ SECTORS");
        await pair.send(
          Array.from({ length: 256 }, () => `inw ${h(C)}`),
          "block 1",
        );
        await pair.settle("block 2");
        // Half of the second block; its interrupt is still asserted, which QEMU's reset leaves so.
        await pair.send(
          Array.from({ length: 128 }, () => `inw ${h(C)}`),
          "half of block 2",
        );
      });
    });

    it("in a PIO data-out phase, two acknowledged blocks of WRITE SECTORS on the medium", async () => {
      await scenario("pio out", async ({ pair }) => {
        await pair.send(lba28(0x30, 10, 4), "WRITE SECTORS");
        await pair.settle("WRITE SECTORS");
        for (let b = 0; b < 2; b++) {
          await pair.send(
            Array.from({ length: 256 }, (_, i) => `outw ${h(C)} ${h(0xa000 + b * 0x100 + (i & 0xff))}`),
            `block ${b}`,
          );
          await pair.settle(`block ${b}`);
        }
        await pair.send(
          Array.from({ length: 100 }, () => `outw ${h(C)} 0xeeee`),
          "part of block 2",
        );
      });
    });

    it("with a DMA write and then a DMA read in flight", async () => {
      await scenario("dma", async ({ pair }) => {
        await pair.send(
          [
            `memset ${h(BUF)} 4096 0x5a`,
            `writel ${h(PRDT)} ${h(BUF)}`,
            `writel ${h(PRDT + 4)} 0x80001000`,
            `outl ${h(BM + 4)} ${h(PRDT)}`,
            `outb ${h(BM + 2)} 0x06`,
            ...lba28(0xca, 40, 8),
            `outb ${h(BM)} 0x01`,
            "outb 0xcf9 0x06",
          ],
          "WRITE DMA, reset while in flight",
        );
        await pair.settle("after the first reset");
        await pair.send(PCI_ENABLE, "BAR4 again");
        await pair.send(
          [`outl ${h(BM + 4)} ${h(PRDT)}`, ...lba28(0xc8, 60, 8), `outb ${h(BM)} 0x09`],
          "READ DMA started",
        );
      });
    });

    it("after SET FEATURES (write cache off, UDMA 2, revert CCh), SET MULTIPLE 8 and INITIALIZE DEVICE PARAMETERS", async () => {
      await scenario(
        "settings",
        async ({ pair }) => {
          await pair.send([`outb ${h(C + 6)} 0xa0`, `outb ${h(C + 7)} 0xec`], "IDENTIFY");
          await pair.settle("IDENTIFY");
          await pair.send(
            Array.from({ length: 256 }, () => `inw ${h(C)}`),
            "IDENTIFY words",
          );
          for (const [feat, count] of [
            [0x82, 0],
            [0x03, 0x42],
          ] as const) {
            await pair.send(
              [`outb ${h(C + 1)} ${h(feat)}`, `outb ${h(C + 2)} ${h(count)}`, `outb ${h(C + 7)} 0xef`],
              `SET FEATURES ${h(feat)}`,
            );
            await pair.settle(`SET FEATURES ${h(feat)}`);
          }
          await pair.send([`outb ${h(C + 2)} 0x08`, `outb ${h(C + 7)} 0xc6`], "SET MULTIPLE 8");
          await pair.settle("SET MULTIPLE");
          // SET FEATURES CCh (revert on reset), then a CHS translation of 4 heads, 32 sectors per track.
          await pair.send([`outb ${h(C + 1)} 0xcc`, `outb ${h(C + 7)} 0xef`], "SET FEATURES CCh");
          await pair.settle("SET FEATURES CCh");
          await pair.send([`outb ${h(C + 2)} 0x20`, `outb ${h(C + 6)} 0xa3`, `outb ${h(C + 7)} 0x91`], "IDP");
          await pair.settle("INITIALIZE DEVICE PARAMETERS");
          // nIEN and HOB set in Device Control: the reset clears both.
          await pair.send([`outb ${h(PRIMARY.ctl)} 0x82`], "nIEN, HOB");
        },
        async ({ pair }) => {
          // Which translation the reset left: READ SECTORS by CHS, cylinder 1 head 1 sector 1.
          await pair.send(
            [
              `outb ${h(C + 6)} 0xa1`,
              `outb ${h(C + 2)} 0x01`,
              `outb ${h(C + 3)} 0x01`,
              `outb ${h(C + 4)} 0x01`,
              `outb ${h(C + 5)} 0x00`,
              `outb ${h(C + 7)} 0x20`,
            ],
            "CHS READ SECTORS",
          );
          await pair.settle("CHS READ SECTORS");
          await pair.send(
            Array.from({ length: 256 }, () => `inw ${h(C)}`),
            "CHS data",
          );
          await pair.settle("CHS data read");
        },
      );
    });
  },
);
