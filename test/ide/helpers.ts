/**
 * Test scaffolding for the IDE model: a machine on memory disks with either storage engine, and the raw port
 * sequences of a driver (every access goes through a vCPU, hence through an ioreq exit).
 */
import { Hypervisor, type Vcpu } from "../../src/hypervisor/index.ts";
import { LEGACY } from "../../src/ide/piix.ts";
import { BM_BASE_DEFAULT, createPc, type Pc } from "../../src/machine/pc.ts";
import {
  ATA_CMD,
  BM_CMD_READ,
  BM_CMD_START,
  BM_REG_COMMAND,
  BM_REG_PRDT,
  BM_REG_STATUS,
  BM_ST_ACTIVE,
  BM_ST_ERROR,
  BM_ST_INTR,
  REG_ALT_STATUS,
  REG_COMMAND,
  REG_DATA,
  REG_DEVICE,
  REG_DEVICE_CONTROL,
  REG_ERROR,
  REG_FEATURES,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS,
  ST_BSY,
} from "../../src/spec/ata.ts";
import {
  type BlockBackend,
  type EngineKind,
  FaultInjectingBackend,
  type FaultRule,
  makeEngine,
} from "../../src/storage/index.ts";

export const ENGINES: EngineKind[] = ["sync", "async"];

// Primary channel ports: the legacy bases plus the register offsets of src/spec/ata.ts.
const CMD_BASE = LEGACY[0].cmd;
const CTL_BASE = LEGACY[0].ctl;
export const DATA = CMD_BASE + REG_DATA;
export const ERR = CMD_BASE + REG_ERROR;
export const FEAT = CMD_BASE + REG_FEATURES;
export const NSECT = CMD_BASE + REG_SECTOR_COUNT;
export const LBAL = CMD_BASE + REG_LBA_LOW;
export const LBAM = CMD_BASE + REG_LBA_MID;
export const LBAH = CMD_BASE + REG_LBA_HIGH;
export const DEV = CMD_BASE + REG_DEVICE;
export const STATUS = CMD_BASE + REG_STATUS;
export const CMDREG = CMD_BASE + REG_COMMAND;
export const ALT = CTL_BASE + REG_ALT_STATUS;
export const CTL = CTL_BASE + REG_DEVICE_CONTROL;
export const IRQ: number = LEGACY[0].irq;

// The primary channel's Bus Master registers where firmwareInit puts BAR4.
export const BM = BM_BASE_DEFAULT;
export const BM_CMD = BM + BM_REG_COMMAND;
export const BM_STATUS = BM + BM_REG_STATUS;
export const BM_PRDT = BM + BM_REG_PRDT;

/** Sector `lba` of a patterned disk: bytes 0-3 = LBA (LE), then (lba * 7 + i) & 0xff. */
export function pattern(lba: number): Uint8Array {
  const s = new Uint8Array(512);
  new DataView(s.buffer).setUint32(0, lba, true);
  for (let i = 4; i < 512; i++) s[i] = (lba * 7 + i) & 0xff;
  return s;
}

/**
 * A sparse memory disk whose unwritten sectors read as `pattern(lba)`, generated on demand (allocating and
 * filling 16 MiB per test costs more than the tests themselves). `sector(lba)` shows what the guest would read.
 */
export class PatternDisk implements BlockBackend {
  readonly sectorSize = 512;
  readonly describe = "pattern";
  private readonly written = new Map<number, Uint8Array>();
  /** Flushes that reached the medium. */
  flushes = 0;
  constructor(
    readonly sectorCount: number,
    readonly readOnly = false,
  ) {}
  read(sector: number, bufs: readonly Uint8Array[]): void {
    for (const buf of bufs) {
      for (let i = 0; i < buf.length / 512; i++)
        buf.set(this.written.get(sector + i) ?? pattern(sector + i), i * 512);
      sector += buf.length / 512;
    }
  }
  write(sector: number, bufs: readonly Uint8Array[]): void {
    for (const buf of bufs) {
      for (let i = 0; i < buf.length / 512; i++)
        this.written.set(sector + i, buf.slice(i * 512, i * 512 + 512));
      sector += buf.length / 512;
    }
  }
  flush(): void {
    this.flushes++;
  }
  discard(sector: number, count: number): void {
    for (let i = 0; i < count; i++) this.written.set(sector + i, new Uint8Array(512));
  }
  close(): void {}
  sector(lba: number, count = 1): Uint8Array {
    const b = new Uint8Array(512 * count);
    this.read(lba, [b]);
    return b;
  }
}

