/**
 * Puts a xenide PCI IDE function into a v86 PC in place of v86's own IDE controller.
 *
 * - v86's IDE function (00:1e.0) is removed from its PCI bus, so firmware and Linux find only ours.
 * - Our function answers configuration cycles at 00:01.1 (the PIIX3 IDE function's place on a 440FX/PIIX3
 *   board, next to v86's PIIX3 ISA bridge at 00:01.0, which already reports itself multi-function).
 * - Every guest access to the legacy channel ports (0x1F0-0x1F7, 0x3F6; 0x170-0x177, 0x376), to the Bus
 *   Master block at BAR4 and to our function's configuration data leaves v86 as a port-I/O exit through
 *   xenide's `Hypervisor.pio`: an ioreq is written, the device model serves it from its port bus, and the
 *   exit is counted. The secondary channel's ports, where v86's own controller would keep an empty CD
 *   drive, go to the model's secondary channel, which answers as a channel with no device.
 * - The model's interrupt lines 14 and 15 drive v86's PIC.
 */

import type { AccessSize } from "../../hypervisor/bus.ts";
import type { Hypervisor } from "../../hypervisor/hypervisor.ts";
import { IOREQ_READ, IOREQ_WRITE } from "../../hypervisor/ioreq.ts";
import { IDE_PCI_DEVICE, IDE_PCI_FUNCTION } from "../../machine/pc.ts";
import type { PciHost } from "../../machine/pci-host.ts";
import { BM_BAR_SIZE, LEGACY, type PiixIde } from "../../ide/piix.ts";
import { V86_IDE_DEVFN, type V86Cpu, type V86PortEntry } from "./internals.ts";
import { RepStringBatcher, type StringIoStats } from "./string-io.ts";

/** What is attached: the hypervisor, its PCI configuration host and the PIIX IDE function behind it. */
export interface XenideIde {
  hv: Hypervisor;
  pci: PciHost;
  ide: PiixIde;
}

/** PCI configuration mechanism #1 data port (PCI Local Bus Specification 3.0, §3.2.2.3.2). */
const PCI_CONFIG_DATA = 0xcfc;

/** The legacy decode of both channels: command blocks and device control registers. */
export const LEGACY_IDE_PORTS: readonly number[] = LEGACY.flatMap((c) => [
  ...Array.from({ length: 8 }, (_, i) => c.cmd + i),
  c.ctl,
]);

export interface AttachOptions {
  /** The vCPU whose ioreq slot carries the exits (v86 has one CPU). */
  vcpu?: number;
  /** Seen before each guest port write reaches the hypervisor (command ledgers, traces). */
  onWrite?: (port: number, size: AccessSize, value: number) => void;
  /**
   * true (default): a REP INS/OUTS on a data port is one string exit per page, as under Xen (see
   * string-io.ts). false: every item v86 hands over is its own exit.
   */
  batchStringIo?: boolean;
}

export interface V86IdeAttachment {
  /** Our function's device/function number on bus 0 (00:01.1). */
  readonly devfn: number;
  /** Where the guest's BAR4 put the Bus Master block (-1 while it is not decoded). */
  readonly bmBase: number;
  /** REP INS/OUTS passes batched into string exits. */
  readonly stringIo: StringIoStats;
  detach(): void;
}

