/**
 * xenide as a library: describe a machine, build it, and reach its disks as a guest would — through the
 * emulated IDE controller (every port access an ioreq exit) or the PV ring — with every exit counted.
 *
 *   import { buildMachine, openAtaPath, openPvPath } from "xenide";
 *
 * Only what is exported here is the public API; everything else may move.
 */

// Machines: the description, the builder, the paths a guest reaches a disk by.
export {
  buildMachine,
  type Machine,
  type IdeDriveHandle,
  type PvDiskHandle,
  enginesBusy,
  settleEngines,
} from "./machine/builder.ts";
export {
  type MachineDescription,
  type IdeDriveSpec,
  type PvDiskSpec,
  type MediumSpec,
  type PcSpec,
  type BlkfrontSettings,
  type IdePosition,
  IDE_POSITIONS,
  ideIndex,
  MachineConfigError,
} from "./machine/description.ts";
export {
  type DiskPath,
  type DiskVia,
  type AtaPathOptions,
  DISK_VIAS,
  AtaDiskPath,
  PvDiskPath,
  NoDeviceError,
  openAtaPath,
  openPvPath,
  isDiskVia,
} from "./machine/disk-path.ts";
export {
  connectBlkfront,
  createPvMachine,
  type PvMachine,
  type PvMachineOptions,
  dumpKeys,
} from "./machine/pv.ts";
export { createPc, type Pc, type PcOptions, BM_BASE_DEFAULT } from "./machine/pc.ts";
export { DirectIoreqTransport, type IoreqTransport, useIoreqTransport } from "./machine/ioreq-transport.ts";

// Guest drivers.
export {
  AtaDrive,
  AtaError,
  ATA_VIAS,
  type AtaDriveOptions,
  type AtaIdentity,
  type AtaVia,
  type AtaAddressing,
} from "./guest/ata-driver.ts";
export {
  Blkfront,
  BlkfrontError,
  BlkfrontIoError,
  type BlkfrontInfo,
  type BlkfrontOptions,
} from "./xenblk/blkfront.ts";

// The hypervisor a machine runs on: vCPUs, exits, accounting, tracing.
export { Hypervisor, Vcpu, type HypervisorOptions, GuestAccessError } from "./hypervisor/hypervisor.ts";
export {
  COUNTER_KINDS,
  EXIT_KINDS,
  CostModel,
  DEFAULT_COSTS,
  exitsOf,
  type CounterKind,
  type Counts,
} from "./hypervisor/accounting.ts";
export { Tracer, type TraceEvent, type TracePhase, type TraceSink } from "./hypervisor/trace.ts";
export { GuestRam, type GuestMemory, MemoryFault, isFault } from "./hypervisor/memory.ts";
export { XenHost } from "./hypervisor/xen-host.ts";
// xenstored: the store served over the xs_wire protocol, on unix sockets (Xen's own tools) and guest rings.
export { Xenstored, XenstoredConnection } from "./hypervisor/xenstored.ts";
export {
  XenstoredSocketServer,
  XenstoredSocketError,
  type XenstoredSocketOptions,
} from "./hypervisor/xenstored-socket.ts";
export { HostXenstored, xenstoredOf } from "./hypervisor/xenstored-host.ts";

// Whose behaviour the devices follow where the standard and QEMU 7.2 differ.
export { COMPAT_PROFILES, DEFAULT_COMPAT, type CompatProfile } from "./ide/compat.ts";

// Media and the engines between devices and media.
export * from "./storage/index.ts";

// QEMU's qtest protocol, served for a machine.
export { QtestServer } from "./qtest/server.ts";
export { openQtestSession, type QtestSession, type QtestSessionOptions } from "./qtest/session.ts";
export { QtestClient, QtestClientError } from "./qtest/client.ts";
export { serveStream, listenUnix, connectUnix } from "./qtest/transport.ts";
