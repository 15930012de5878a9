/**
 * `xenide write IMG --lba N -i FILE`: write a file's bytes (or standard input's, `-i -`) to sectors through the
 * emulated IDE controller or the PV ring, flush the drive's cache, and report the exits it cost.
 *
 * The input moves a chunk (1 MiB) at a time, so memory does not grow with its size (see ../transfer.ts). A
 * file's size is known up front, so a range past the end of the disk is refused before anything is written;
 * standard input's length is known only at its end, so there each chunk is checked before it is written, and
 * an input that runs past the end stops with one line, after the whole chunks before it were written.
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
import { UsageError } from "../errors.ts";
import {
  SECTOR,
  TransferProgress,
  checkTransferRange,
  openInput,
  pathFailure,
  progressWanted,
  writeChunks,
  writeStream,
} from "../transfer.ts";
import { AtaError } from "../../guest/ata-driver.ts";
import { BlkfrontError } from "../../xenblk/blkfront.ts";

interface WriteFlags extends DiskFlags {
  lba: string;
  input: string;
  pad?: boolean;
  flush: boolean;
  progress: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command("write")
    .argument("<image>", "raw disk image")
    .description("write a file to sectors through the emulated IDE controller and count the exits it cost")
    .requiredOption("--lba <n>", "first sector (decimal or 0x hex)")
    .requiredOption(
      "-i, --input <file>",
      "bytes to write (a whole number of 512-byte sectors); - for standard input",
    )
    .option("--pad", "zero-fill the last sector when the input is not a multiple of 512 bytes")
    .option("--no-flush", "skip the FLUSH CACHE after the write")
    .option("--no-progress", "no progress bar, even on a terminal");
  addDiskOptions(cmd, { via: true, readOnlyHelp: "open the image read-only (the write then fails)" });
  cmd
    .addHelpText(
      "after",
      "\nExamples:\n  xenide write disk.img --lba 100 -i sector.bin\n" +
        "  xenide write disk.img --lba 0x10000 -i blob.bin --pad --via dma --lba48\n" +
        "  gunzip -c rootfs.img.gz | xenide write disk.img --lba 2048 -i - --via pv\n" +
        "\nAny size the image holds: the input moves 1 MiB at a time. With -i - the length is known only at the\n" +
        "end of the input: one that runs past the end of the disk stops there (exit 2), after the whole\n" +
        "sectors before it were written.",
    )
    .action(async (image: string, flags: WriteFlags) => {
      const lba = parseCount(flags.lba, "--lba");
      const input = openInput(flags.input);
      let progress: TransferProgress | undefined;
      try {
        const size = input.size;
        if (size === 0) throw new UsageError(`${input.name} is empty: nothing to write`);
        if (size !== undefined && size % SECTOR !== 0 && !flags.pad) {
          throw new UsageError(
            `${input.name} is ${size} bytes, not a multiple of 512 (add --pad to zero-fill the last sector)`,
          );
        }
        const disk = await openDisk(image, {
          ...flags,
          readOnly: flags.readOnly === true,
          ...(flags.input !== "-" ? { keep: [flags.input] } : {}),
        });
        try {
          if (size !== undefined) {
            checkTransferRange(disk, flags.lba28 === true, lba, Math.ceil(size / SECTOR));
          }
          progress = new TransferProgress({
            enabled: progressWanted({ ...flags, dataToStdout: false }),
            label: "write",
            total: size,
          });
          // The trace marks where set-up (PCI scan, probe, IDENTIFY or PV negotiation) ends.
          disk.tracer?.phase("transfer");
          const before = disk.hv.acct.snapshot();
          let count: number;
          try {
            ({ sectors: count } = await writeChunks(disk, lba, input, {
              pad: flags.pad === true,
              lba28Forced: flags.lba28 === true,
              progress,
            }));
            if (count === 0) throw new UsageError(`${input.name} is empty: nothing to write`);
            progress.stop();
            if (flags.flush) {
              try {
                await disk.path.flush();
              } catch (e) {
                throw pathFailure(e, "flush");
              }
            }
          } catch (e) {
            progress.stop();
            // What was written before an input turned out too long stays written: make it durable too.
            if (e instanceof UsageError && flags.flush) await disk.path.flush().catch(() => {});
            throw refusedWrite(e, image, disk.backend.readOnly);
          }
          const report = costReport(disk.hv, disk.hv.acct.since(before), count);
          disk.tracer?.phase("done");
          if (flags.json) {
            await writeStream(
              process.stdout,
              JSON.stringify(
                {
                  image,
                  engine: disk.engine.kind,
                  via: disk.path.name,
                  lba,
                  count,
                  bytes: count * SECTOR,
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
          await writeStream(
            process.stdout,
            `wrote ${count} sector(s) at LBA ${lba}${flags.flush ? " and flushed" : ""}\n`,
          );
          await writeStream(
            process.stdout,
            formatCost(`\ncost via ${disk.path.name} (${disk.engine.kind} engine):`, report),
          );
        } finally {
          await disk.close();
        }
      } finally {
        progress?.stop();
        input.close();
      }
    });
}

/** A write the drive refused because the image is open read-only says so, as one line (exit 1). */
function refusedWrite(e: unknown, image: string, readOnly: boolean): unknown {
  if (!readOnly) return e;
  const cause =
    e instanceof UsageError && /^write failed: /.test(e.message)
      ? e.message.slice("write failed: ".length)
      : e instanceof AtaError || e instanceof BlkfrontError
        ? e.message
        : null;
  if (cause === null) return e;
  return new UsageError(
    `${image} is open read-only (--read-only): the drive refused the write (${cause})`,
    1,
  );
}
