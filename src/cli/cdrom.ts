/**
 * `read --cdrom` and `identify --cdrom`: an ISO image in a CD-ROM drive at the secondary master (where QEMU's
 * `-cdrom` puts it), reached by the guest's ATAPI driver: IDENTIFY PACKET DEVICE, INQUIRY, READ CAPACITY and
 * READ(10) of 2048-byte blocks, by PIO or DMA, with the exits they cost.
 */

import { CostModel } from "../hypervisor/accounting.ts";
import { AtapiDrive, AtapiError } from "../guest/atapi-driver.ts";
import { CdMediumError } from "../ide/cd/tray.ts";
import { buildMachine, type Machine } from "../machine/builder.ts";
import { ImageError } from "../storage/index.ts";
import { CD_SECTOR_SIZE } from "../spec/atapi.ts";
import { costReport, type DiskFlags, formatCost, openTrace, parseCount, writeOut } from "./disk-options.ts";
import { UsageError } from "./errors.ts";
import { OutputFile, writeStream } from "./transfer.ts";

export interface CdFlags extends DiskFlags {
  lba?: string;
  count?: string;
  output?: string;
}

interface OpenedCd {
  machine: Machine;
  drive: AtapiDrive;
  close(): Promise<void>;
}

/** xxd-style lines, as `read` prints a disk's sectors. */
function hexdump(data: Uint8Array, base: number): string {
  const lines: string[] = [];
  for (let off = 0; off < data.length; off += 16) {
    const row = data.subarray(off, off + 16);
    let hex = "";
    let text = "";
    row.forEach((b, i) => {
      hex += b.toString(16).padStart(2, "0") + (i % 2 === 1 ? " " : "");
      text += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
    });
    lines.push(`${(base + off).toString(16).padStart(8, "0")}: ${hex} ${text}`);
  }
  return lines.join("\n") + "\n";
}

/** Blocks moved per READ(10) batch: 1 MiB, so memory does not grow with the range. */
const CHUNK_BLOCKS = 512;

