/**
 * The PIIX3 IDE function (PCI 00:01.1, 8086:7010, Intel 82371SB datasheet §2.7): configuration space, the
 * legacy-mode channels at their fixed ports and ISA IRQs 14/15, and BAR4, the 16-byte I/O block of the two Bus
 * Master engines. Usable by any host: it needs only a `PortBus` for its ports, a `GuestMemory` for DMA and a
 * way to drive two interrupt lines.
 *
 * Config space at reset is QEMU 7.2's: 70108086 02800000 01018000 ..., BAR4 =
 * 00000001, subsystem 1af4:1100, command 0000, status 0280. Bus-master enable (command bit 2) is honoured: with
 * it clear the engine never touches memory (QEMU 7.2 does not check it; see docs/conformance.md).
 */

import { PortConflictError, type PortBus } from "../hypervisor/bus.ts";
import type { InterruptController } from "../hypervisor/irq.ts";
import type { GuestMemory } from "../hypervisor/memory.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import { BM_CHANNEL_SIZE } from "../spec/ata.ts";
import { BusMaster } from "./bmdma.ts";
import { IdeChannel } from "./channel.ts";
import type { DriveConfig } from "./device.ts";
import { type PciFunction, maskedWrite, put16, put32, readLE } from "../hypervisor/pci-function.ts";
import { type CompatProfile, DEFAULT_COMPAT } from "./compat.ts";

export const PIIX3_IDE_VENDOR = 0x8086;
export const PIIX3_IDE_DEVICE = 0x7010;
export const PCI_COMMAND_IO = 0x0001;
export const PCI_COMMAND_MASTER = 0x0004;
/** BAR4 size: two channels x 8 bytes (command, -, status, -, PRD table address). */
export const BM_BAR_SIZE = 2 * BM_CHANNEL_SIZE;

export const LEGACY = [
  { cmd: 0x1f0, ctl: 0x3f6, irq: 14 },
  { cmd: 0x170, ctl: 0x376, irq: 15 },
] as const;

export interface PiixIdeOptions {
  bus: PortBus;
  mem: GuestMemory;
  /** Where interrupts go: an InterruptController, or a callback (line, level) for a foreign host. */
  irq: InterruptController | ((line: number, level: boolean) => void);
  primary?: { master?: DriveConfig; slave?: DriveConfig };
  secondary?: { master?: DriveConfig; slave?: DriveConfig };
  tracer?: () => Tracer | null;
  /**
   * false: a PCI IDE function without a Bus Master block (PCI IDE Controller Specification 1.0: programming
   * interface bit 7, "bus master IDE device", clear; SFF-8038i's BAR4 not implemented, so it is hardwired to 0
   * as PCI 3.0 §6.2.5.1 has unimplemented BARs). Firmware and drivers then use PIO only. QEMU's PIIX3 always
   * has the block; this is the controller some firmware and old drivers expect. Default true.
   */
  busMaster?: boolean;
  /**
   * Whose behaviour the function follows where the standard and QEMU 7.2 differ (default "xenide";
   * docs/conformance.md). Decided here, once, for the channels, their devices and the Bus Master engines.
   */
  compat?: CompatProfile;
}

export class PiixIde implements PciFunction {
  readonly config = new Uint8Array(256);
  private readonly wmask = new Uint8Array(256);
  readonly channels: [IdeChannel, IdeChannel];
  /** The Bus Master engine of each channel, the channel's DMA engine (in BAR4 at +0 and +8). */
  readonly busMasters: [BusMaster, BusMaster];
  private readonly bus: PortBus;
  /** Where BAR4 is decoded now (-1 = not decoded). */
  bmBase = -1;
  private readonly bmPorts;
  /** The function has a Bus Master block (BAR4); see PiixIdeOptions.busMaster. */
  readonly hasBusMaster: boolean;
  readonly compat: CompatProfile;
  /** Work deferred to the next main-loop iteration (QEMU's bottom halves), in order. */
  private readonly bottomHalves: (() => void)[] = [];