export function patternedDisk(sectors: number, readOnly = false): PatternDisk {
  return new PatternDisk(sectors, readOnly);
}

export interface Rig {
  m: Pc;
  hv: Hypervisor;
  cpu: Vcpu;
  disk: PatternDisk;
  backend: BlockBackend;
  fault?: FaultInjectingBackend;
}

export interface RigOptions {
  engine: EngineKind;
  sectors?: number;
  readOnly?: boolean;
  slave?: boolean;
  firmwareInit?: boolean;
  faults?: FaultRule[];
  writeCache?: boolean;
  serial?: string;
  model?: string;
  firmware?: string;
  disk?: PatternDisk;
  /** Guest RAM (default 4 MiB). */
  ramSize?: number;
}

/** 16 MiB patterned disk on the primary master (as QEMU's opcode sweep), SeaBIOS-style PCI setup by default. */
export function rig(o: RigOptions): Rig {
  const hv = new Hypervisor({ ramSize: o.ramSize ?? 4 * 1024 * 1024 });
  const disk = o.disk ?? patternedDisk(o.sectors ?? 32768, o.readOnly);
  const fault = o.faults ? new FaultInjectingBackend(disk, o.faults) : undefined;
  const backend: BlockBackend = fault ?? disk;
  const m = createPc({
    hv,
    firmwareInit: o.firmwareInit ?? true,
    primary: {
      master: {
        engine: makeEngine(backend, o.engine),
        writeCache: o.writeCache,
        serial: o.serial,
        model: o.model,
        firmware: o.firmware,
      },
      slave: o.slave ? { engine: makeEngine(patternedDisk(2048), o.engine) } : undefined,
    },
  });
  return { m, hv, cpu: hv.vcpu(0), disk, backend, fault };
}

/** HP0 Check_Status: poll Alternate Status until BSY clears (yielding so async completions land). */
export async function waitNotBusy(cpu: Vcpu, alt = ALT): Promise<number> {
  for (let i = 0; i < 100000; i++) {
    const s = cpu.inb(alt);
    if (!(s & ST_BSY)) return s;
    await cpu.relax();
  }
  throw new Error("BSY never cleared");
}

/** Wait until the line is raised (HP3 INTRQ_Wait), with a short timeout. */
export async function waitIrq(cpu: Vcpu, line = IRQ): Promise<void> {
  if (!(await cpu.waitIrq(line, 2000))) throw new Error(`IRQ ${line} not raised`);
}

export interface TaskFile {
  err: number;
  nsect: number;
  lbal: number;
  lbam: number;
  lbah: number;
  dev: number;
  alt: number;
}

export function taskFile(cpu: Vcpu): TaskFile {
  return {
    err: cpu.inb(ERR),
    nsect: cpu.inb(NSECT),
    lbal: cpu.inb(LBAL),
    lbam: cpu.inb(LBAM),
    lbah: cpu.inb(LBAH),
    dev: cpu.inb(DEV),
    alt: cpu.inb(ALT),
  };
}

/** Program an LBA28 command's registers (device 0 or 1, LBA bit set). */
export function lba28(cpu: Vcpu, lba: number, count: number, unit = 0, feature = 0): void {
  cpu.outb(DEV, 0xe0 | (unit << 4) | ((lba >>> 24) & 0x0f));
  cpu.outb(FEAT, feature);
  cpu.outb(NSECT, count & 0xff);
  cpu.outb(LBAL, lba & 0xff);
  cpu.outb(LBAM, (lba >>> 8) & 0xff);
  cpu.outb(LBAH, (lba >>> 16) & 0xff);
}

