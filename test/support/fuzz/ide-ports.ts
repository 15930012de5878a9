/**
 * Property: whatever a guest does with the IDE controller's ports (any port, width, value and order, string I/O
 * to any address, mid-command resets, SRST, nIEN, HOB, PCI configuration writes, PRD tables anywhere in or
 * outside guest RAM), the device model throws nothing, never hangs, never touches a sector outside the image,
 * writes the medium only inside the range of the write command it accepted last (TRIM: only while DATA SET
 * MANAGEMENT runs), and afterwards answers a driver's reset, IDENTIFY, READ and WRITE correctly, with the data
 * that is really on the medium.
 *
 * Accepted commands are observed by wrapping the command table's handlers (the device's own decoding of the task
 * file gives the range); every storage request is checked as the engine receives it.
 */
import fc from "fast-check";
import { AtaDrive, type AtaVia } from "../../../src/guest/ata-driver.ts";
import { GuestAccessError, Hypervisor } from "../../../src/hypervisor/hypervisor.ts";
import type { AtaCore } from "../../../src/ide/core.ts";
import { HD_COMMANDS } from "../../../src/ide/hd/commands.ts";
import { BM_BASE_DEFAULT, createPc, type Pc } from "../../../src/machine/pc.ts";
import { ATA_CMD } from "../../../src/spec/ata.ts";
import { AsyncEngine, MemoryBackend, SyncEngine } from "../../../src/storage/index.ts";
import type { IoEngine, IoRequest } from "../../../src/storage/types.ts";
import { FirstFailure } from "./runner.ts";

const RAM = 2 * 1024 * 1024; // small, so PRD tables and buffers beyond RAM are common
const SECTORS = [2048, 300]; // primary master, secondary master

/** Initial disk contents: every 32-bit word different, so a misplaced sector shows. */
const IMAGES = SECTORS.map((n, k) => {
  const img = new Uint8Array(n * 512);
  const dv = new DataView(img.buffer);
  for (let i = 0; i < img.length; i += 4) dv.setUint32(i, (Math.imul(i, 2654435761) + k) >>> 0, true);
  return img;
});

const WRITE_LBA28 = new Set<number>([
  ATA_CMD.WRITE_SECTORS,
  ATA_CMD.WRITE_SECTORS_NORETRY,
  ATA_CMD.WRITE_VERIFY,
  ATA_CMD.WRITE_MULTIPLE,
  ATA_CMD.WRITE_DMA,
  ATA_CMD.WRITE_DMA_NORETRY,
]);
const WRITE_LBA48 = new Set<number>([
  ATA_CMD.WRITE_SECTORS_EXT,
  ATA_CMD.WRITE_DMA_EXT,
  ATA_CMD.WRITE_MULTIPLE_EXT,
]);

/** Commands worth aiming at (the rest of the 256 opcodes are reached by the random byte). */
const INTERESTING = [
  0x20, 0x21, 0x24, 0x25, 0x29, 0x30, 0x31, 0x34, 0x35, 0x39, 0x3c, 0x40, 0x41, 0x42, 0xc4, 0xc5, 0xc6, 0xc8,
  0xca, 0xec, 0xe7, 0xea, 0xef, 0x06, 0x08, 0x10, 0x70, 0x90, 0x91, 0xb0, 0xe0, 0xe1, 0xe5, 0xe6, 0xf5, 0xf8,
  0x27, 0x00, 0xa0, 0xa1,
];

export type IdeOp =
  | { t: "out"; port: number; size: 1 | 2 | 4; value: number }
  | { t: "in"; port: number; size: 1 | 2 | 4 }
  | { t: "str"; dir: "in" | "out"; port: number; size: 1 | 2 | 4; gpa: number; count: number; df: boolean }
  | {
      t: "cmd";
      ch: 0 | 1;
      dev: number;
      feature: number;
      nsect: number[];
      lba: number[];
      cmd: number;
    }
  | {
      t: "prd";
      ch: 0 | 1;
      table: number;
      entries: { addr: number; len: number; eot: boolean }[];
      start: number;
    }
  | { t: "srst"; ch: 0 | 1; nien: boolean }
  | { t: "relax" };