  constructor(opts: PiixIdeOptions) {
    this.bus = opts.bus;
    this.hasBusMaster = opts.busMaster ?? true;
    this.compat = opts.compat ?? DEFAULT_COMPAT;
    const qemu = this.compat === "qemu-7.2";
    const c = this.config;
    put16(c, 0x00, PIIX3_IDE_VENDOR);
    put16(c, 0x02, PIIX3_IDE_DEVICE);
    put16(c, 0x06, 0x0280); // fast back-to-back capable, DEVSEL medium
    c[0x08] = 0x00; // revision
    c[0x09] = 0x80; // prog-if: bus master capable, both channels in legacy (compatibility) mode
    c[0x0a] = 0x01; // IDE controller
    c[0x0b] = 0x01; // mass storage
    put32(c, 0x20, 0x00000001); // BAR4: I/O space, unassigned
    put16(c, 0x2c, 0x1af4); // subsystem vendor, as QEMU's PIIX3 IDE
    put16(c, 0x2e, 0x1100);
    put16(this.wmask, 0x04, 0x0407); // command: I/O, memory, bus master, INTx disable
    this.wmask[0x0c] = 0xff; // cache line size
    put32(this.wmask, 0x20, 0xfffffff0); // BAR4: 16-byte I/O block
    if (!this.hasBusMaster) {
      c[0x09] = 0x00; // prog-if: not bus master capable
      put32(c, 0x20, 0); // BAR4 not implemented: reads 0, ignores writes
      put32(this.wmask, 0x20, 0);
    }
    this.wmask[0x3c] = 0xff; // interrupt line
    this.wmask.fill(0xff, 0x40); // IDETIM 40h/42h, SIDETIM 44h and the rest of the device area are stored

    // Each drive reaps its engine's completions and owns its tags: two drives cannot share one engine. (A CD
    // drive with an empty tray has none yet.)
    const engines = [opts.primary?.master, opts.primary?.slave, opts.secondary?.master, opts.secondary?.slave]
      .map((c) => c?.engine)
      .filter((e) => e !== undefined);
    if (new Set(engines).size !== engines.length)
      throw new RangeError("each IDE drive needs its own IoEngine");
    const irq = opts.irq;
    const setLine =
      typeof irq === "function"
        ? irq
        : (line: number, level: boolean) => (level ? irq.raise(line) : irq.lower(line));
    const bme = () => (this.command & PCI_COMMAND_MASTER) !== 0;
    this.busMasters = [new BusMaster(opts.mem, bme, qemu), new BusMaster(opts.mem, bme, qemu)];
    const defer = (work: () => void): void => {
      this.bottomHalves.push(work);
      // A host that does not run them between its own steps (runBottomHalves) gets them on the next event-loop turn.
      if (this.bottomHalves.length === 1) setImmediate(() => this.runBottomHalves());
    };
    const make = (i: 0 | 1) =>
      new IdeChannel({
        index: i,
        master: i === 0 ? opts.primary?.master : opts.secondary?.master,
        slave: i === 0 ? opts.primary?.slave : opts.secondary?.slave,
        mem: opts.mem,
        setIrq: (level) => setLine(LEGACY[i].irq, level),
        dma: this.busMasters[i],
        tracer: opts.tracer,
        compat: this.compat,
        defer,
      });
    this.channels = [make(0), make(1)];
    // Legacy ports decode whatever the PCI command register says (QEMU 7.2: status reads 0x50 with CMD 0).
    for (const i of [0, 1] as const) {
      const ch = this.channels[i];
      const name = i === 0 ? "ide0" : "ide1";
      opts.bus.register(LEGACY[i].cmd, 8, ch, `${name}-cmd`);
      opts.bus.register(LEGACY[i].ctl, 1, ch.control, `${name}-ctl`);
    }
    const bms = this.busMasters;
    this.bmPorts = {
      ioRead: (port: number, size: 1 | 2 | 4) => {
        const off = port - this.bmBase;
        return bms[off >> 3 ? 1 : 0].read(off & 7, size);
      },
      ioWrite: (port: number, size: 1 | 2 | 4, value: number) => {
        const off = port - this.bmBase;
        bms[off >> 3 ? 1 : 0].write(off & 7, size, value);
      },
    };
  }

