/**
 * Differential harness for the ATAPI CD-ROM: QEMU 7.2 with `-drive ...,if=ide,media=cdrom` (an `ide-cd`) beside
 * a xenide machine with a "cd" drive at the same position, driven in lock step through qtest. PACKET commands
 * run whole (command, packet, every DRQ block or the Bus Master transfer, status) with the settled registers,
 * the transferred bytes and the interrupt edges compared after each phase.
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { buildMachine } from "../../src/machine/builder.ts";
import { IDE_POSITIONS, type IdeDriveSpec } from "../../src/machine/description.ts";
import { QtestClient } from "../../src/qtest/client.ts";
import { QtestServer } from "../../src/qtest/server.ts";
import { serveStream } from "../../src/qtest/transport.ts";
import { DEVIATION_EXCUSES } from "./excuses.ts";
import { QEMU, QEMU_FIRMWARE, QEMU_MODEL, QEMU_ORACLE_ARGS } from "./harness.ts";
import { PCI_SETUP } from "./ops.ts";
import { type Excuse, Mismatch, Pair, PRIMARY, SECONDARY, type ChannelPorts } from "./pair.ts";

/** QEMU's model string for an ide-cd (hw/ide/core.c). */
export const QEMU_CD_MODEL = "QEMU DVD-ROM";

/** A drive at a QEMU `index=` position: a hard disk, a CD with a medium, or an empty CD. */
export type CdSlot = { kind: "hd"; data: Uint8Array } | { kind: "cd"; data?: Uint8Array } | undefined;

/** An ISO-like medium: `blocks` 2048-byte blocks, each starting with its block number, the rest seeded. */
export function isoImage(blocks: number, seed: number): Uint8Array {
  const img = new Uint8Array(blocks * 2048);
  const dv = new DataView(img.buffer);
  let x = seed | 1;
  for (let b = 0; b < blocks; b++) {
    dv.setUint32(b * 2048, b, false);
    for (let i = 4; i < 2048; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      img[b * 2048 + i] = x & 0xff;
    }
  }
  return img;
}

/**
 * Differences the CD comparison forgives: the documented deviations (docs/conformance.md, among them A1, the
 * power-on Error register, and F1, the IDENTIFY PACKET DEVICE integrity word).
 */
export const CD_EXCUSES: readonly Excuse[] = DEVIATION_EXCUSES;

export class CdSession {
  readonly pair: Pair;
  private constructor(
    readonly dir: string,
    readonly qemu: QtestClient,
    readonly xen: QtestClient,
    readonly ch: ChannelPorts,
    private readonly done: Promise<void>,
    readonly machine: ReturnType<typeof buildMachine>,
    readonly files: (string | undefined)[],
  ) {
    this.pair = new Pair(qemu, xen, ch, CD_EXCUSES);
  }

