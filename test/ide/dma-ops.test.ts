/**
 * The DMA seam (src/ide/dma-ops.ts) with a second implementation: a plain-buffer engine with no PRD table,
 * started by the test instead of by a Bus Master register. READ DMA, WRITE DMA and DATA SET MANAGEMENT run
 * through the ATA core exactly as they do with the PIIX Bus Master, which shows the core depends on the seam
 * only, and pins the order in which the core uses it.
 */
import { describe, expect, it } from "vitest";
import { GuestRam } from "../../src/hypervisor/index.ts";
import { IdeChannel } from "../../src/ide/channel.ts";
import { DmaPrepared, type IdeDmaOps } from "../../src/ide/dma-ops.ts";
import {
  ATA_CMD,
  CTL_SRST,
  DEV_LBA,
  DEV_OBS,
  DSM_TRIM,
  ERR_IDNF,
  REG_COMMAND,
  REG_DEVICE,
  REG_ERROR,
  REG_FEATURES,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS,
  ST_BSY,
  ST_DRDY,
  ST_DRQ,
  ST_DSC,
  ST_ERR,
} from "../../src/spec/ata.ts";
import { makeEngine, MemoryBackend } from "../../src/storage/index.ts";
import { ENGINES } from "./helpers.ts";

/** A DMA engine over one flat buffer: `go()` is the host starting it; it records every call the core makes. */
class PlainDma implements IdeDmaOps {
  readonly calls: string[] = [];
  interrupts = 0;
  private running = false;
  private owner: unknown = null;
  private run: ((owner: unknown) => void) | null = null;
  private bytes = 0;

  constructor(readonly memory: Uint8Array) {}

  /** The host starts the engine: a waiting command runs now. */
  go(): void {
    this.running = true;
    if (this.owner !== null) this.run!(this.owner);
  }

  start<T>(owner: T, run: (owner: T) => void): void {
    this.calls.push("start");
    this.owner = owner;
    this.run = run as (owner: unknown) => void;
    if (this.running) run(owner);
  }
  prepare(bytes: number): DmaPrepared {
    this.calls.push(`prepare ${bytes}`);
    if (bytes > this.memory.length) return DmaPrepared.Short;
    this.bytes = bytes;
    return DmaPrepared.Ok;
  }
  buffers(toDevice: boolean): Uint8Array[] {
    this.calls.push(`buffers ${toDevice ? "to-device" : "to-memory"}`);
    return [this.memory.subarray(0, this.bytes)];
  }
  rw(buf: Uint8Array, toDevice: boolean): void {
    this.calls.push(`rw ${buf.length} ${toDevice ? "to-device" : "to-memory"}`);
    if (toDevice) buf.set(this.memory.subarray(0, buf.length));
    else this.memory.set(buf);
  }
  commit(toMemory: boolean): void {
    this.calls.push(`commit ${toMemory ? "to-memory" : "to-device"}`);
  }
  end(transferred: boolean): void {
    this.calls.push(`end ${transferred}`);
    this.owner = null;
    this.run = null;
    this.running = false;
  }
  cancel(owner: unknown, inFlight: boolean): void {
    this.calls.push(`cancel ${inFlight}`);
    if (this.owner === owner) {
      this.owner = null;
      this.run = null;
    }
  }
  interrupt(): void {
    this.interrupts++;
  }
}

const SECTORS = 2048;

function disk(): MemoryBackend {
  const data = new Uint8Array(SECTORS * 512);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
  return new MemoryBackend(data);
}

function setup(engine: (typeof ENGINES)[number], dmaBytes = 64 * 512) {
  const backend = disk();
  const dma = new PlainDma(new Uint8Array(dmaBytes));
  let line = false;
  const ch = new IdeChannel({
    index: 0,
    master: { engine: makeEngine(backend, engine) },
    mem: new GuestRam(64 * 1024),
    setIrq: (level) => (line = level),
    dma,
  });
  const out = (reg: number, v: number) => ch.ioWrite(reg, 1, v);
  const inb = (reg: number) => ch.ioRead(reg, 1);
  /** Program a 28-bit command and write it. */
  const command = (op: number, lba: number, count: number) => {
    out(REG_DEVICE, DEV_OBS | DEV_LBA | ((lba >>> 24) & 0x0f));
    out(REG_SECTOR_COUNT, count & 0xff);
    out(REG_LBA_LOW, lba & 0xff);
    out(REG_LBA_MID, (lba >>> 8) & 0xff);
    out(REG_LBA_HIGH, (lba >>> 16) & 0xff);
    out(REG_COMMAND, op);
  };
  const settled = async () => {
    for (let i = 0; i < 1000 && ch.altStatus() & (ST_BSY | ST_DRQ) && ch.busy; i++) {
      await new Promise((r) => setTimeout(r, 0));
    }
    return ch.altStatus();
  };
  return { backend, dma, ch, out, inb, command, settled, irq: () => line };
}