export interface IdeCase {
  async: boolean;
  ops: IdeOp[];
  check: { via: AtaVia; irq: boolean; ch: 0 | 1; lba: number; count: number; wlba: number; salt: number };
}

// ---- generators -----------------------------------------------------------------------------------------

const CHANNEL_PORTS = [0x1f0, 0x1f1, 0x1f2, 0x1f3, 0x1f4, 0x1f5, 0x1f6, 0x1f7, 0x3f6, 0x3f7];
const SECONDARY_PORTS = [0x170, 0x171, 0x172, 0x173, 0x174, 0x175, 0x176, 0x177, 0x376, 0x377];
const BM_PORTS = Array.from({ length: 16 }, (_, i) => BM_BASE_DEFAULT + i);

const portArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(...CHANNEL_PORTS) },
  { weight: 4, arbitrary: fc.constantFrom(...SECONDARY_PORTS) },
  { weight: 4, arbitrary: fc.constantFrom(...BM_PORTS) },
  { weight: 1, arbitrary: fc.constantFrom(0xcf8, 0xcf9, 0xcfa, 0xcfb, 0xcfc, 0xcfd, 0xcfe, 0xcff) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);
const sizeArb = fc.constantFrom<1 | 2 | 4>(1, 1, 2, 4);
// Device control values: SRST, nIEN, HOB and their combinations; otherwise anything.
const valueArb = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      0x00,
      0x02,
      0x04,
      0x06,
      0x80,
      0x82,
      0x84,
      0xe0,
      0xf0,
      0xa0,
      0xb0,
      0x40,
      0x50,
      0x01,
      0x08,
      0x09,
    ),
  },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xff }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  { weight: 1, arbitrary: fc.constantFrom(...INTERESTING) },
);
const gpaArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x10000, max: RAM - 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: RAM - 8192, max: RAM + 8192 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
);

const opArb: fc.Arbitrary<IdeOp> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({ t: fc.constant("out" as const), port: portArb, size: sizeArb, value: valueArb }),
  },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("in" as const), port: portArb, size: sizeArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("str" as const),
      dir: fc.constantFrom("in" as const, "out" as const),
      port: fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom(0x1f0, 0x170) },
        { weight: 1, arbitrary: portArb },
      ),
      size: fc.constantFrom<1 | 2 | 4>(2, 2, 4, 1),
      gpa: gpaArb,
      count: fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 1, max: 256 }) },
        { weight: 1, arbitrary: fc.constantFrom(512, 1024) },
      ),
      df: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    }),
  },
  {
    weight: 10,
    arbitrary: fc.record({
      t: fc.constant("cmd" as const),
      ch: fc.oneof(
        { weight: 4, arbitrary: fc.constant<0 | 1>(0) },
        { weight: 1, arbitrary: fc.constant<0 | 1>(1) },
      ),
      dev: fc.oneof(fc.constantFrom(0xe0, 0x40, 0xa0, 0xf0, 0x50), fc.integer({ min: 0, max: 0xff })),
      feature: fc.oneof(
        fc.constantFrom(0x02, 0x03, 0x82, 0x01, 0x66, 0xcc, 0xd8, 0xd0),
        fc.integer({ min: 0, max: 0xff }),
      ),
      // Two writes each: the first lands in the HOB (previous) half of an LBA48 register.
      nsect: fc.array(fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 0xff })), {
        minLength: 2,
        maxLength: 2,
      }),
      lba: fc.array(fc.oneof(fc.integer({ min: 0, max: 0x10 }), fc.integer({ min: 0, max: 0xff })), {
        minLength: 6,
        maxLength: 6,
      }),
      cmd: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom(...INTERESTING) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xff }) },
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("prd" as const),
      ch: fc.oneof(
        { weight: 4, arbitrary: fc.constant<0 | 1>(0) },
        { weight: 1, arbitrary: fc.constant<0 | 1>(1) },
      ),
      table: gpaArb,
      entries: fc.array(
        fc.record({
          addr: gpaArb,
          len: fc.oneof(fc.constantFrom(0, 512, 4096, 0xfffe), fc.integer({ min: 0, max: 0xffff })),
          eot: fc.boolean(),
        }),
        { minLength: 0, maxLength: 4 },
      ),
      start: fc.constantFrom(0x01, 0x09, 0x00, 0x08),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("srst" as const),
      ch: fc.constantFrom<0 | 1>(0, 0, 1),
      nien: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ t: "relax" as const }) },
);

