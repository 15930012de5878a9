/**
 * `xenide read IMG --lba N --count K`: read sectors through the emulated IDE controller the way a guest driver
 * would (PIO by words or dwords, REP INSW, or Bus Master DMA), then print them as a hex dump or write them to a
 * file, with the exits they cost.
 */
import { writeFileSync } from "node:fs";
import type { Command } from "commander";
import { AtaError } from "../../guest/ata-driver.ts";
import {
  type DiskFlags,
  addDiskOptions,
  costReport,
  formatCost,
  openDisk,
  parseCount,
  writeOut,
  checkSectorRange,
} from "../disk-options.ts";
import { UsageError } from "../errors.ts";

interface ReadFlags extends DiskFlags {
  lba: string;
  count: string;
  output?: string;
}

export function register(program: Command): void {
  const cmd = program
    .command("read")
    .argument("<image>", "raw disk image")
    .description("read sectors through the emulated IDE controller and count the exits they cost")
    .requiredOption("--lba <n>", "first sector (decimal or 0x hex)")
    .option("--count <k>", "number of sectors", "1")
    .option(
      "-o, --output <file>",
      "write the bytes to FILE (- for standard output) instead of printing a hex dump",
    );
  addDiskOptions(cmd, { via: true });
  cmd
    .addHelpText(
      "after",
      "\nExamples:\n  xenide read disk.img --lba 0 --count 1\n" +
        "  xenide read disk.img --lba 2048 --count 256 --via dma -o part.bin\n" +
        "  xenide read disk.img --lba 0 --count 8 --via rep --engine async --json",
    )
    .action(async (image: string, flags: ReadFlags) => {
      const lba = parseCount(flags.lba, "--lba");
      const count = parseCount(flags.count, "--count");
      if (count === 0) throw new UsageError("--count must be at least 1");
      const disk = await openDisk(image, { ...flags, readOnly: flags.readOnly === true });
      try {
        checkSectorRange(lba, count, disk.path.sectors);
        const before = disk.hv.acct.snapshot();
        let data: Uint8Array;
        try {
          data = await disk.path.read(lba, count);
        } catch (e) {
          if (e instanceof AtaError) throw new UsageError(`read failed: ${e.message}`, 1);
          throw e;
        }
        const report = costReport(disk.hv, disk.hv.acct.since(before), count);
        // "-o -" means standard output, as for dd and curl: the raw bytes there, everything else on stderr.
        const toStdout = flags.output === "-";
        if (toStdout) process.stdout.write(data);
        else if (flags.output) writeFileSync(flags.output, data);
        if (flags.json) {
          const out: Record<string, unknown> = {
            image,
            engine: disk.engine.kind,
            via: disk.path.name,
            lba,
            count,
            bytes: data.length,
            cost: report,
            setup: costReport(disk.hv, disk.setup, 0),
          };
          if (flags.output) out.output = flags.output;
          else out.hex = Buffer.from(data).toString("hex");
          (toStdout ? process.stderr : process.stdout).write(JSON.stringify(out, null, 2) + "\n");
          return;
        }
        if (!flags.output) writeOut(hexdump(data, lba * 512));
        else if (!toStdout) writeOut(`wrote ${data.length} bytes to ${flags.output}\n`);
        const out = flags.output && !toStdout ? process.stdout : process.stderr;
        out.write(
          formatCost(
            `\ncost of reading ${count} sector(s) via ${disk.path.name} (${disk.engine.kind} engine):`,
            report,
          ),
        );
      } finally {
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
