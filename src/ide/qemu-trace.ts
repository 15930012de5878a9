/**
 * QEMU 7.2's IDE trace events, for `-trace ide_*` / `-trace bmdma_*` on the launcher: the events QEMU's port
 * handlers emit (hw/ide/core.c ide_ioport_read/write, ide_status_read, ide_ctrl_write, ide_data_*, ide_exec_cmd;
 * hw/ide/piix.c bmdma_read/write; hw/ide/pci.c bmdma_cmd_writeb, bmdma_addr_read/write), emitted at the same
 * points, under the same conditions and with the same text as QEMU's format strings (hw/ide/trace-events) give
 * them. The events QEMU emits from inside its block layer and ATAPI code (ide_sector_read, ide_dma_cb,
 * ide_reset, ide_atapi_cmd, ...) are not among them.
 *
 * QEMU prints host pointers for `bus %p` and `IDEState %p`; xenide prints fixed stand-ins with the same layout (a
 * bus, and its two IDEStates at QEMU 7.2's offsets 0x88 and 0x460 from it), the same in every run, so two runs
 * can be compared line by line.
 */

/** The events, in QEMU's order (`-trace help` lists them so). */
export const QEMU_IDE_TRACE_EVENTS = [
  "ide_ioport_read",
  "ide_ioport_write",
  "ide_status_read",
  "ide_ctrl_write",
  "ide_data_readw",
  "ide_data_writew",
  "ide_data_readl",
  "ide_data_writel",
  "ide_exec_cmd",
  "bmdma_cmd_writeb",
  "bmdma_addr_read",
  "bmdma_addr_write",
  "bmdma_read",
  "bmdma_write",
] as const;

export type QemuIdeTraceEvent = (typeof QEMU_IDE_TRACE_EVENTS)[number];

/** Where the enabled events go. The text of an event is made only when `on(event)` says it is wanted. */
export interface QemuIdeTrace {
  on(event: QemuIdeTraceEvent): boolean;
  /** One event: its name and the text QEMU's format string makes of its arguments. */
  emit(event: QemuIdeTraceEvent, text: string): void;
}

/** ATA_IOPORT_RR_lookup (hw/ide/core.c): command block register names for reads. */
const READ_NAMES = [
  "Data",
  "Error",
  "Sector Count",
  "Sector Number",
  "Cylinder Low",
  "Cylinder High",
  "Device/Head",
  "Status",
] as const;

/** ATA_IOPORT_WR_lookup (hw/ide/core.c): command block register names for writes. */
const WRITE_NAMES = [
  "Data",
  "Features",
  "Sector Count",
  "Sector Number",
  "Cylinder Low",
  "Cylinder High",
  "Device/Head",
  "Command",
] as const;

/** `0x%0Nx` of an unsigned value. */
function hex(v: number, digits: number): string {
  return `0x${(v >>> 0).toString(16).padStart(digits, "0")}`;
}

/** The stand-in for channel `ch`'s IDEBus pointer. */
export function busPointer(ch: number): string {
  return hex(0x5a0000 + ch * 0x1000, 0);
}

/** The stand-in for the IDEState pointer of position `unit` on channel `ch` (ifs[0] at +0x88, ifs[1] at +0x460). */
export function statePointer(ch: number, unit: number): string {
  return hex(0x5a0000 + ch * 0x1000 + (unit === 0 ? 0x88 : 0x460), 0);
}

/** The texts of the events, from QEMU 7.2's hw/ide/trace-events format strings. */
export const qemuIdeTraceText = {
  ioportRead: (addr: number, reg: number, val: number, ch: number, unit: number) =>
    `IDE PIO rd @ ${hex(addr, 0)} (${READ_NAMES[reg & 7]}); val ${hex(val, 2)}; bus ${busPointer(ch)} ` +
    `IDEState ${statePointer(ch, unit)}`,
  ioportWrite: (addr: number, reg: number, val: number, ch: number, unit: number) =>
    `IDE PIO wr @ ${hex(addr, 0)} (${WRITE_NAMES[reg & 7]}); val ${hex(val, 2)}; bus ${busPointer(ch)} ` +
    `IDEState ${statePointer(ch, unit)}`,
  statusRead: (addr: number, val: number, ch: number, unit: number) =>
    `IDE PIO rd @ ${hex(addr, 0)} (Alt Status); val ${hex(val, 2)}; bus ${busPointer(ch)}; ` +
    `IDEState ${statePointer(ch, unit)}`,
  ctrlWrite: (addr: number, val: number, ch: number) =>
    `IDE PIO wr @ ${hex(addr, 0)} (Device Control); val ${hex(val, 2)}; bus ${busPointer(ch)}`,
  data: (write: boolean, long: boolean, addr: number, val: number, ch: number, unit: number) =>
    `IDE PIO ${write ? "wr" : "rd"} @ ${hex(addr, 0)} (Data: ${long ? "Long" : "Word"}); ` +
    `val ${hex(val, long ? 8 : 4)}; bus ${busPointer(ch)}; IDEState ${statePointer(ch, unit)}`,
  execCmd: (cmd: number, ch: number, unit: number) =>
    `IDE exec cmd: bus ${busPointer(ch)}; state ${statePointer(ch, unit)}; cmd ${hex(cmd, 2)}`,
  /** bmdma_read / bmdma_write: `addr` is the offset in the channel's 4-byte command/status region. */
  bmdma: (write: boolean, addr: number, val: number) =>
    `bmdma: ${write ? "writeb" : "readb"} ${hex(addr, 0)} : ${hex(val, 2)}`,
  bmdmaCmd: (val: number) => `val: ${hex(val, 8)}`,
  /** bmdma_addr_read / bmdma_addr_write: the value as `0x%016` PRIx64. */
  bmdmaAddr: (data: number) => `data: ${hex(data, 16)}`,
};
