/**
 * What `identify`, `read` and `write` share: their common flags, opening an image behind the emulated IDE
 * controller (image -> raw backend -> engine -> machine -> guest ATA driver), and the exit/cycle report.
 */

import type { Command } from "commander";
import {
  ATA_VIAS,
  type AtaAddressing,
  type AtaDrive,
  AtaError,
  type AtaIdentity,
} from "../guest/ata-driver.ts";
import { ATA_CMD } from "../spec/ata.ts";
import { COUNTER_KINDS, CostModel, type Counts, EXIT_KINDS, exitsOf } from "../hypervisor/accounting.ts";
import type { Hypervisor } from "../hypervisor/hypervisor.ts";
import { Tracer } from "../hypervisor/trace.ts";
import { buildMachine, type Machine } from "../machine/builder.ts";
import {
  DISK_VIAS,
  type DiskPath,
  isDiskVia,
  NoDeviceError,
  openAtaPath,
  openPvPath,
} from "../machine/disk-path.ts";
import { ImageError, type ImageFormat, isImageFormat } from "../storage/index.ts";
import { fileIdentity } from "../storage/image.ts";
import type { BlockBackend, IoEngine } from "../storage/types.ts";
import { openFailure, UsageError } from "./errors.ts";
import {
  addXenstoreOptions,
  checkXenstoreFlags,
  holdXenstore,
  startXenstore,
  type XenstoreFlags,
} from "./xenstore-options.ts";

export interface DiskFlags extends XenstoreFlags {
  /** Files the command reads or writes besides the image (an input): never a target for --trace. */
  keep?: readonly string[];
  engine: string;
  trace?: string;
  cost: string[];
  json?: boolean;
  readOnly?: boolean;
  /** The image's format, raw or qcow2 (absent: probed, as QEMU probes). */
  format?: string;
  via: string;
  poll?: boolean;
  lba48?: boolean;
  lba28?: boolean;
  multiple?: string;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** Add the flags every disk command takes. `via` is false for commands that move no sector data. */
export function addDiskOptions(cmd: Command, opts: { via: boolean; readOnlyHelp?: string }): Command {
  cmd
    .option(
      "--engine <kind>",
      "storage engine: sync (completes inside the exit) or async (event loop)",
      "sync",
    )
    .option("--trace <file>", "write every exit, IRQ and event as JSON lines to FILE")
    .option(
      "--cost <kind=cycles>",
      `override the modelled cost of one event kind (repeatable); kinds: ${COUNTER_KINDS.join(", ")}`,
      collect,
      [],
    )
    .option("--json", "print a machine-readable result")
    .option("--read-only", opts.readOnlyHelp ?? "open the image read-only")
    .option(
      "--format <format>",
      "the image's format: raw or qcow2 (default: probed from its header, as QEMU)",
    )
    .option("--poll", "poll BSY with interrupts disabled (nIEN) instead of waiting for IRQ 14");
  if (opts.via) {
    cmd
      .option("--via <method>", `how data crosses the controller: ${DISK_VIAS.join(", ")}`, "pio")
      .option("--lba48", "always use the LBA48 (EXT) commands")
      .option("--lba28", "always use the LBA28 commands")
      .option(
        "--multiple <n>",
        "READ/WRITE MULTIPLE with N sectors per DRQ block (SET MULTIPLE MODE; the drive takes 1, 2, 4, 8 or 16)",
      );
    addXenstoreOptions(cmd);
  }
  return cmd;
}

/** An integer flag: decimal or 0x hex, non-negative. */
export function parseCount(text: string, flag: string): number {
  const t = text.trim();
  const v = /^0x[0-9a-f]+$/i.test(t) ? parseInt(t, 16) : /^\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(v) || v < 0)
    throw new UsageError(`${flag} expects a non-negative integer, got '${text}'`);
  return v;
}

/** Refuse sectors past the end of the disk before any command is issued, with a message naming them. */
export function checkSectorRange(lba: number, count: number, total: number): void {
  if (lba + count > total) {
    throw new UsageError(
      `${count === 1 ? `sector ${lba} is` : `sectors ${lba}..${lba + count - 1} are`} beyond the end of the disk (${total} sectors)`,
    );
  }
}

export interface OpenedDisk {
  hv: Hypervisor;
  machine: Machine;
  backend: BlockBackend;
  engine: IoEngine;
  /** The drive's IDENTIFY data, for paths through the IDE controller. */
  identity: AtaIdentity | null;
  path: DiskPath;
  /** Counts spent on PCI setup, probe and IDENTIFY (or the PV negotiation). */
  setup: Counts;
  tracer: Tracer | null;
  close(): Promise<void>;
}

/**
 * Open `image` as a guest would reach it: on the primary master of the emulated IDE controller, probed by
 * the guest's ATA driver, or (`--via pv`) as the guest's PV disk, connected by blkfront.
 */
