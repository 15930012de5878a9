/**
 * A PC of the kind a Xen HVM guest sees through QEMU's "pc" (i440FX) machine, reduced to what the disk path
 * needs: PCI configuration mechanism #1 at 0xCF8/0xCFC with the i440FX host bridge (00:00.0), the PIIX3 ISA
 * bridge (00:01.0) and the PIIX3 IDE function (00:01.1), all on the hypervisor's port bus, so every register
 * access by the guest is an ioreq exit.
 */

import { Hypervisor } from "../hypervisor/hypervisor.ts";
import type { DriveConfig } from "../ide/device.ts";
import { PCI_CONFIG_ADDRESS, PciHost, PlainPciFunction } from "./pci-host.ts";
import { PCI_COMMAND_IO, PCI_COMMAND_MASTER, PiixIde } from "../ide/piix.ts";
import type { CompatProfile } from "../ide/compat.ts";

export type { DriveConfig } from "../ide/device.ts";

export interface PcOptions {
  /** Default: a new Hypervisor with its defaults. */
  hv?: Hypervisor;
  primary?: { master?: DriveConfig; slave?: DriveConfig };
  secondary?: { master?: DriveConfig; slave?: DriveConfig };
  /**
   * false (default): the state QEMU leaves after reset (BAR4 unassigned, PCI command 0, bus mastering off).
   * true: the state SeaBIOS leaves (BAR4 at BM_BASE_DEFAULT, PCI command I/O + bus master, IDETIM decode on).
   */
  firmwareInit?: boolean;
  /** false: the IDE function has no Bus Master block (PIO only; see PiixIdeOptions.busMaster). Default true. */
  busMaster?: boolean;
  /**
   * Whose behaviour the PC follows where the standard and QEMU 7.2 differ (default "xenide"; src/ide/compat.ts).
   * "qemu-7.2" also completes the machine as QEMU's pc shows it: the PIIX4 ACPI function at 00:01.3, the
   * bridges' subsystem IDs and the floppy controller's DIR at 0x3F7 (docs/conformance.md A5).
   */
  compat?: CompatProfile;
}

export interface Pc {
  hv: Hypervisor;
  ide: PiixIde;
  pci: PciHost;
  hostBridge: PlainPciFunction;
  isaBridge: PlainPciFunction;
  /** BAR4 base when firmwareInit placed it, else null (the guest must assign it). */
  bmBase: number | null;
}

export const BM_BASE_DEFAULT = 0xc000;
/** PIIX3 IDE: device 1, function 1 on bus 0. */
export const IDE_PCI_DEVICE = 1;
export const IDE_PCI_FUNCTION = 1;

export function createPc(opts: PcOptions = {}): Pc {
  const hv = opts.hv ?? new Hypervisor();
  const qemu = opts.compat === "qemu-7.2";
  const pci = new PciHost({ compat: opts.compat });
  hv.bus.register(PCI_CONFIG_ADDRESS, 8, pci, "pci-conf");
  // IDs, class and revision as QEMU 7.2's pc machine reports them; QEMU's profile also its subsystem IDs
  // (1af4:1100 on every function) and the ISA bridge's DEVSEL timing (status 0200h), read from QEMU 7.2.
  const qemuIds = qemu ? { subsystemVendor: 0x1af4, subsystem: 0x1100 } : {};
  const hostBridge = new PlainPciFunction({
    vendor: 0x8086,
    device: 0x1237,
    classCode: 0x060000,
    revision: 0x02,
    ...qemuIds,
  });
  const isaBridge = new PlainPciFunction({
    vendor: 0x8086,
    device: 0x7000,
    classCode: 0x060100,
    revision: 0x00,
    headerType: 0x80, // multi-function device: functions 1 (IDE) and up follow
    ...(qemu ? { status: 0x0200 } : {}),
    ...qemuIds,
  });
  const ide = new PiixIde({
    bus: hv.bus,
    mem: hv.mem,
    irq: hv.irq,
    primary: opts.primary,
    secondary: opts.secondary,
    tracer: () => hv.tracer,
    busMaster: opts.busMaster ?? true,
    compat: opts.compat,
  });
  pci.add(0, 0, 0, hostBridge);
  pci.add(0, 1, 0, isaBridge);
  pci.add(0, IDE_PCI_DEVICE, IDE_PCI_FUNCTION, ide);
  if (qemu) {
    // PIIX4 ACPI (00:01.3) as QEMU 7.2 shows it at reset: IDs, status 0280h, class 068000h rev 03h, INTA, the
    // PM base register's I/O indicator. Only its configuration space: the power-management block is not modelled.
    const acpi = new PlainPciFunction({
      vendor: 0x8086,
      device: 0x7113,
      classCode: 0x068000,
      revision: 0x03,
      status: 0x0280,
      ...qemuIds,
    });
    acpi.config[0x3d] = 0x01;
    acpi.config[0x40] = 0x01;
    pci.add(0, 1, 3, acpi);
    // Digital Input Register of the floppy controller QEMU's pc always has: 80h (disk changed), writes ignored.
    hv.bus.register(0x3f7, 1, { ioRead: () => 0x80, ioWrite: () => {} }, "fdc-dir");
  }
  let bmBase: number | null = null;
  if (opts.firmwareInit) {
    // What SeaBIOS's pci setup and piix_ide_setup leave behind (no BAR to place without a Bus Master block).
    if (ide.hasBusMaster) ide.configWrite(0x20, 4, BM_BASE_DEFAULT | 1);
    ide.configWrite(0x04, 2, PCI_COMMAND_IO | PCI_COMMAND_MASTER);
    ide.configWrite(0x40, 2, 0x8000); // IDETIM primary: IDE decode enable
    ide.configWrite(0x42, 2, 0x8000); // IDETIM secondary
    if (ide.hasBusMaster) bmBase = BM_BASE_DEFAULT;
  }
  return { hv, ide, pci, hostBridge, isaBridge, bmBase };
}
