/**
 * CD-ROM reads through the guest's ATAPI driver (PACKET with READ(10), by PIO and by Bus Master DMA) beside
 * the disk's (READ SECTORS by 16-bit PIO, READ DMA) moving the same bytes per command, with the exits, MMIO
 * and interrupts each one costs. The counts are exact (the protocol is deterministic), so no timing is
 * involved: a few commands of each size are enough.
 *
 * What to read in them: a PACKET command adds the 12-byte packet (six 16-bit data-register writes) to the
 * task file, and by PIO its whole reply up to the byte count limit (65534 bytes) is one DRQ block, where the
 * disk's READ SECTORS has one DRQ block, and one interrupt, per 512-byte sector.
 */
import { exitsOf, type Counts } from "../hypervisor/accounting.ts";
import type { Hypervisor } from "../hypervisor/index.ts";
import { AtapiDrive } from "../guest/atapi-driver.ts";
import { buildMachine } from "../machine/builder.ts";
import { openAtaPath } from "../machine/disk-path.ts";
import { MemoryBackend } from "../storage/memory-backend.ts";
import type { CdResult, CdRow } from "./types.ts";

const CD_BLOCK = 2048;
/** Bytes per command measured: one CD block, and 32 KiB (16 blocks, 64 disk sectors). */
export const CD_COMMAND_BYTES = [2048, 32768] as const;
/** Commands per figure (the counts per command are the same every time; several show that they are). */
const COMMANDS = 16;
const MEDIUM_BLOCKS = 256;

/** An ISO-like medium: block b starts with b (big-endian). */
function isoImage(blocks: number): Uint8Array {
  const d = new Uint8Array(blocks * CD_BLOCK);
  const dv = new DataView(d.buffer);
  for (let b = 0; b < blocks; b++) dv.setUint32(b * CD_BLOCK, b, false);
  return d;
}

function row(device: CdRow["device"], via: CdRow["via"], bytes: number, c: Counts, commands: number): CdRow {
  const perCommand = exitsOf(c) / commands;
  return {
    device,
    via,
    bytesPerCommand: bytes,
    exitsPerCommand: perCommand,
    exitsPer2KiB: perCommand / (bytes / CD_BLOCK),
    exitsPerMiB: perCommand * ((1 << 20) / bytes),
    irqPerCommand: c.irqInject / commands,
  };
}

/** Count what `commands` calls of `read(i)` cost on `hv`. */
async function counted(
  hv: Hypervisor,
  commands: number,
  read: (i: number) => Promise<void>,
): Promise<Counts> {
  const before = hv.acct.snapshot();
  for (let i = 0; i < commands; i++) await read(i);
  return hv.acct.since(before);
}

async function cdRows(via: CdRow["via"]): Promise<CdRow[]> {
  const m = buildMachine({
    ide: [
      {
        position: "primary-master",
        kind: "cd",
        medium: { backend: new MemoryBackend(isoImage(MEDIUM_BLOCKS), { readOnly: true }) },
      },
    ],
    pc: { firmwareInit: true },
  });
  try {
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 0, via });
    if (!(await cd.probe())) throw new Error("no ATAPI device answered at the primary master position");
    await cd.waitReady();
    const rows: CdRow[] = [];
    for (const bytes of CD_COMMAND_BYTES) {
      const blocks = bytes / CD_BLOCK;
      const c = await counted(m.hv, COMMANDS, async (i) => {
        const lba = (i * blocks) % (MEDIUM_BLOCKS - blocks);
        const data = await cd.read(lba, blocks);
        const got = new DataView(data.buffer, data.byteOffset).getUint32(0, false);
        if (got !== lba) throw new Error(`CD ${via} READ(10) at ${lba} returned block ${got}`);
      });
      rows.push(row("cd", via, bytes, c, COMMANDS));
    }
    return rows;
  } finally {
    await m.close();
  }
}

async function diskRows(via: CdRow["via"]): Promise<CdRow[]> {
  const m = buildMachine({
    ide: [{ position: "primary-master", medium: { backend: new MemoryBackend(MEDIUM_BLOCKS * CD_BLOCK) } }],
    pc: { firmwareInit: true },
  });
  try {
    const disk = await openAtaPath(m, via === "pio" ? "pio" : "dma");
    const rows: CdRow[] = [];
    for (const bytes of CD_COMMAND_BYTES) {
      const sectors = bytes / 512;
      const c = await counted(m.hv, COMMANDS, async (i) => {
        await disk.read((i * sectors) % (MEDIUM_BLOCKS * 4 - sectors), sectors);
      });
      rows.push(row("disk", via, bytes, c, COMMANDS));
    }
    return rows;
  } finally {
    await m.close();
  }
}

export async function measureCd(): Promise<CdResult> {
  try {
    const rows: CdRow[] = [];
    for (const via of ["pio", "dma"] as const) {
      rows.push(...(await cdRows(via)));
      rows.push(...(await diskRows(via)));
    }
    return { status: "ok", rows };
  } catch (e) {
    return { status: "error", note: (e as Error).message, rows: [] };
  }
}