export async function openDisk(image: string, flags: DiskFlags): Promise<OpenedDisk> {
  if (flags.engine !== "sync" && flags.engine !== "async") {
    throw new UsageError(`--engine must be sync or async, got '${flags.engine}'`);
  }
  let costs: ReturnType<typeof CostModel.parseOverrides>;
  try {
    costs = CostModel.parseOverrides(flags.cost);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const via = flags.via ?? "pio";
  if (!isDiskVia(via)) {
    throw new UsageError(`--via must be one of ${DISK_VIAS.join(", ")}, got '${via}'`);
  }
  if (via === "pv") {
    // blkfront has no addressing modes, DRQ blocks or interrupt polling: say so rather than ignore them.
    const ideOnly = [
      flags.multiple !== undefined ? "--multiple" : "",
      flags.lba28 ? "--lba28" : "",
      flags.lba48 ? "--lba48" : "",
      flags.poll ? "--poll" : "",
    ].filter(Boolean);
    if (ideOnly.length > 0)
      throw new UsageError(
        `${ideOnly.join(", ")} ${ideOnly.length > 1 ? "apply" : "applies"} to the IDE paths (--via ${ATA_VIAS.join(", ")}), not --via pv`,
      );
  }
  if (flags.lba48 && flags.lba28) throw new UsageError("--lba48 and --lba28 exclude each other");
  if (flags.format !== undefined && !isImageFormat(flags.format)) {
    throw new UsageError(`--format must be raw or qcow2, got '${flags.format}'`);
  }
  checkXenstoreFlags(flags);
  if (flags.xenstoreSocket && via !== "pv") throw new UsageError("--xenstore-socket applies to --via pv");
  const addressing: AtaAddressing = flags.lba48 ? "lba48" : flags.lba28 ? "lba28" : "auto";
  let multiple = 0;
  if (flags.multiple !== undefined) {
    multiple = parseCount(flags.multiple, "--multiple");
    if (!(multiple >= 1 && multiple <= 128)) throw new UsageError("--multiple expects 1..128 sectors");
    if (via === "dma") throw new UsageError("--multiple applies to PIO transfers, not --via dma");
  }

  let tracer: Tracer | null = null;
  let machine: Machine | null = null;
  try {
    if (flags.trace) tracer = openTrace(flags.trace, [image, ...(flags.keep ?? [])]);
    const disk = {
      medium: {
        image,
        readOnly: flags.readOnly === true,
        ...(flags.format !== undefined ? { format: flags.format as ImageFormat } : {}),
      },
      engine: flags.engine as "sync" | "async",
    };
    try {
      machine = buildMachine({
        costs,
        tracer,
        ...(via === "pv"
          ? { pc: false as const, pv: [disk] }
          : { ide: [{ position: "primary-master" as const, ...disk }] }),
      });
    } catch (e) {
      if (e instanceof ImageError) throw openFailure(e);
      throw e;
    }
    const m = machine;
    const hv = m.hv;
    const before = hv.acct.snapshot();
    let path: DiskPath;
    let identity: AtaIdentity | null = null;
    if (via === "pv") {
      await startXenstore(m, flags);
      path = await openPvPath(m);
    } else {
      let driver: AtaDrive | undefined;
      const ata = await openAtaPath(
        m,
        via,
        { irq: !flags.poll, addressing, multiple },
        (d) => (driver = d),
      ).catch((e: unknown) => {
        // The drive took IDENTIFY but refused the block size: say what it takes (ACS-3 7.50: SET MULTIPLE
        // MODE aborts for a count the device does not support; word 47 bits 7:0 give its largest).
        if (multiple > 0 && e instanceof AtaError && e.command === ATA_CMD.SET_MULTIPLE_MODE) {
          const max = driver?.identity.multipleMax;
          const takes = max ? `; this drive takes a power of two up to ${max} (IDENTIFY word 47)` : "";
          throw new UsageError(`--multiple ${multiple}: the drive refused SET MULTIPLE MODE${takes}`);
        }
        if (e instanceof NoDeviceError)
          throw new UsageError(`${image}: no ATA device answered on the primary channel`, 1);
        throw e;
      });
      identity = ata.identity;
      path = ata;
    }
    const setup = hv.acct.since(before);
    const t = tracer;
    const handle = via === "pv" ? m.pv[0]! : m.ide.get("primary-master")!;
    return {
      hv,
      machine: m,
      backend: handle.backend,
      engine: handle.engine,
      identity,
      path,
      setup,
      tracer,
      async close() {
        await holdXenstore(flags);
        await path.close();
        await m.close();
        await t?.close();
      },
    };
  } catch (e) {
    await machine?.close();
    await tracer?.close();
    throw e;
  }
}

export interface CostReport {
  counts: Counts;
  exits: number;
  cycles: number;
  sectors: number;
  exitsPerSector: number | null;
  cyclesPerSector: number | null;
}

export function costReport(hv: Hypervisor, counts: Counts, sectors: number): CostReport {
  const exits = exitsOf(counts);
  const cycles = hv.acct.model.cycles(counts);
  return {
    counts,
    exits,
    cycles,
    sectors,
    exitsPerSector: sectors > 0 ? exits / sectors : null,
    cyclesPerSector: sectors > 0 ? cycles / sectors : null,
  };
}

/**
 * The report as aligned text lines. First the exits, kind by kind (the kinds `exitsOf` adds up: port in/out,
 * string I/O, MMIO, buffered writes, hypercalls), then "total exits", which is the sum of exactly those
 * lines; then, under their own heading, the events that are not exits (interrupt injections, event-channel
 * notifications, grant maps and copies), then the modelled cycles of everything. Zero counts are left out.
 */
export function formatCost(title: string, r: CostReport): string {
  // Must name the same kinds as exitsOf (src/hypervisor/accounting.ts); the CLI tests check the printed sum.
  const otherKinds: Record<Exclude<(typeof COUNTER_KINDS)[number], (typeof EXIT_KINDS)[number]>, string> = {
    irqInject: "interrupts injected into the guest",
    evtchnNotify: "each also counted as a hypercall exit above",
    grantMap: "grants mapped; the map/unmap hypercalls are counted above",
    grantCopy: "segments copied; the copy hypercalls are counted above",
  };
  const int = (n: number) => n.toLocaleString("en-US");
  const line = (indent: string, label: string, value: string, note = "") =>
    `${indent}${label.padEnd(16 - indent.length + 2)} ${value.padStart(12)}${note ? `  (${note})` : ""}`;
  const lines = [title, "  exits:"];
  for (const k of EXIT_KINDS) if (r.counts[k]) lines.push(line("    ", k, int(r.counts[k])));
  lines.push(line("  ", "total exits", int(r.exits), "the sum of the lines above"));
  if (r.exitsPerSector !== null) lines.push(line("  ", "exits/sector", fmtNum(r.exitsPerSector)));
  const others = (Object.keys(otherKinds) as (keyof typeof otherKinds)[]).filter((k) => r.counts[k]);
  if (others.length > 0) {
    lines.push("  other events (not exits):");
    for (const k of others) lines.push(line("    ", k, int(r.counts[k]), otherKinds[k]));
  }
  lines.push(line("  ", "cycles", int(r.cycles), "modelled: exits and other events"));
  if (r.cyclesPerSector !== null) lines.push(line("  ", "cycles/sector", fmtNum(r.cyclesPerSector)));
  return lines.join("\n") + "\n";
}

function fmtNum(n: number): string {
  return Number.isInteger(n)
    ? n.toLocaleString("en-US")
    : n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

/** Identity fields worth printing or putting in JSON (no raw words). */
export function identitySummary(id: AtaIdentity): Record<string, unknown> {
  return {
    model: id.model,
    serial: id.serial,
    firmware: id.firmware,
    sectors: id.sectors,
    bytes: id.sectors * 512,
    lba28Sectors: id.lba28Sectors,
    lba48: id.lba48,
    lba48Sectors: id.lba48Sectors,
    geometry: { cylinders: id.cylinders, heads: id.heads, sectorsPerTrack: id.sectorsPerTrack },
    multipleMax: id.multipleMax,
    multipleCurrent: id.multipleCurrent,
    dwordIo: id.dwordIo,
    dma: id.dma,
    pioModes: modes(id.pioModes),
    swdmaModes: modes(id.swdmaModes),
    mwdmaModes: modes(id.mwdmaModes),
    udmaModes: modes(id.udmaModes),
    udmaSelected: id.udmaSelected,
    flushCache: id.flushCache,
    flushCacheExt: id.flushCacheExt,
    writeCache: id.writeCacheSupported ? (id.writeCacheEnabled ? "enabled" : "disabled") : "unsupported",
  };
}

function modes(mask: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) if (mask & (1 << i)) out.push(i);
  return out;
}

export function writeOut(s: string): void {
  process.stdout.write(s);
}

/**
 * `--trace FILE`, opened and probed before anything runs: a file that cannot take the trace is a usage error,
 * and so is one that is (or links to) a file the command works on — an image or an input — which opening the
 * trace would truncate.
 */
export function openTrace(file: string, keep: readonly string[] = []): Tracer {
  // "-" is standard output elsewhere (-o -); the trace would interleave with the command's own output there.
  if (file === "-")
    throw new UsageError("--trace -: give a file name (the trace cannot share standard output)");
  const id = fileIdentity(file);
  if (id !== null && keep.some((k) => fileIdentity(k) === id))
    throw new UsageError(
      `--trace ${file}: that is a file this command reads or writes; the trace would overwrite it`,
    );
  try {
    return Tracer.toFile(file);
  } catch (e) {
    throw new UsageError(`--trace ${file}: cannot write it (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}