  /** QEMU and xenide (in this process) with the same drives; `channel` is the one the ops address. */
  static async start(
    slots: CdSlot[],
    channel: 0 | 1 = 0,
    engine: "sync" | "async" = "sync",
  ): Promise<CdSession> {
    const dir = mkdtempSync(join(tmpdir(), "xenide-cd-"));
    const qargs = [...QEMU_ORACLE_ARGS];
    const specs: IdeDriveSpec[] = [];
    const files: (string | undefined)[] = [];
    slots.forEach((slot, index) => {
      if (!slot) {
        files.push(undefined);
        return;
      }
      // QEMU numbers every position the PIIX creates (ide_init1), attached or not.
      const sn = `QM${String(index + 1).padStart(5, "0")}`;
      // Each side has its own copy (the disk is written, and each side locks what it opened).
      let file: string | undefined;
      let xfile: string | undefined;
      if (slot.data) {
        file = join(dir, `qemu-${index}.img`);
        xfile = join(dir, `xen-${index}.img`);
        writeFileSync(file, slot.data);
        writeFileSync(xfile, slot.data);
      }
      files.push(xfile);
      if (slot.kind === "hd") {
        qargs.push("-drive", `file=${file},format=raw,if=ide,index=${index},cache=writeback`);
        specs.push({
          position: IDE_POSITIONS[index]!,
          medium: { image: xfile! },
          model: QEMU_MODEL,
          firmware: QEMU_FIRMWARE,
          serial: sn,
        });
      } else {
        qargs.push(
          "-drive",
          file
            ? `file=${file},format=raw,if=ide,index=${index},media=cdrom`
            : `if=ide,index=${index},media=cdrom`,
        );
        specs.push({
          position: IDE_POSITIONS[index]!,
          kind: "cd",
          medium: xfile ? { image: xfile, readOnly: true } : { empty: true },
          engine,
          model: QEMU_CD_MODEL,
          firmware: QEMU_FIRMWARE,
          serial: sn,
        });
      }
    });
    const qemu = QtestClient.spawn(QEMU, qargs);
    const machine = buildMachine({ ram: 128 * 1024 * 1024, ide: specs });
    const hv = machine.hv;
    const server = new QtestServer({
      hv,
      vcpu: hv.vcpu(0),
      settle: () => machine.settle(),
      busy: () => machine.busy(),
      takeDrainRequest: () => machine.takeDrainRequest(),
    });
    const toServer = new PassThrough();
    const fromServer = new PassThrough();
    const done = serveStream(server, toServer, fromServer).finally(() => {
      fromServer.end();
      return machine.close();
    });
    const xen = new QtestClient(toServer, fromServer);
    const s = new CdSession(dir, qemu, xen, channel === 0 ? PRIMARY : SECONDARY, done, machine, files);
    try {
      await s.pair.send(PCI_SETUP, "PCI setup");
    } catch (e) {
      await s.stop();
      const err = e instanceof Error ? e : new Error(String(e));
      if (qemu.stderr.trim()) err.message += `\nQEMU stderr: ${qemu.stderr.trim()}`;
      throw err;
    }
    return s;
  }