/** Program an LBA48 command's registers: each register twice, high-order byte first. */
export function lba48(cpu: Vcpu, lba: number, count: number, feature = 0): void {
  const hi = Math.floor(lba / 0x1000000);
  cpu.outb(DEV, 0xe0);
  cpu.outb(FEAT, 0);
  cpu.outb(FEAT, feature);
  cpu.outb(NSECT, (count >>> 8) & 0xff);
  cpu.outb(NSECT, count & 0xff);
  cpu.outb(LBAL, hi & 0xff);
  cpu.outb(LBAL, lba & 0xff);
  cpu.outb(LBAM, (hi >>> 8) & 0xff);
  cpu.outb(LBAM, (lba >>> 8) & 0xff);
  cpu.outb(LBAH, (hi >>> 16) & 0xff);
  cpu.outb(LBAH, (lba >>> 16) & 0xff);
}

/** Read one DRQ block of `words` 16-bit words with single `inw`s (the slowest, most exit-heavy way). */
export function readWords(cpu: Vcpu, words: number): Uint8Array {
  const out = new Uint8Array(words * 2);
  for (let i = 0; i < words; i++) {
    const w = cpu.inw(DATA);
    out[2 * i] = w & 0xff;
    out[2 * i + 1] = w >> 8;
  }
  return out;
}

export function writeWords(cpu: Vcpu, data: Uint8Array): void {
  for (let i = 0; i < data.length; i += 2) cpu.outw(DATA, data[i]! | (data[i + 1]! << 8));
}

/** Write a PRD table at `prdt`: entries [gpa, bytes (65536 = 0), eot]. */
export function writePrdt(cpu: Vcpu, prdt: number, entries: [number, number, boolean?][]): void {
  entries.forEach(([gpa, bytes, eot], i) => {
    cpu.mem.writeU32(prdt + 8 * i, gpa);
    cpu.mem.writeU32(
      prdt + 8 * i + 4,
      (bytes & 0xffff) | ((eot ?? i === entries.length - 1) ? 0x80000000 : 0),
    );
  });
}

/**
 * QEMU ide-test send_dma_request, re-expressed: stop the engine and clear its Interrupt/Error bits, set the
 * PRD table, program the task file, issue the command, start the engine with the direction of the transfer.
 */
export function sendDma(
  cpu: Vcpu,
  cmd: number,
  lba: number,
  count: number,
  prdt: number,
  toMemory: boolean,
  feature = 0,
): void {
  cpu.outb(BM_CMD, 0);
  cpu.outb(BM_STATUS, BM_ST_ERROR | BM_ST_INTR);
  cpu.outl(BM_PRDT, prdt);
  const ext =
    cmd === ATA_CMD.READ_DMA_EXT || cmd === ATA_CMD.WRITE_DMA_EXT || cmd === ATA_CMD.DATA_SET_MANAGEMENT;
  if (ext) lba48(cpu, lba, count, feature);
  else lba28(cpu, lba, count, 0, feature);
  cpu.inb(STATUS);
  cpu.outb(CMDREG, cmd);
  cpu.outb(BM_CMD, toMemory ? BM_CMD_START | BM_CMD_READ : BM_CMD_START);
}

/** Poll the Bus Master status until the transfer is over (!(ACTIVE && !INTR)), as ide-test does. */
export async function waitBm(cpu: Vcpu): Promise<number> {
  for (let i = 0; i < 100000; i++) {
    const s = cpu.inb(BM_STATUS);
    if (!(s & BM_ST_ACTIVE) || s & BM_ST_INTR) return s;
    await cpu.relax();
  }
  throw new Error("bus master never finished");
}

/** A fresh hypervisor on which a test builds its own machine. */
export function bareHv(): Hypervisor {
  return new Hypervisor({ ramSize: 4 * 1024 * 1024 });
}
