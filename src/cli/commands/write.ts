/**
 * `xenide write IMG --lba N -i FILE`: write a file's bytes to sectors through the emulated IDE controller,
 * flush the drive's cache, and report the exits it cost.
 */
import { readFileSync } from "node:fs";
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

interface WriteFlags extends DiskFlags {
  lba: string;
  input: string;
  pad?: boolean;
  flush: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command("write")
    .argument("<image>", "raw disk image")
    .description("write a file to sectors through the emulated IDE controller and count the exits it cost")
    .requiredOption("--lba <n>", "first sector (decimal or 0x hex)")
    .requiredOption("-i, --input <file>", "bytes to write (a whole number of 512-byte sectors)")
    .option("--pad", "zero-fill the last sector when the input is not a multiple of 512 bytes")
    .option("--no-flush", "skip the FLUSH CACHE after the write");
  addDiskOptions(cmd, { via: true, readOnlyHelp: "open the image read-only (the write then fails)" });
  cmd
    .addHelpText(
      "after",
      "\nExamples:\n  xenide write disk.img --lba 100 -i sector.bin\n" +
        "  xenide write disk.img --lba 0x10000 -i blob.bin --pad --via dma --lba48",
    )
    .action(async (image: string, flags: WriteFlags) => {
      const lba = parseCount(flags.lba, "--lba");
      let data: Uint8Array = new Uint8Array(readFileSync(flags.input));
      if (data.length === 0) throw new UsageError(`${flags.input} is empty: nothing to write`);
      if (data.length % 512 !== 0) {
        if (!flags.pad) {
          throw new UsageError(
            `${flags.input} is ${data.length} bytes, not a multiple of 512 (add --pad to zero-fill the last sector)`,
          );
        }
        const padded = new Uint8Array(Math.ceil(data.length / 512) * 512);
        padded.set(data);
        data = padded;
      }
      const count = data.length / 512;
      const disk = await openDisk(image, { ...flags, readOnly: flags.readOnly === true });
      try {
        checkSectorRange(lba, count, disk.path.sectors);
        const before = disk.hv.acct.snapshot();
        try {
          await disk.path.write(lba, data);
          if (flags.flush) await disk.path.flush();
        } catch (e) {
          if (e instanceof AtaError) {
            if (disk.backend.readOnly) {
              throw new UsageError(
                `${image} is open read-only (--read-only): the drive refused the write (${e.message})`,
                1,
              );
            }
            throw new UsageError(`write failed: ${e.message}`, 1);
          }
          throw e;
        }
        const report = costReport(disk.hv, disk.hv.acct.since(before), count);
        if (flags.json) {
          writeOut(
            JSON.stringify(
              {
                image,
                engine: disk.engine.kind,
                via: disk.path.name,
                lba,
                count,
                bytes: data.length,
                flushed: flags.flush,
                cost: report,
                setup: costReport(disk.hv, disk.setup, 0),
              },
              null,
              2,
            ) + "\n",
          );
          return;
        }
        writeOut(`wrote ${count} sector(s) at LBA ${lba}${flags.flush ? " and flushed" : ""}\n`);
        writeOut(formatCost(`\ncost via ${disk.path.name} (${disk.engine.kind} engine):`, report));
      } finally {
        await disk.close();
      }
    });
}