export const ideCaseArb: fc.Arbitrary<IdeCase> = fc.record({
  async: fc.boolean(),
  ops: fc.array(opArb, { minLength: 4, maxLength: 40, size: "medium" }),
  check: fc.record({
    via: fc.constantFrom<AtaVia>("pio", "pio32", "rep", "dma"),
    irq: fc.boolean(),
    ch: fc.oneof(
      { weight: 3, arbitrary: fc.constant<0 | 1>(0) },
      { weight: 1, arbitrary: fc.constant<0 | 1>(1) },
    ),
    lba: fc.integer({ min: 0, max: 290 }),
    count: fc.integer({ min: 1, max: 9 }),
    wlba: fc.integer({ min: 0, max: 290 }),
    salt: fc.integer({ min: 0, max: 255 }),
  }),
});

// ---- the world ------------------------------------------------------------------------------------------

class Failure extends Error {}
function check(cond: boolean, what: () => string): asserts cond {
  if (!cond) throw new Failure(what());
}

/** The range a write command accepted last may write: per device. */
interface Allowed {
  cmd: number;
  lba: number;
  count: number;
}

export interface IdeStats {
  cases: number;
  portOps: number;
  commandsAccepted: number;
  writesChecked: number;
  guestFaults: number;
  recoveries: number;
}

let hooked = false;
const allowedByDevice = new WeakMap<AtaCore, Allowed>();
let accepted = 0;

/** Wrap every command handler once: record what each device accepted and the range it addressed. */
function hookCommandTable(): void {
  if (hooked) return;
  hooked = true;
  for (const [op, entry] of HD_COMMANDS.entries()) {
    if (!entry) continue;
    const inner = entry.handler;
    entry.handler = (d) => {
      accepted++;
      const lba48 = WRITE_LBA48.has(op);
      if (WRITE_LBA28.has(op) || lba48) {
        allowedByDevice.set(d, { cmd: op, lba: d.commandAddress(lba48), count: d.commandCount(lba48) });
      } else allowedByDevice.set(d, { cmd: op, lba: 0, count: 0 });
      return inner(d);
    };
  }
}

export class IdeWorld {
  readonly first = new FirstFailure();
  readonly stats: IdeStats = {
    cases: 0,
    portOps: 0,
    commandsAccepted: 0,
    writesChecked: 0,
    guestFaults: 0,
    recoveries: 0,
  };

  constructor() {
    hookCommandTable();
  }

  private build(async: boolean): {
    m: Pc;
    hv: Hypervisor;
    disks: MemoryBackend[];
    engines: IoEngine[];
    violations: string[];
  } {
    const hv = new Hypervisor({ ramSize: RAM });
    const violations: string[] = [];
    const disks = IMAGES.map((img) => new MemoryBackend(img.slice()));
    const devices: AtaCore[] = [];
    const engines = disks.map((b, k) => {
      const e: IoEngine = async ? new AsyncEngine(b) : new SyncEngine(b);
      const submit = e.submit.bind(e);
      e.submit = (r: IoRequest) => {
        this.checkRequest(r, b, devices[k], violations, k);
        submit(r);
      };
      return e;
    });
    const m = createPc({
      hv,
      firmwareInit: true,
      primary: { master: { engine: engines[0]! } },
      secondary: { master: { engine: engines[1]! } },
    });
    devices.push(...m.ide.channels.map((c) => c.devices[0]!));
    return { m, hv, disks, engines, violations };
  }

