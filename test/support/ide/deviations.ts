/**
 * The deliberate differences from QEMU 7.2, machine-readable: one entry per item of docs/conformance.md, with
 * the id used there. `diff` describes where a lock-step comparison with QEMU (settled-state snapshots and qtest
 * replies) shows the difference, so that a differential test can forgive exactly these and nothing else:
 *
 *   where    regular expression (source) matched against the comparison label ("...: err", "...: BM status",
 *            "... to 'inw 0x1f0'", "... (SRST=1): settles")
 *   qemu     the value QEMU shows there (as the comparison prints it: "0x04", "1", "OK 0x0000"), if it matters
 *   xenide   the value xenide shows there, if it matters
 *   command  the opcode(s) the last command byte must be (-1: no command written yet), if it matters
 *
 * Entries without `diff` cannot show up in the differential runs (they need a configuration or a medium those
 * runs do not use) and are listed for completeness.
 */

import { ATA_CMD } from "../../../src/spec/ata.ts";

export interface DeviationDiff {
  where: string;
  qemu?: string;
  xenide?: string;
  command?: number | number[];
}

export interface Deviation {
  /** Item in docs/conformance.md. */
  id: string;
  summary: string;
  /** The clause followed instead of QEMU's behaviour. */
  spec: string;
  diff?: DeviationDiff | DeviationDiff[];
}

const C = ATA_CMD;
const PIO_IN = [
  C.READ_SECTORS,
  C.READ_SECTORS_NORETRY,
  C.READ_SECTORS_EXT,
  C.READ_MULTIPLE_EXT,
  C.READ_MULTIPLE,
];
const PIO_OUT = [
  C.WRITE_SECTORS,
  C.WRITE_SECTORS_NORETRY,
  C.WRITE_SECTORS_EXT,
  C.WRITE_MULTIPLE_EXT,
  C.WRITE_VERIFY,
  C.WRITE_MULTIPLE,
];
const DMA = [
  C.READ_DMA_EXT,
  C.WRITE_DMA_EXT,
  C.READ_DMA,
  C.READ_DMA_NORETRY,
  C.WRITE_DMA,
  C.WRITE_DMA_NORETRY,
];
const VERIFY = [C.READ_VERIFY_SECTORS, C.READ_VERIFY_SECTORS_NORETRY, C.READ_VERIFY_SECTORS_EXT];
const SEEK = C.SEEK;

/** IDENTIFY word 59 values QEMU can have cached: multiple mode off, or valid with a power of two up to 16. */
const CACHED_WORD59 = [0, 0x101, 0x102, 0x104, 0x108, 0x110];

/** A value as a qtest reply prints it: at least four hex digits, no further zero padding. */
function qtestValue(v: number): string {
  return `OK 0x${v.toString(16).padStart(4, "0")}`;
}

