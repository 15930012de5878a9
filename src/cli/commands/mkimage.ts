/**
 * `xenide mkimage FILE --size 64M [--force]`: create a sparse raw disk image.
 */
import type { Command } from "commander";
import { createImage, ImageError, parseSize } from "../../storage/index.ts";
import { UsageError } from "../errors.ts";

export function register(program: Command): void {
  program
    .command("mkimage")
    .description("create a sparse raw disk image (no data blocks are allocated until written)")
    .argument("<file>", "path of the image to create")
    .requiredOption(
      "-s, --size <size>",
      "image size: bytes or a K/M/G/T suffix (powers of 1024), e.g. 64M, 2G",
    )
    .option("-f, --force", "replace an existing file (never one another xenide process holds for writing)")
    .addHelpText(
      "after",
      "\nExamples:\n  xenide mkimage disk.img --size 64M\n  xenide mkimage disk.img --size 2G --force\n",
    )
    .action((file: string, opts: { size: string; force?: boolean }) => {
      let bytes: number;
      try {
        bytes = parseSize(opts.size);
      } catch (e) {
        // A size the user mistyped is a usage error (exit 2), as every other malformed option is.
        if (e instanceof ImageError) throw new UsageError(`--size: ${e.message}`);
        throw e;
      }
      try {
        createImage(file, bytes, { force: opts.force === true });
      } catch (e) {
        if (e instanceof ImageError && e.code === "EEXIST") {
          throw new UsageError(`${file} already exists; pass --force to replace it`, 1);
        }
        throw e;
      }
      process.stdout.write(`created ${file}: ${bytes} bytes (${bytes / 512} sectors of 512 bytes), sparse\n`);
    });
}