  private checkRequest(
    r: IoRequest,
    b: MemoryBackend,
    d: AtaCore | undefined,
    violations: string[],
    k: number,
  ): void {
    const count =
      r.op === "read" || r.op === "write"
        ? (r.bufs ?? []).reduce((n, x) => n + x.length, 0) / 512
        : (r.count ?? 0);
    if (r.op !== "flush") {
      if (!(
        Number.isInteger(r.sector) &&
        r.sector >= 0 &&
        Number.isInteger(count) &&
        r.sector + count <= b.sectorCount
      )) {
        violations.push(
          `disk ${k}: ${r.op} of ${count} sectors at ${r.sector} is outside the image (${b.sectorCount})`,
        );
      }
    }
    if (r.op !== "write" && r.op !== "discard") return;
    this.stats.writesChecked++;
    const a = d ? allowedByDevice.get(d) : undefined;
    if (r.op === "discard") {
      if (a?.cmd !== ATA_CMD.DATA_SET_MANAGEMENT)
        violations.push(`disk ${k}: discard while command ${a?.cmd} runs`);
      return;
    }
    if (!a || !(WRITE_LBA28.has(a.cmd) || WRITE_LBA48.has(a.cmd))) {
      violations.push(`disk ${k}: write at ${r.sector} while the last accepted command is ${a?.cmd}`);
      return;
    }
    if (r.sector < a.lba || r.sector + count > a.lba + a.count) {
      violations.push(
        `disk ${k}: write [${r.sector}, +${count}) outside command 0x${a.cmd.toString(16)} range [${a.lba}, +${a.count})`,
      );
    }
  }

  private machines = new Map<boolean, ReturnType<IdeWorld["build"]>>();

  async run(c: IdeCase): Promise<void> {
    this.stats.cases++;
    const before = accepted;
    // One machine per engine kind, kept across cases: each case starts wherever the last recovery left it.
    let world = this.machines.get(c.async);
    if (!world) {
      world = this.build(c.async);
      this.machines.set(c.async, world);
    }
    const { m, hv, disks, engines, violations } = world;
    const v = hv.vcpu(0);
    for (const op of c.ops) {
      this.stats.portOps++;
      try {
        this.apply(v, op);
      } catch (e) {
        // The hypervisor refuses string I/O whose buffer is not guest RAM before any device sees it (the
        // guest's fault, like a #PF); anything else escaping the emulator is a bug.
        if (e instanceof GuestAccessError && op.t === "str") {
          this.stats.guestFaults++;
          continue;
        }
        throw e;
      }
      if (op.t === "relax") await v.relax();
    }
    // No hang: everything submitted completes.
    for (const e of engines)
      if (e.inflight > 0) await withTimeout(e.drain(), 5000, "storage drain after the port sequence");
    await v.relax();
    check(violations.length === 0, () => violations.join("; "));
    this.stats.commandsAccepted += accepted - before;
    await this.recover(m, v, disks, c.check);
    check(violations.length === 0, () => `during recovery: ${violations.join("; ")}`);
    this.stats.recoveries++;
  }

