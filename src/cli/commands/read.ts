/**
 * `xenide read IMG --lba N --count K`: read sectors through the emulated IDE controller the way a guest driver
 * would (PIO by words or dwords, REP INSW, or Bus Master DMA), or through the PV ring, then print them as a
 * hex dump or write them to a file or standard output, with the exits they cost.
 *
 * The sectors move a chunk (1 MiB) at a time, so memory does not grow with the size of the range. A file
 * named by `-o` appears only when every sector is in it (see ../transfer.ts).
 */
import type { Command } from "commander";
import {
  type DiskFlags,
  addDiskOptions,
  costReport,
  formatCost,
  openDisk,
  parseCount,
} from "../disk-options.ts";
import { readCdrom } from "../cdrom.ts";
import { UsageError } from "../errors.ts";
import {
  SECTOR,
  OutputFile,
  TransferProgress,
  checkTransferRange,
  progressWanted,
  readChunks,
  writeStream,
} from "../transfer.ts";

interface ReadFlags extends DiskFlags {
  lba: string;
  count: string;
  output?: string;
  progress: boolean;
  cdrom?: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command("read")
    .argument("<image>", "raw disk image (opened read-only)")
    .description("read sectors through the emulated IDE controller and count the exits they cost")
    .requiredOption("--lba <n>", "first sector (decimal or 0x hex)")
    .option("--count <k>", "number of sectors", "1")
    .option(
      "-o, --output <file>",
      "write the bytes to FILE (- for standard output) instead of printing a hex dump",
    )
    .option("--no-progress", "no progress bar, even on a terminal")
    .option(
      "--cdrom",
      "IMAGE is an ISO in a CD-ROM drive: --lba/--count are 2048-byte blocks (ATAPI READ(10))",
    );
  addDiskOptions(cmd, { via: true });
  cmd
    .addHelpText(
      "after",
      "\nExamples:\n  xenide read disk.img --lba 0 --count 1\n" +
        "  xenide read disk.img --lba 2048 --count 256 --via dma -o part.bin\n" +
        "  xenide read disk.img --lba 0 --count 2097152 --via pv -o - | sha256sum\n" +
        "  xenide read disk.img --lba 0 --count 8 --via rep --engine async --json\n" +
        "\nAny range the image holds: the sectors move 1 MiB at a time. -o FILE is written under a temporary\n" +
        "name and renamed when complete; an error or Ctrl-C leaves no partial FILE (an existing FILE is kept).",
    )
    .action(async (image: string, flags: ReadFlags) => {
      if (flags.cdrom) {
        await readCdrom(image, flags);
        return;
      }
      const lba = parseCount(flags.lba, "--lba");
      const count = parseCount(flags.count, "--count");
      if (count === 0) throw new UsageError("--count must be at least 1");
      // Reading never needs write access: a read-only image file works without --read-only.
      const disk = await openDisk(image, { ...flags, readOnly: true });
      let file: OutputFile | undefined;
      let progress: TransferProgress | undefined;
      try {
        checkTransferRange(disk, flags.lba28 === true, lba, count);
        // "-o -" means standard output, as for dd and curl: the raw bytes there, everything else on stderr.
        const toStdout = flags.output === "-";
        const dump = !flags.output;
        if (flags.output && !toStdout) {
          file = OutputFile.create(flags.output, [{ path: image, what: "the image being read" }]);
        }
        progress = new TransferProgress({
          enabled: progressWanted({ ...flags, dataToStdout: dump || toStdout }),
          label: "read",
          total: count * SECTOR,
        });
        const setup = costReport(disk.hv, disk.setup, 0);
        const head = {
          image,
          engine: disk.engine.kind,
          via: disk.path.name,
          lba,
          count,
          bytes: count * SECTOR,
        };

        let sink: (data: Uint8Array, at: number) => void | Promise<void>;
        if (file) {
          const f = file;
          sink = (data) => f.write(data);
        } else if (toStdout) sink = (data) => writeStream(process.stdout, data);
        else if (flags.json) {
          // The hex of a range of any size, streamed: the object is printed as JSON.stringify would print
          // it, with "hex" before the cost, which is known only at the end.
          await writeStream(process.stdout, JSON.stringify(head, null, 2).slice(0, -2) + ',\n  "hex": "');
          sink = (data) => writeStream(process.stdout, Buffer.from(data).toString("hex"));
        } else sink = (data, at) => writeStream(process.stdout, hexdump(data, at * SECTOR));

        // The trace marks where set-up (PCI scan, probe, IDENTIFY or PV negotiation) ends.

        disk.tracer?.phase("transfer");

        const before = disk.hv.acct.snapshot();
        await readChunks(disk, lba, count, sink, progress);
        const report = costReport(disk.hv, disk.hv.acct.since(before), count);
        disk.tracer?.phase("done");
        progress.stop();
        file?.commit();

        if (flags.json) {
          if (dump) {
            const tail = JSON.stringify({ cost: report, setup }, null, 2).slice(2);
            await writeStream(process.stdout, `",\n${tail}\n`);
            return;
          }
          const out: Record<string, unknown> = { ...head, cost: report, setup, output: flags.output };
          await writeStream(toStdout ? process.stderr : process.stdout, JSON.stringify(out, null, 2) + "\n");
          return;
        }
        if (file) await writeStream(process.stdout, `wrote ${count * SECTOR} bytes to ${flags.output}\n`);
        const out = file ? process.stdout : process.stderr;
        await writeStream(
          out,
          formatCost(
            `\ncost of reading ${count} sector(s) via ${disk.path.name} (${disk.engine.kind} engine):`,
            report,
          ),
        );
      } finally {
        progress?.stop();
        file?.abort();
        await disk.close();
      }
    });
}

/** xxd-style dump: offset, eight groups of two bytes, the printable characters. */
export function hexdump(data: Uint8Array, base = 0): string {
  const lines: string[] = [];
  for (let off = 0; off < data.length; off += 16) {
    const row = data.subarray(off, off + 16);
    let hex = "";
    let text = "";
    for (let i = 0; i < 16; i++) {
      if (i < row.length) {
        hex += row[i]!.toString(16).padStart(2, "0");
        text += row[i]! >= 0x20 && row[i]! < 0x7f ? String.fromCharCode(row[i]!) : ".";
      } else hex += "  ";
      if (i % 2 === 1) hex += " ";
    }
    lines.push(`${(base + off).toString(16).padStart(8, "0")}: ${hex} ${text}`);
  }
  return lines.join("\n") + "\n";
}
