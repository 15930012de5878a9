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
import { machineClock, type VirtualClock } from "./clock.ts";
import { Piix4Pm } from "./piix4-pm.ts";
import { FwCfg } from "./fw-cfg.ts";

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
   * bridges' subsystem IDs, the floppy controller's DIR at 0x3F7 and the fw_cfg device at 0x510
   * (docs/conformance.md A5).
   */
  compat?: CompatProfile;
}

export interface Pc {
  hv: Hypervisor;
  ide: PiixIde;
  pci: PciHost;
  hostBridge: PlainPciFunction;
  isaBridge: PlainPciFunction;
  /** The PIIX4 power-management function at 00:01.3 ("qemu-7.2" profile only; piix4-pm.ts). */
  pm: Piix4Pm | null;
  /** The virtual clock its PM timer counts (qtest `clock_step` moves it). */
  clock: VirtualClock;
  /** BAR4 base when firmwareInit placed it, else null (the guest must assign it). */
  bmBase: number | null;
  /**
   * Reset the PC now, as QEMU 7.2's qemu_system_reset does to its devices: Reset Control to 0, every PCI
   * function's header back to its reset values (the IDE function's BAR4 unassigned, command 0: the state before
   * firmware ran, whatever `firmwareInit` did), the IDE channels, drives and Bus Masters reset (`PiixIde.reset`).
   * Media stay inserted.
   */
  reset(): void;
  /** Called after each reset the guest asked for through port 0xCF9 (QEMU's RESET event, "guest-reset"). */
  onGuestReset: (() => void) | null;
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
  if (qemu) {
    // The chipset registers QEMU 7.2 shows at reset (read from QEMU 7.2): the i440FX's DRAM control (57h) and
    // SMRAM (72h); the PIIX3's as its reset handler writes them (IORT 4Dh, XBCS 0003h, PIRQ routing disabled,
    // top of memory, motherboard IRQ and DMA routing off, PCSC, SMI control, fast-off timer). A reset restores them.
    hostBridge.config[0x57] = 0x10;
    hostBridge.config[0x72] = 0x02;
    hostBridge.captureResetState();
    const isa = isaBridge.config;
    isa.set([0x4d, 0x00, 0x03, 0x00], 0x4c);
    isa.fill(0x80, 0x60, 0x64);
    isa[0x69] = 0x02;
    isa[0x70] = 0x80;
    isa[0x76] = isa[0x77] = 0x0c;
    isa[0x78] = 0x02;
    isa[0xa0] = 0x08;
    isa[0xa8] = 0x0f;
    isaBridge.captureResetState();
  }
  pci.add(0, 0, 0, hostBridge);
  pci.add(0, 1, 0, isaBridge);
  pci.add(0, IDE_PCI_DEVICE, IDE_PCI_FUNCTION, ide);
  const clock = machineClock(hv);
  let acpi: Piix4Pm | null = null;
  let fwCfg: FwCfg | null = null;
  if (qemu) {
    // PIIX4 power management (00:01.3) as QEMU 7.2 shows it: its configuration space at reset, the ACPI PM I/O
    // block once PMBA is enabled, the GPE0 block (piix4-pm.ts).
    acpi = new Piix4Pm(hv.bus, hv.irq, clock, qemuIds);
    pci.add(0, 1, 3, acpi);
    // Digital Input Register of the floppy controller QEMU's pc always has: 80h (disk changed), writes ignored.
    hv.bus.register(0x3f7, 1, { ioRead: () => 0x80, ioWrite: () => {} }, "fdc-dir");
    // QEMU's firmware configuration device at 0x510 (fw-cfg.ts): the RAM size libqos's allocator reads, and more.
    fwCfg = new FwCfg({ ramSize: hv.mem.size, mem: hv.mem });
    fwCfg.attach(hv.bus);
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
  const pc: Pc = {
    hv,
    ide,
    pci,
    hostBridge,
    isaBridge,
    pm: acpi,
    clock,
    bmBase,
    reset() {
      pci.reset();
      // The i440FX has no reset of its own beyond the PCI header; PIIX3's and PIIX4's rewrite their registers.
      hostBridge.reset(false);
      isaBridge.reset(true);
      acpi?.reset(true);
      fwCfg?.reset();
      ide.reset();
    },
    onGuestReset: null,
  };
  const guestReset = (): void => {
    pc.reset();
    pc.onGuestReset?.();
  };
  // QEMU 7.2 only requests the reset (qemu_system_reset_request); its main loop performs it on its next
  // iteration, so accesses later in the same qtest chunk still see the old state (observed). Real hardware
  // resets at once.
  pci.onResetRequest = qemu ? () => ide.queueBottomHalf(guestReset) : guestReset;
  return pc;
}