  /**
   * A Bus Master stop write asked for its in-flight transfer to be drained before the write is answered
   * ("qemu-7.2" profile, docs/conformance.md D1); true once per request.
   */
  takeDrainRequest(): boolean {
    const a = this.busMasters[0].takeDrainRequest();
    const b = this.busMasters[1].takeDrainRequest();
    return a || b;
  }

  /** Deferred device work is waiting for the next main-loop iteration (`runBottomHalves`). */
  get bottomHalvesPending(): boolean {
    return this.bottomHalves.length > 0;
  }

  /** Run the deferred device work now, as QEMU's main loop runs bottom halves between its other events. */
  runBottomHalves(): void {
    const q = this.bottomHalves;
    while (q.length > 0) q.shift()!();
  }

  /** Queue `work` for the next main-loop iteration (`runBottomHalves`), after the work already queued. */
  queueBottomHalf(work: () => void): void {
    this.bottomHalves.push(work);
    if (this.bottomHalves.length === 1) setImmediate(() => this.runBottomHalves());
  }

  /**
   * The function's part of a machine reset (QEMU's piix_ide_reset and pci_do_device_reset): both channels and
   * their drives reset (`IdeChannel.hardReset`), then each Bus Master engine (bmdma_reset); the configuration
   * header back to its reset values — command 0000h (I/O decode and bus mastering off), status 0280h, cache line
   * size and interrupt line 00h, BAR4 00000001h (unassigned, no longer decoded). The device-specific area
   * (IDETIM, SIDETIM) keeps its value in the "qemu-7.2" profile, as QEMU 7.2 has no reset for it (observed);
   * otherwise it returns to 0 (PIIX3 datasheet §2.7: IDETIM and SIDETIM default 0000h/00h on a hard reset).
   */
  reset(): void {
    for (const ch of this.channels) ch.hardReset();
    for (const bm of this.busMasters) bm.reset();
    const c = this.config;
    put16(c, 0x04, 0);
    put16(c, 0x06, 0x0280);
    c[0x0c] = 0;
    c[0x3c] = 0;
    if (this.hasBusMaster) put32(c, 0x20, 0x00000001);
    if (this.compat !== "qemu-7.2") c.fill(0, 0x40);
    this.remapBar4();
  }

  /** Orderly power-down of both channels' drives: held write-cache blocks go to their media. */
  writeBack(): void {
    for (const ch of this.channels) ch.writeBack();
  }

  get command(): number {
    return this.config[0x04]! | (this.config[0x05]! << 8);
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    return readLE(this.config, offset, size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    const oldCmd = this.command;
    maskedWrite(this.config, this.wmask, offset, size, value);
    if (offset < 0x24 && offset + size > 0x04) this.remapBar4();
    const newCmd = this.command;
    if ((oldCmd ^ newCmd) & PCI_COMMAND_MASTER) {
      for (const bm of this.busMasters) bm.enableChanged();
    }
  }

  /** BAR4 base as programmed (bits 15:4 of an I/O BAR), or 0. */
  get bar4(): number {
    return (readLE(this.config, 0x20, 4) & 0xfffffff0) >>> 0;
  }

  /**
   * Decode BAR4 where the BAR says, when I/O space is enabled and the address is a real port range (not 0, not
   * the sizing pattern, inside the 64 KiB port space). A BAR placed over ports someone else owns is not decoded.
   */
  private remapBar4(): void {
    const base = this.bar4;
    const want =
      this.hasBusMaster && this.command & PCI_COMMAND_IO && base !== 0 && base + BM_BAR_SIZE <= 0x10000
        ? base
        : -1;
    if (want === this.bmBase) return;
    if (this.bmBase >= 0) this.bus.unregister(this.bmBase);
    this.bmBase = -1;
    if (want < 0) return;
    try {
      this.bus.register(want, BM_BAR_SIZE, this.bmPorts, "piix-bmdma");
      this.bmBase = want;
    } catch (e) {
      if (!(e instanceof PortConflictError)) throw e;
    }
  }
}