async function openCd(image: string, flags: CdFlags, via: "pio" | "dma"): Promise<OpenedCd> {
  if (flags.engine !== "sync" && flags.engine !== "async")
    throw new UsageError(`--engine must be sync or async, got '${flags.engine}'`);
  let costs: ReturnType<typeof CostModel.parseOverrides>;
  try {
    costs = CostModel.parseOverrides(flags.cost);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const tracer = flags.trace ? openTrace(flags.trace, [image]) : null;
  let machine: Machine;
  try {
    machine = buildMachine({
      costs,
      tracer,
      ide: [
        { position: "secondary-master", kind: "cd", medium: { image, readOnly: true }, engine: flags.engine },
      ],
    });
  } catch (e) {
    await tracer?.close();
    if (e instanceof ImageError || e instanceof CdMediumError) throw new UsageError(e.message, 1);
    throw e;
  }
  const drive = new AtapiDrive(machine.hv.vcpu(0), { channel: 1, via, irq: !flags.poll });
  const close = async (): Promise<void> => {
    await machine.close();
    await tracer?.close();
  };
  try {
    if (!(await drive.probe())) throw new UsageError(`${image}: no ATAPI device answered`, 1);
    await drive.waitReady();
  } catch (e) {
    await close();
    if (e instanceof AtapiError) throw new UsageError(`${image}: ${e.message}`, 1);
    throw e;
  }
  return { machine, drive, close };
}

/** `xenide read ISO --cdrom --lba N --count K [--via pio|dma] [-o FILE|-] [--json]`. */
export async function readCdrom(image: string, flags: CdFlags): Promise<void> {
  const via = flags.via ?? "pio";
  if (via !== "pio" && via !== "dma")
    throw new UsageError(`--via for a CD-ROM is pio or dma (ATAPI PACKET), got '${via}'`);
  const lba = parseCount(flags.lba ?? "0", "--lba");
  const count = parseCount(flags.count ?? "1", "--count");
  if (count === 0) throw new UsageError("--count must be at least 1");
  const cd = await openCd(image, flags, via);
  let file: OutputFile | undefined;
  try {
    const { blocks } = await cd.drive.readCapacity();
    if (lba + count > blocks)
      throw new UsageError(
        `${count === 1 ? `block ${lba} is` : `blocks ${lba}..${lba + count - 1} are`} beyond the end of the CD (${blocks} blocks of ${CD_SECTOR_SIZE} bytes)`,
      );
    const toStdout = flags.output === "-";
    if (flags.output && !toStdout)
      file = OutputFile.create(flags.output, [{ path: image, what: "the image being read" }]);
    const hv = cd.machine.hv;
    const before = hv.acct.snapshot();
    const hex: string[] = [];
    for (let done = 0; done < count;) {
      const n = Math.min(CHUNK_BLOCKS, count - done);
      const data = await cd.drive.read(lba + done, n);
      if (file) await file.write(data);
      else if (toStdout) await writeStream(process.stdout, data);
      else if (flags.json) hex.push(Buffer.from(data).toString("hex"));
      else await writeStream(process.stdout, hexdump(data, (lba + done) * CD_SECTOR_SIZE));
      done += n;
    }
    const report = costReport(hv, hv.acct.since(before), count);
    file?.commit();
    if (flags.json) {
      const out = { image, device: "cdrom", via, lba, count, bytes: count * CD_SECTOR_SIZE, cost: report };
      const body = file || toStdout ? out : { ...out, hex: hex.join("") };
      await writeStream(toStdout ? process.stderr : process.stdout, JSON.stringify(body, null, 2) + "\n");
      return;
    }
    if (file) await writeStream(process.stdout, `wrote ${count * CD_SECTOR_SIZE} bytes to ${flags.output}\n`);
    await writeStream(
      file ? process.stdout : process.stderr,
      formatCost(`\ncost of reading ${count} CD block(s) via ATAPI ${via} (${flags.engine} engine):`, report),
    );
  } catch (e) {
    if (e instanceof AtapiError) throw new UsageError(`${image}: ${e.message}`, 1);
    throw e;
  } finally {
    file?.abort();
    await cd.close();
  }
}

/** `xenide identify ISO --cdrom`: IDENTIFY PACKET DEVICE, INQUIRY and READ CAPACITY. */
export async function identifyCdrom(image: string, flags: CdFlags): Promise<void> {
  const via = flags.via === "dma" ? "dma" : "pio";
  const cd = await openCd(image, flags, via);
  try {
    const hv = cd.machine.hv;
    const id = cd.drive.identity;
    const inq = await cd.drive.inquiry();
    const text = (a: number, b: number): string => String.fromCharCode(...inq.subarray(a, b)).trimEnd();
    const cap = await cd.drive.readCapacity();
    const report = costReport(hv, hv.acct.snapshot(), 0);
    const out = {
      image,
      device: "cdrom",
      identity: {
        model: id.model,
        serial: id.serial,
        firmware: id.firmware,
        removable: id.removable,
        dma: id.dma,
      },
      inquiry: { type: inq[0]! & 0x1f, vendor: text(8, 16), product: text(16, 32), revision: text(32, 36) },
      capacity: { blocks: cap.blocks, blockSize: cap.blockSize, bytes: cap.blocks * cap.blockSize },
      cost: report,
    };
    if (flags.json) {
      writeOut(JSON.stringify(out, null, 2) + "\n");
      return;
    }
    writeOut(
      [
        `model          ${id.model}`,
        `serial         ${id.serial}`,
        `firmware       ${id.firmware}`,
        `device         ATAPI CD-ROM (type ${id.deviceType}), ${id.removable ? "removable" : "fixed"}, DMA ${id.dma ? "yes" : "no"}`,
        `inquiry        ${out.inquiry.vendor} / ${out.inquiry.product} / ${out.inquiry.revision}`,
        `capacity       ${cap.blocks.toLocaleString("en-US")} blocks of ${cap.blockSize} bytes`,
      ].join("\n") + "\n\n",
    );
    writeOut(
      formatCost(`cost of PCI setup + probe + IDENTIFY PACKET DEVICE + INQUIRY + READ CAPACITY:`, report),
    );
  } finally {
    await cd.close();
  }
}