describe.each(ENGINES)("the ATA core over a plain-buffer DMA engine (%s storage engine)", (engine) => {
  it("READ DMA waits for the engine, then moves the sectors into its buffer and ends the command", async () => {
    const r = setup(engine);
    r.command(ATA_CMD.READ_DMA, 100, 8);
    // Waiting for the engine: DRQ set, nothing prepared yet.
    expect(r.ch.altStatus()).toBe(ST_DRDY | ST_DSC | ST_DRQ);
    expect(r.dma.calls).toEqual(["start"]);
    r.dma.go();
    expect(await r.settled()).toBe(ST_DRDY | ST_DSC);
    expect(r.dma.memory.subarray(0, 8 * 512)).toEqual(r.backend.data.subarray(100 * 512, 108 * 512));
    expect(r.dma.calls).toEqual([
      "start",
      "prepare 4096",
      "buffers to-memory",
      "commit to-memory",
      "end true",
    ]);
    expect(r.irq()).toBe(true);
    expect(r.dma.interrupts).toBe(1);
    // The task file points past the transfer.
    expect([r.inb(REG_SECTOR_COUNT), r.inb(REG_LBA_LOW), r.inb(REG_LBA_MID)]).toEqual([0, 108, 0]);
    expect(r.inb(REG_STATUS)).toBe(ST_DRDY | ST_DSC);
    expect(r.irq()).toBe(false);
  });

  it("WRITE DMA takes the sectors from the engine's buffer to the medium", async () => {
    const r = setup(engine);
    for (let i = 0; i < 4 * 512; i++) r.dma.memory[i] = (i * 13) & 0xff;
    r.dma.go(); // started before the command: the command runs as soon as it is written
    r.command(ATA_CMD.WRITE_DMA, 200, 4);
    expect(await r.settled()).toBe(ST_DRDY | ST_DSC);
    expect(r.backend.data.subarray(200 * 512, 204 * 512)).toEqual(r.dma.memory.subarray(0, 4 * 512));
    expect(r.dma.calls).toEqual([
      "start",
      "prepare 2048",
      "buffers to-device",
      "commit to-device",
      "end true",
    ]);
    expect(r.dma.interrupts).toBe(1);
  });

  it("an engine that describes fewer bytes moves nothing and raises no interrupt", async () => {
    const r = setup(engine, 2 * 512);
    const before = r.backend.data.slice(0, 16 * 512);
    r.command(ATA_CMD.WRITE_DMA, 0, 8);
    r.dma.go();
    expect(await r.settled()).toBe(ST_DRDY | ST_DSC);
    expect(r.dma.calls).toEqual(["start", "prepare 4096", "end false"]);
    expect(r.dma.interrupts).toBe(0);
    expect(r.irq()).toBe(false);
    expect(r.backend.data.subarray(0, 16 * 512)).toEqual(before);
  });

  it("a range beyond the medium fails with IDNF before any buffer is handed out", async () => {
    const r = setup(engine);
    r.command(ATA_CMD.READ_DMA, SECTORS - 2, 4);
    r.dma.go();
    expect(await r.settled()).toBe(ST_DRDY | ST_ERR);
    expect(r.inb(REG_ERROR)).toBe(ERR_IDNF);
    expect(r.dma.calls).toEqual(["start", "prepare 2048", "end false"]);
  });

  it("DATA SET MANAGEMENT reads its range list through rw and discards the ranges", async () => {
    const r = setup(engine);
    const entries = new DataView(r.dma.memory.buffer);
    entries.setUint32(0, 10, true); // LBA 10 ...
    entries.setUint32(4, 3 << 16, true); // ... 3 sectors
    r.out(REG_DEVICE, DEV_OBS | DEV_LBA);
    r.out(REG_FEATURES, 0);
    r.out(REG_FEATURES, DSM_TRIM);
    r.out(REG_SECTOR_COUNT, 0);
    r.out(REG_SECTOR_COUNT, 1);
    r.out(REG_COMMAND, ATA_CMD.DATA_SET_MANAGEMENT);
    r.dma.go();
    expect(await r.settled()).toBe(ST_DRDY | ST_DSC);
    expect(r.dma.calls).toEqual(["start", "prepare 512", "rw 512 to-device", "end true"]);
    expect(r.backend.data.subarray(10 * 512, 13 * 512).every((b) => b === 0)).toBe(true);
    expect(r.backend.data[13 * 512 + 1]).not.toBe(0);
  });

  it("a software reset cancels a waiting command: starting the engine afterwards runs nothing", async () => {
    const r = setup(engine);
    r.command(ATA_CMD.READ_DMA, 0, 1);
    r.ch.writeControl(CTL_SRST);
    r.ch.writeControl(0);
    r.dma.go();
    expect(await r.settled()).toBe(ST_DRDY | ST_DSC);
    expect(r.dma.calls).toEqual(["start", "cancel false"]);
    expect(r.dma.memory.every((b) => b === 0)).toBe(true);
  });
});