export function attachXenideIde(cpu: V86Cpu, m: XenideIde, opts: AttachOptions = {}): V86IdeAttachment {
  const { hv, pci: pciHost, ide } = m;
  const devfn = (IDE_PCI_DEVICE << 3) | IDE_PCI_FUNCTION;
  const vcpu = opts.vcpu ?? 0;
  const onWrite = opts.onWrite;
  const io = cpu.io;
  const pci = cpu.devices.pci;
  const saved = new Map<number, V86PortEntry>();
  let bmBase = -1;

  // v86's IDE function leaves the bus: firmware would otherwise boot its empty CD drive first.
  pci.devices[V86_IDE_DEVFN] = undefined;
  pci.device_spaces[V86_IDE_DEVFN] = undefined;

  const exitWrite = (port: number, size: AccessSize, value: number) => {
    if (onWrite) onWrite(port, size, value);
    hv.pio(vcpu, IOREQ_WRITE, port, size, value);
  };
  const forward = (port: number) => {
    if (!saved.has(port)) saved.set(port, io.ports[port]!);
    io.ports[port] = {
      read8: () => hv.pio(vcpu, IOREQ_READ, port, 1, 0),
      read16: () => hv.pio(vcpu, IOREQ_READ, port, 2, 0),
      read32: () => hv.pio(vcpu, IOREQ_READ, port, 4, 0) | 0,
      write8: (v: number) => exitWrite(port, 1, v & 0xff),
      write16: (v: number) => exitWrite(port, 2, v & 0xffff),
      write32: (v: number) => exitWrite(port, 4, v >>> 0),
      device: hv,
    };
  };
  const unforward = (port: number) => {
    const old = saved.get(port);
    if (old) io.ports[port] = old;
    saved.delete(port);
  };
  for (const p of LEGACY_IDE_PORTS) forward(p);

  // The data ports: where drivers and firmware move sectors with REP INSW/INSD/OUTSW/OUTSD.
  const batcher = new RepStringBatcher(cpu, hv, vcpu);
  if (opts.batchStringIo ?? true) {
    for (const { cmd: port } of LEGACY) {
      const e = io.ports[port]!;
      e.read16 = () => batcher.read(port, 2);
      e.read32 = () => batcher.read(port, 4) | 0;
      e.write16 = (v: number) => {
        if (!batcher.write(port, 2, v & 0xffff)) exitWrite(port, 2, v & 0xffff);
      };
      e.write32 = (v: number) => {
        if (!batcher.write(port, 4, v >>> 0)) exitWrite(port, 4, v >>> 0);
      };
    }
  }

  /** Follow BAR4: the guest's firmware assigns it (and may move it); the model decodes it. */
  const syncBar4 = () => {
    const base = ide.bmBase;
    if (base === bmBase) return;
    if (bmBase >= 0) for (let i = 0; i < BM_BAR_SIZE; i++) unforward(bmBase + i);
    bmBase = base;
    if (bmBase >= 0) for (let i = 0; i < BM_BAR_SIZE; i++) forward(bmBase + i);
  };
  syncBar4();

  // Configuration cycles to our function are exits to the device model, as Xen forwards the CONFIG_DATA
  // accesses of a function an ioreq server claimed; the CONFIG_ADDRESS latch stays with the host (v86, or
  // Xen itself), which hands the latched address along with the access.
  const addr = pci.pci_addr;
  const ours = () => (addr[3]! & 0x80) !== 0 && addr[2] === 0 && addr[1] === devfn;
  for (let i = 0; i < 4; i++) {
    const port = PCI_CONFIG_DATA + i;
    const orig = io.ports[port]!;
    saved.set(port, orig);
    const latch = () => {
      pciHost.address = (pci.pci_addr32[0]! & 0x80fffffc) >>> 0;
    };
    const read = (size: AccessSize, fallback: (p: number) => number) =>
      function (this: unknown, p: number): number {
        if (!ours()) return fallback.call(orig.device, p);
        latch();
        let v = hv.pio(vcpu, IOREQ_READ, port, size, 0);
        return size === 4 ? v | 0 : v;
      };
    const write = (size: AccessSize, fallback: (v: number) => void) =>
      function (this: unknown, v: number): void {
        if (!ours()) return fallback.call(orig.device, v);
        latch();
        exitWrite(port, size, size === 4 ? v >>> 0 : v & (size === 1 ? 0xff : 0xffff));
        syncBar4();
      };
    io.ports[port] = {
      read8: read(1, orig.read8),
      read16: read(2, orig.read16),
      read32: read(4, orig.read32),
      write8: write(1, orig.write8),
      write16: write(2, orig.write16),
      write32: write(4, orig.write32),
      device: orig.device,
    };
  }

  hv.irq.onChange((line, level) => {
    if (line !== LEGACY[0].irq && line !== LEGACY[1].irq) return;
    if (level) cpu.device_raise_irq(line);
    else cpu.device_lower_irq(line);
  });

  return {
    devfn,
    get bmBase() {
      return bmBase;
    },
    stringIo: batcher.stats,
    detach() {
      for (const p of [...saved.keys()]) unforward(p);
    },
  };
}
