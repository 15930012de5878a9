/**
 * `xenide mkimage FILE --size 64M [--force]`: create a sparse raw disk image, or with `--format qcow2` an empty
 * qcow2 image (`--cluster-size`, `--compat`, `--backing BASE [--backing-format raw|qcow2]`), as qemu-img create.
 */
import type { Command } from "commander";
import {
  createImage,
  createQcow2,
  type CreateQcow2Options,
  ImageError,
  isImageFormat,
  openMedium,
  parseByteSize,
  parseSize,
  probeFormat,
  resolveBackingName,
} from "../../storage/index.ts";
import { UsageError } from "../errors.ts";

interface MkimageFlags {
  size?: string;
  force?: boolean;
  format: string;
  backing?: string;
  backingFormat?: string;
  clusterSize?: string;
  compat?: string;
}

export function register(program: Command): void {
  program
    .command("mkimage")
    .description(
      "create a disk image: sparse raw (no data blocks until written), or qcow2, optionally over a backing file",
    )
    .argument("<file>", "path of the image to create")
    .option(
      "-s, --size <size>",
      "image size: bytes or a K/M/G/T suffix (powers of 1024), e.g. 64M, 2G (required, except with --backing: the backing image's size)",
    )
    .option("-f, --force", "replace an existing file (never one another xenide process holds for writing)")
    .option("--format <format>", "raw or qcow2", "raw")
    .option(
      "-b, --backing <base>",
      "qcow2: the backing image (a relative name is relative to FILE's folder, as QEMU reads it)",
    )
    .option(
      "-F, --backing-format <format>",
      "qcow2: the backing image's format, raw or qcow2 (default: probed, then recorded)",
    )
    .option("--cluster-size <size>", "qcow2: bytes per cluster, a power of two from 512 to 2M (default 64K)")
    .option("--compat <level>", "qcow2: 1.1 (version 3, default) or 0.10 (version 2)")
    .addHelpText(
      "after",
      "\nExamples:\n  xenide mkimage disk.img --size 64M\n  xenide mkimage disk.img --size 2G --force\n" +
        "  xenide mkimage disk.qcow2 --format qcow2 --size 10G\n" +
        "  xenide mkimage overlay.qcow2 --format qcow2 --backing base.img --cluster-size 64K\n",
    )
    .action((file: string, opts: MkimageFlags) => {
      if (!isImageFormat(opts.format))
        throw new UsageError(`--format must be raw or qcow2, got '${opts.format}'`);
      if (opts.format === "raw") return mkRaw(file, opts);
      return mkQcow2(file, opts);
    });
}

function mkRaw(file: string, opts: MkimageFlags): void {
  for (const [flag, v] of [
    ["--backing", opts.backing],
    ["--backing-format", opts.backingFormat],
    ["--cluster-size", opts.clusterSize],
    ["--compat", opts.compat],
  ] as const) {
    if (v !== undefined) throw new UsageError(`${flag} applies to --format qcow2, not raw images`);
  }
  if (opts.size === undefined) throw new UsageError("required option '-s, --size <size>' not specified");
  const bytes = sizeFlag(opts.size);
  create(file, () => createImage(file, bytes, { force: opts.force === true }));
  process.stdout.write(`created ${file}: ${bytes} bytes (${bytes / 512} sectors of 512 bytes), sparse\n`);
}

function mkQcow2(file: string, opts: MkimageFlags): void {
  if (opts.size === undefined && opts.backing === undefined) {
    throw new UsageError(
      "required option '-s, --size <size>' not specified (it may be left out only with --backing)",
    );
  }
  if (opts.backingFormat !== undefined && opts.backing === undefined) {
    throw new UsageError("--backing-format needs --backing");
  }
  const o: CreateQcow2Options = { size: 0, force: opts.force === true };
  if (opts.compat !== undefined) {
    if (opts.compat !== "1.1" && opts.compat !== "0.10") {
      throw new UsageError(`--compat must be 1.1 or 0.10, got '${opts.compat}'`);
    }
    o.compat = opts.compat;
  }
  if (opts.clusterSize !== undefined) {
    let cs: number;
    try {
      cs = parseByteSize(opts.clusterSize);
    } catch (e) {
      throw new UsageError(`--cluster-size: ${(e as Error).message}`);
    }
    if (!(cs >= 512 && cs <= 2 * 1024 * 1024 && (cs & (cs - 1)) === 0)) {
      throw new UsageError(`--cluster-size must be a power of two from 512 to 2M, got '${opts.clusterSize}'`);
    }
    o.clusterSize = cs;
  }
  let backingNote = "";
  if (opts.backing !== undefined) {
    let fmt = opts.backingFormat;
    if (fmt !== undefined && !isImageFormat(fmt)) {
      throw new UsageError(`--backing-format must be raw or qcow2, got '${fmt}'`);
    }
    // The base as the new image will find it: relative to the new image's folder (QEMU's rule).
    const where = resolveBackingName(file, opts.backing);
    let baseSize: number;
    try {
      fmt ??= probeFormat(where);
      const base = openMedium(where, { format: fmt as "raw" | "qcow2", readOnly: true });
      baseSize = base.sectorCount * 512;
      base.close();
    } catch (e) {
      if (e instanceof ImageError) {
        throw new UsageError(
          `cannot open the backing image ${opts.backing} (looked for ${where}): ${e.message}`,
          1,
        );
      }
      throw e;
    }
    o.backingFile = opts.backing;
    o.backingFormat = fmt as "raw" | "qcow2";
    o.size = baseSize;
    backingNote = `, backing ${opts.backing} (${fmt})`;
  }
  if (opts.size !== undefined) o.size = sizeFlag(opts.size);
  create(file, () => createQcow2(file, o));
  process.stdout.write(
    `created ${file}: qcow2 (compat ${o.compat ?? "1.1"}), ${o.size} bytes virtual (${o.size / 512} sectors of 512 bytes), ` +
      `${o.clusterSize ?? 65536}-byte clusters${backingNote}\n`,
  );
}

function sizeFlag(text: string): number {
  try {
    return parseSize(text);
  } catch (e) {
    // A size the user mistyped is a usage error (exit 2), as every other malformed option is.
    if (e instanceof ImageError) throw new UsageError(`--size: ${e.message}`);
    throw e;
  }
}

function create(file: string, make: () => void): void {
  try {
    make();
  } catch (e) {
    if (e instanceof ImageError && e.code === "EEXIST") {
      throw new UsageError(`${file} already exists; pass --force to replace it`, 1);
    }
    if (e instanceof ImageError && e.code === "EBADSIZE") throw new UsageError(e.message);
    throw e;
  }
}