  private apply(v: ReturnType<Hypervisor["vcpu"]>, op: IdeOp): void {
    switch (op.t) {
      case "out":
        if (op.size === 1) v.outb(op.port, op.value & 0xff);
        else if (op.size === 2) v.outw(op.port, op.value & 0xffff);
        else v.outl(op.port, op.value >>> 0);
        return;
      case "in":
        if (op.size === 1) v.inb(op.port);
        else if (op.size === 2) v.inw(op.port);
        else v.inl(op.port);
        return;
      case "str":
        if (op.dir === "in") v.ins(op.port, op.size, op.gpa, op.count, op.df);
        else v.outs(op.port, op.size, op.gpa, op.count, op.df);
        return;
      case "cmd": {
        const base = op.ch === 0 ? 0x1f0 : 0x170;
        v.outb(base + 6, op.dev);
        v.outb(base + 1, op.feature);
        for (const n of op.nsect) v.outb(base + 2, n);
        v.outb(base + 3, op.lba[3]!);
        v.outb(base + 4, op.lba[4]!);
        v.outb(base + 5, op.lba[5]!);
        v.outb(base + 3, op.lba[0]!);
        v.outb(base + 4, op.lba[1]!);
        v.outb(base + 5, op.lba[2]!);
        v.outb(base + 7, op.cmd);
        return;
      }
      case "prd": {
        const mem = v.mem;
        op.entries.forEach((e, i) => {
          mem.writeU32(op.table + i * 8, e.addr >>> 0);
          mem.writeU32(op.table + i * 8 + 4, (e.len & 0xffff) | (e.eot ? 0x80000000 : 0));
        });
        const bm = BM_BASE_DEFAULT + op.ch * 8;
        v.outl(bm + 4, op.table >>> 0);
        v.outb(bm, op.start);
        return;
      }
      case "srst": {
        const ctl = op.ch === 0 ? 0x3f6 : 0x376;
        v.outb(ctl, 0x04 | (op.nien ? 0x02 : 0));
        v.outb(ctl, op.nien ? 0x02 : 0);
        return;
      }
      case "relax":
        return;
    }
  }

  /** What a driver does after a confused guest: firmware PCI state, stop the bus master, SRST, then real I/O. */
  private async recover(
    m: Pc,
    v: ReturnType<Hypervisor["vcpu"]>,
    disks: MemoryBackend[],
    k: IdeCase["check"],
  ): Promise<void> {
    m.ide.configWrite(0x20, 4, BM_BASE_DEFAULT | 1);
    m.ide.configWrite(0x04, 2, 0x0005);
    m.ide.configWrite(0x40, 2, 0x8000);
    m.ide.configWrite(0x42, 2, 0x8000);
    const ch = k.ch;
    const ctl = ch === 0 ? 0x3f6 : 0x376;
    const bm = BM_BASE_DEFAULT + ch * 8;
    v.outb(bm, 0);
    v.outb(bm + 2, 0x06);
    v.outb(ctl, 0x04); // SRST
    v.outb(ctl, 0x00);
    for (let i = 0; i < 1000 && v.inb(ctl) & 0x80; i++) await v.relax();
    v.inb(ch === 0 ? 0x1f7 : 0x177); // acknowledge a pending interrupt
    const disk = disks[ch]!;
    const drive = new AtaDrive(v, {
      channel: ch,
      via: k.via,
      irq: k.irq,
      timeoutMs: 5000,
      bmBase: BM_BASE_DEFAULT,
      bufferSectors: 64,
    });
    const id = await drive.probe();
    check(
      id !== null && id.sectors === disk.sectorCount,
      () => `after recovery IDENTIFY reported ${id?.sectors} sectors`,
    );
    const lba = Math.min(k.lba, disk.sectorCount - k.count);
    const got = await drive.read(lba, k.count);
    const want = disk.data.subarray(lba * 512, (lba + k.count) * 512);
    check(
      Buffer.compare(got, want) === 0,
      () => `after recovery READ of ${k.count} at ${lba} (${k.via}) returned other data`,
    );
    const wlba = Math.min(k.wlba, disk.sectorCount - 2);
    const data = new Uint8Array(1024).map((_, i) => (i * 13 + k.salt) & 0xff);
    await drive.write(wlba, data);
    await drive.flush();
    check(
      Buffer.compare(disk.data.subarray(wlba * 512, wlba * 512 + 1024), data) === 0,
      () => `after recovery WRITE at ${wlba} (${k.via}) did not reach the medium`,
    );
    const back = await drive.read(wlba, 2);
    check(Buffer.compare(back, data) === 0, () => `after recovery read-back at ${wlba} differs`);
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Failure(`hang: ${what} did not finish in ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

export function idePortsProperty(world: IdeWorld) {
  return fc.asyncProperty(ideCaseArb, (c) => world.first.guard(c, () => world.run(c)));
}