  async stop(): Promise<void> {
    await Promise.allSettled([this.qemu.close(), this.xen.close()]);
    await this.done.catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const p = (n: number): string => `0x${n.toString(16)}`;

/** Guest memory the DMA ops use: a PRD table and a data buffer. */
export const PRDT = 0x10000;
export const BUF = 0x100000;

export interface PacketOptions {
  /** Byte count limit written to LBA Mid/High (PIO). */
  bcl: number;
  unit?: 0 | 1;
  /** PACKET by DMA (Features bit 0), with a PRD table over `dmaBytes` (default: the expected transfer). */
  dma?: { bytes: number; prd: "exact" | "long" | "short" | "split" };
  /** Extra Features bits (OVL). */
  features?: number;
  /** Largest number of DRQ blocks to drain (a wedged window never ends). */
  maxBlocks?: number;
  /** Read the Status register after each data block, as a driver acknowledging the interrupt does. */
  ack?: boolean;
}

/** What a packet command did, as QEMU did it (both sides agreed). */
export interface PacketResult {
  status: number;
  error: number;
  /** The bytes that crossed the data port or the Bus Master. */
  data: Uint8Array;
  /** Interrupt edges seen on the channel's line. */
  edges: string[];
}

/** The 12-byte packet of an MMC command from its leading bytes. */
export function cdb(...bytes: number[]): number[] {
  const out = new Array<number>(12).fill(0);
  bytes.forEach((b, i) => (out[i] = b & 0xff));
  return out;
}

function edgesOf(c: QtestClient, line: number): string[] {
  return c.irqEvents.filter((e) => e.endsWith(` ${line}`));
}

/**
 * Run one PACKET command on both sides: task file, command, packet, data (PIO blocks or DMA), status; compare
 * every reply, settled state, the data and the interrupt edges.
 */
export async function packet(
  pair: Pair,
  packetBytes: number[],
  o: PacketOptions,
  label: string,
): Promise<PacketResult> {
  const ch = pair.ch;
  const c = ch.cmd;
  pair.qemu.irqEvents = [];
  pair.xen.irqEvents = [];
  const feat = (o.dma ? 1 : 0) | (o.features ?? 0);
  const pre: string[] = [];
  if (o.dma) {
    const { bytes, prd } = o.dma;
    const entries: [number, number, boolean][] = [];
    if (prd === "exact") entries.push([BUF, bytes, true]);
    else if (prd === "long") entries.push([BUF, bytes + 4096, true]);
    else if (prd === "split") entries.push([BUF, 2048, false], [BUF + 2048, Math.max(bytes - 2048, 2), true]);
    else entries.push([BUF, Math.max(bytes - 2048, 2), true]);
    const table = new Uint8Array(entries.length * 8);
    const dv = new DataView(table.buffer);
    let off = 0;
    entries.forEach(([addr, len, eot], i) => {
      // Entries of up to 64 KiB each: split longer ones.
      void off;
      dv.setUint32(i * 8, addr, true);
      dv.setUint16(i * 8 + 4, len & 0xffff, true);
      dv.setUint16(i * 8 + 6, eot ? 0x8000 : 0, true);
    });
    pre.push(
      `outb ${p(ch.bm)} 0x0`,
      `outb ${p(ch.bm + 2)} 0x6`,
      `outl ${p(ch.bm + 4)} ${p(PRDT)}`,
      `write ${p(PRDT)} ${table.length} 0x${Buffer.from(table).toString("hex")}`,
      `memset ${p(BUF)} ${bytes + 8192} 0xa5`,
    );
  }
  pre.push(
    `outb ${p(c + 6)} ${p(0xa0 | ((o.unit ?? 0) << 4))}`,
    `outb ${p(c + 1)} ${p(feat)}`,
    `outb ${p(c + 4)} ${p(o.bcl & 0xff)}`,
    `outb ${p(c + 5)} ${p((o.bcl >> 8) & 0xff)}`,
    `outb ${p(c + 7)} 0xa0`,
  );
  await pair.send(pre, `${label} PACKET`);
  let s = await pair.settle(`${label} PACKET`);
  if ((s.alt & 0x88) === 0x08) {
    const words: string[] = [];
    for (let i = 0; i < 12; i += 2)
      words.push(`outw ${p(c)} ${p(packetBytes[i]! | (packetBytes[i + 1]! << 8))}`);
    await pair.send(words, `${label} packet`);
    if (o.dma && (pair.dmaPending = true)) {
      // The drive waits for the engine (DRQ, for a read BSY too): start it toward memory.
      s = await pair.settle(`${label} packet sent`, 5);
      await pair.send([`outb ${p(ch.bm)} 0x9`], `${label} BM start`);
    }
    s = await pair.settle(`${label} after packet`, o.dma ? 200 : 3000);
    pair.dmaPending = false;
  }
  const data: number[] = [];
  if (o.dma) {
    await pair.send([`outb ${p(ch.bm)} 0x0`], `${label} BM stop`);
    s = await pair.settle(`${label} BM stopped`, 5);
    const mem = await pair.compareMemory(BUF, o.dma.bytes + 4096, label);
    const b = Buffer.from(mem.replace(/^OK /, ""), "base64");
    for (const x of b) data.push(x);
  } else {
    const max = o.maxBlocks ?? 64;
    for (let blk = 0; blk < max && (s.alt & 0x89) === 0x08; blk++) {
      const n = s.regs[3]! | (s.regs[4]! << 8);
      const lines = Array<string>(Math.max(1, Math.ceil(n / 2))).fill(`inw ${p(c)}`);
      const r = await pair.send(lines, `${label} block ${blk} (${n} bytes)`);
      for (let i = 0; i < Math.ceil(n / 2); i++) {
        const v = Number(r[i]!.replace(/^OK /, ""));
        data.push(v & 0xff, v >> 8);
      }
      data.length = data.length - (n & 1);
      s = await pair.settle(`${label} after block ${blk}`);
      // Acknowledge the interrupt as a driver does (transient BSY is not compared: the settled state is).
      if (o.ack !== false) await pair.send([`inb ${p(c + 7)}`], `${label} ack ${blk}`);
    }
  }
  const qe = edgesOf(pair.qemu, ch.irq);
  const xe = edgesOf(pair.xen, ch.irq);
  if (qe.join(",") !== xe.join(","))
    throw new Mismatch(
      `${label}: IRQ edges`,
      qe.join(",") || "none",
      xe.join(",") || "none",
      pair.transcript,
    );
  return { status: s.alt, error: s.regs[0]!, data: Uint8Array.from(data), edges: qe };
}

/** REQUEST SENSE by PIO: the 18 bytes of fixed-format sense data (compared on both sides). */
export async function requestSense(pair: Pair, label: string, unit: 0 | 1 = 0): Promise<Uint8Array> {
  const r = await packet(pair, cdb(0x03, 0, 0, 0, 18), { bcl: 0xfffe, unit }, `${label} REQUEST SENSE`);
  return r.data;
}