export const DEVIATIONS: readonly Deviation[] = [
  {
    id: "A1",
    summary: "Error register reads 01h at power-on (QEMU 00h)",
    spec: "ATA/ATAPI-6 §9.1: power-on runs the diagnostic; Error holds its code",
    diff: [
      { where: ": err$", qemu: "0x00", xenide: "0x01", command: -1 },
      { where: "to 'inb 0x1f1'$", qemu: "OK 0x0000", xenide: "OK 0x0001", command: -1 },
    ],
  },
  {
    id: "A2",
    summary:
      "IDENTIFY: word 255 integrity word; words 82/85 bit 3 (power management); word 85 bit 0 follows SMART; " +
      "words 53-59 always current (QEMU caches them at the first IDENTIFY)",
    spec: "ATA/ATAPI-6 §8.15 (words 53-59, 82, 85, 255)",
    diff: [
      // The comparison reads the 256 IDENTIFY words as one batch, so "line N" is word N (inw) or dword N (inl).
      // Word 255 (and words 254-255 as one dword): QEMU 0.
      { where: "line 255 to 'inw 0x1f0'$", qemu: "OK 0x0000", command: C.IDENTIFY_DEVICE },
      { where: "line 127 to 'inl 0x1f0'$", qemu: "OK 0x0000", command: C.IDENTIFY_DEVICE },
      // Words 82 and 85 (inw), words 82-83 and 84-85 (inl), write cache on and off.
      {
        where: "line (82|85) to 'inw 0x1f0'$",
        qemu: "OK 0x4021",
        xenide: "OK 0x4029",
        command: C.IDENTIFY_DEVICE,
      },
      {
        where: "line 85 to 'inw 0x1f0'$",
        qemu: "OK 0x4001",
        xenide: "OK 0x4009",
        command: C.IDENTIFY_DEVICE,
      },
      {
        where: "line 41 to 'inl 0x1f0'$",
        qemu: "OK 0x74004021",
        xenide: "OK 0x74004029",
        command: C.IDENTIFY_DEVICE,
      },
      {
        where: "line 42 to 'inl 0x1f0'$",
        qemu: "OK 0x40214000",
        xenide: "OK 0x40294000",
        command: C.IDENTIFY_DEVICE,
      },
      {
        where: "line 42 to 'inl 0x1f0'$",
        qemu: "OK 0x40014000",
        xenide: "OK 0x40094000",
        command: C.IDENTIFY_DEVICE,
      },
      // Word 59 after SET MULTIPLE MODE or a reset changed the setting: QEMU keeps whatever its first IDENTIFY
      // cached (bit 8 with 1, 2, 4, 8 or 16 sectors, or 0 when multiple mode was off then); words 58-59 as a
      // dword, word 58 being 0 on the comparison's 1 MiB disk.
      ...CACHED_WORD59.map((w) => ({
        where: "line 59 to 'inw 0x1f0'$",
        qemu: qtestValue(w),
        command: C.IDENTIFY_DEVICE,
      })),
      ...CACHED_WORD59.map((w) => ({
        where: "line 29 to 'inl 0x1f0'$",
        qemu: qtestValue(w * 0x10000),
        command: C.IDENTIFY_DEVICE,
      })),
    ],
  },
  {
    id: "A4",
    summary: "Absent device 0 with a present device 1: Error/Status read 0",
    spec: "ATA/ATAPI-6 §5.2.1 (an absent device does not drive the bus)",
  },
  {
    id: "A5",
    summary:
      "No 00:01.3 ACPI function; port 0x3F7 not decoded; a 0xCF9 reset happens at once (QEMU: on the next main-loop turn)",
    spec: "scope of the modelled machine",
  },
  {
    id: "A6",
    summary:
      "IDENTIFY words 62/63/88 show a mode set before the first IDENTIFY (QEMU's first IDENTIFY resets them); " +
      "words 1/3/4/6 are the default geometry (QEMU: the translation at its first IDENTIFY)",
    spec: "ACS §7.48.3; ATA/ATAPI-6 §8.15",
  },
  {
    id: "A7",
    summary:
      "PCI CONFIG_ADDRESS bits 1:0 read as 0 and do not offset CONFIG_DATA (QEMU's pci_host.c ORs them in)",
    spec: "PCI 2.1 §3.7.4.1",
  },
  {
    id: "A8",
    summary:
      "A dword data access with 2 bytes left in the DRQ block is two 16-bit cycles (the last word moves, the block " +
      "ends); QEMU's ide_data_readl/writel need 4 bytes: the read gives 0, the write is dropped, nothing moves",
    spec: "ATA/ATAPI-6: the Data register is 16 bits wide (PIIX3 runs a dword as two 16-bit cycles)",
  },
  {
    id: "B1",
    summary: "SRST holds BSY (D0h) for as long as SRST is 1; the reset runs on the 1->0 edge",
    spec: "ATA/ATAPI-6 §9.2 software reset protocol",
    diff: { where: "\\(SRST=1\\): " },
  },
  {
    id: "B3",
    summary: "SRST selects device 0 (QEMU keeps an absent slave selected although DEV reads A0h)",
    spec: "ATA/ATAPI-6 §9.2",
  },
  {
    id: "B4",
    summary:
      "EXECUTE DEVICE DIAGNOSTIC: both devices take the signature and device 0 is selected (QEMU changes only the " +
      "executing device and keeps the selected unit, although its DEV register then reads A0h)",
    spec: "ATA/ATAPI-6 §8.11, §9.10",
    // Issued from device 1 with device 0 present: afterwards the HOB bytes are read from device 0 here and from
    // device 1 on QEMU (the signature registers agree).
    diff: { where: ": hob (feature|nsect|lbal|lbam|lbah)$", command: C.EXECUTE_DEVICE_DIAGNOSTIC },
  },
  {
    id: "C1",
    summary:
      "Address beyond the capacity: IDNF (10h) instead of ABRT (task file as QEMU leaves it); READ VERIFY and " +
      "SEEK range-checked",
    spec: "ATA/ATAPI-6 §8.23, §8.26, §8.62 error outputs (IDNF)",
    diff: [
      { where: ": err$", qemu: "0x04", xenide: "0x10", command: [...PIO_IN, ...PIO_OUT, ...DMA] },
      { where: ": err$", qemu: "0x00", xenide: "0x10", command: [...VERIFY, SEEK] },
      { where: ": alt status$", qemu: "0x50", xenide: "0x41", command: [...VERIFY, SEEK] },
    ],
  },
  {
    id: "C2",
    summary: "Storage errors: UNC for reads, DF+ABRT for writes and flushes, at the first failing sector",
    spec: "ATA/ATAPI-6 §8.26, §8.62; ACS §4.19 (write cache)",
  },
  {
    id: "C3",
    summary: "Read-only medium: write commands abort at the command, before any data phase",
    spec: "ATA/ATAPI-6 §8.62 (ABRT)",
  },
  {
    id: "C4",
    summary:
      "PCI bus-master enable honoured: with it clear the engine waits (BM 01h, ATA 58h) and touches nothing",
    spec: "PCI 2.1 §6.2.2 command bit 2; BMIDE §3",
  },
  {
    id: "C5",
    summary:
      "INITIALIZE DEVICE PARAMETERS: one interrupt; Count 0 accepted, CHS access then IDNF (QEMU crashes)",
    spec: "ATA/ATAPI-6 §8.16",
  },
  {
    id: "C6",
    summary: "CHECK POWER MODE answers 00h after STANDBY/STANDBY IMMEDIATE/SLEEP",
    spec: "ACS §7.8",
    diff: {
      where: ": nsect$",
      qemu: "0xff",
      xenide: "0x00",
      command: [C.CHECK_POWER_MODE, C.CHECK_POWER_MODE_ALT],
    },
  },
  {
    id: "C7",
    summary: "SET FEATURES 03h aborts transfer modes IDENTIFY does not advertise",
    spec: "ACS §7.48.3",
  },
  {
    id: "C8",
    summary:
      "DATA SET MANAGEMENT: 48-bit count (0 aborts), all ranges checked before any discard, LBA not advanced",
    spec: "ACS §7.10",
  },
  {
    id: "C9",
    summary: "READ VERIFY reads the medium (a medium error reports UNC)",
    spec: "ATA/ATAPI-6 §8.26",
  },
  {
    id: "C10",
    summary:
      "READ NATIVE MAX ADDRESS in CHS mode answers the last sector inside the translation (QEMU: the medium's " +
      "last sector, cylinder 32 head 8 sector 8 on a 32-cylinder drive)",
    spec: "ATA/ATAPI-6 READ NATIVE MAX ADDRESS; IDENTIFY words 54-58",
  },
  {
    id: "C11",
    summary:
      "CHS addresses checked against the translation (IDNF); 48-bit commands always by LBA (QEMU: unchecked, " +
      "CHS when Device bit 6 is clear)",
    spec: "ATA/ATAPI-6 §8.16",
  },
  {
    id: "C12",
    summary:
      "SET FEATURES CCh: every later reset restores all power-on settings (QEMU: the CHS translation, once)",
    spec: "ACS SET FEATURES subcommand CCh",
  },
  {
    id: "D1",
    summary: "Stopping the Bus Master during an async transfer: the command still completes later",
    spec: "BMIDE §3 (stopping mid-transfer is a host error; QEMU drains synchronously)",
  },
  {
    id: "D2",
    summary: "PRD entry or buffer outside guest memory: BM 06h, ATA 41h/04h, interrupt",
    spec: "BMIDE §2.2 status bit 1",
  },
  {
    id: "D3",
    summary: "PRD base address bit 0 ignored",
    spec: "BMIDE §1.2",
  },
  {
    id: "F1",
    summary: "IDENTIFY PACKET DEVICE word 255 is the integrity word (QEMU: 0000h)",
    spec: "ATA/ATAPI-6 §8.16, word 255",
    // The CD differential tests read the 256 words in one batch labelled "identify packet".
    diff: { where: "identify packet line 255 ", qemu: "OK 0x0000" },
  },
  {
    id: "F2",
    summary:
      "INQUIRY vendor/product/revision follow the configured model and firmware (QEMU: fixed QEMU strings)",
    spec: "SPC-3 §6.4.2",
  },
  {
    id: "F3",
    summary: "A storage error while reading is MEDIUM ERROR / UNRECOVERED READ ERROR (QEMU: 5h/21h)",
    spec: "SPC-3 §4.5.6, Annex D (03h/11h)",
  },
  {
    id: "F4",
    summary: "MODE SENSE page 0Eh: the bytes QEMU leaves from its buffer read 0",
    spec: "MMC-2 §5.5.4",
  },
  {
    id: "F5",
    summary: "A DMA data phase over 32 MiB is ILLEGAL REQUEST / INVALID FIELD IN CDB (QEMU: streamed)",
    spec: "SPC-3 §4.5.6",
  },
  {
    id: "F6",
    summary: "The medium removed under an in-flight read: NOT READY at once (QEMU drains first)",
    spec: "MMC-5 §4.1.8",
  },
];
