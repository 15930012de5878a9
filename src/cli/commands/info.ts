/**
 * `xenide info IMG`: what an image is, as `qemu-img info --backing-chain` says it: format, virtual size, space
 * on the host, what this image itself maps, and each image of its backing chain.
 */
import fs from "node:fs";
import path from "node:path";

import type { Command } from "commander";
import {
  type BlockBackend,
  ImageError,
  isImageFormat,
  openMedium,
  Qcow2Backend,
  RawImageBackend,
} from "../../storage/index.ts";
import { openFailure, UsageError } from "../errors.ts";

export interface LayerInfo {
  image: string;
  format: "raw" | "qcow2";
  virtualSize: number;
  /** Bytes the file occupies on the host (its allocated blocks). */
  diskSize: number;
  /** Guest bytes this image itself holds data for (qcow2: allocated clusters; raw: all of them). */
  allocated: number;
  clusterSize?: number;
  compat?: "0.10" | "1.1";
  refcountBits?: number;
  compressedClusters?: number;
  zeroClusters?: number;
  lazyRefcounts?: boolean;
  corrupt?: boolean;
  dirty?: boolean;
  snapshots?: number;
  backingFile?: string;
  backingFormat?: string;
  /** Where the backing file was found (relative names resolve from this image's folder). */
  backingPath?: string;
}

export function register(program: Command): void {
  program
    .command("info")
    .description("show an image's format, virtual size, allocation and backing chain (as qemu-img info)")
    .argument("<image>", "a raw or qcow2 image")
    .option("--format <format>", "raw or qcow2 (default: probed, as QEMU probes)")
    .option("--json", "print a machine-readable result")
    .addHelpText("after", "\nExamples:\n  xenide info disk.qcow2\n  xenide info overlay.qcow2 --json\n")
    .action((image: string, flags: { format?: string; json?: boolean }) => {
      if (flags.format !== undefined && !isImageFormat(flags.format)) {
        throw new UsageError(`--format must be raw or qcow2, got '${flags.format}'`);
      }
      let medium: BlockBackend;
      try {
        medium = openMedium(image, { readOnly: true, ...(flags.format ? { format: flags.format } : {}) });
      } catch (e) {
        if (e instanceof ImageError) throw openFailure(e);
        throw e;
      }
      let chain: LayerInfo[];
      try {
        chain = describeChain(medium);
      } finally {
        medium.close();
      }
      if (flags.json) {
        process.stdout.write(JSON.stringify(chain, null, 2) + "\n");
        return;
      }
      process.stdout.write(chain.map(formatLayer).join("\n"));
    });
}

/** The image and every image below it. */
export function describeChain(top: BlockBackend): LayerInfo[] {
  const out: LayerInfo[] = [];
  for (let m: BlockBackend | null = top; m !== null;) {
    if (m instanceof Qcow2Backend) {
      const i = m.info();
      const layer: LayerInfo = {
        image: m.path,
        format: "qcow2",
        virtualSize: i.virtualSize,
        diskSize: diskSize(m.path),
        allocated: Math.min(i.allocatedClusters * i.clusterSize, i.virtualSize),
        clusterSize: i.clusterSize,
        compat: i.version === 3 ? "1.1" : "0.10",
        refcountBits: i.refcountBits,
        compressedClusters: i.compressedClusters,
        zeroClusters: i.zeroClusters,
        lazyRefcounts: i.lazyRefcounts,
        corrupt: i.corrupt,
        dirty: i.dirty,
        snapshots: i.snapshots,
      };
      if (i.backingFile !== undefined) layer.backingFile = i.backingFile;
      if (i.backingFormat !== undefined) layer.backingFormat = i.backingFormat;
      if (m.backing !== null && "path" in m.backing) layer.backingPath = path.resolve(String(m.backing.path));
      out.push(layer);
      m = m.backing;
    } else {
      const file = m instanceof RawImageBackend ? m.path : m.describe;
      const size = m.sectorCount * m.sectorSize;
      out.push({ image: file, format: "raw", virtualSize: size, diskSize: diskSize(file), allocated: size });
      m = null;
    }
  }
  return out;
}

function diskSize(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}

/** qemu-img's human sizes: powers of 1024 with up to three significant decimals. */
export function humanSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} B` : `${Number(v.toPrecision(3))} ${units[u]}`;
}

function formatLayer(l: LayerInfo): string {
  const lines = [
    `image: ${l.image}`,
    `file format: ${l.format}`,
    `virtual size: ${humanSize(l.virtualSize)} (${l.virtualSize} bytes)`,
    `disk size: ${humanSize(l.diskSize)}`,
  ];
  if (l.format === "qcow2") {
    lines.push(`cluster_size: ${l.clusterSize}`);
    lines.push(
      `allocated: ${humanSize(l.allocated)} (${l.allocated} bytes of guest data in this image; the rest ${l.backingFile ? "reads from the backing file" : "reads as zeroes"})`,
    );
    if (l.backingFile !== undefined) {
      lines.push(`backing file: ${l.backingFile}${l.backingPath ? ` (actual path: ${l.backingPath})` : ""}`);
      lines.push(`backing file format: ${l.backingFormat ?? "(not recorded: probed)"}`);
    }
    lines.push("Format specific information:");
    lines.push(`    compat: ${l.compat}`);
    lines.push(`    refcount bits: ${l.refcountBits}`);
    lines.push(`    compressed clusters: ${l.compressedClusters}`);
    lines.push(`    zero clusters: ${l.zeroClusters}`);
    lines.push(`    lazy refcounts: ${l.lazyRefcounts}`);
    lines.push(`    corrupt: ${l.corrupt}`);
    if (l.dirty) lines.push("    dirty: true (repair with qemu-img check -r all)");
    if (l.snapshots) lines.push(`    internal snapshots: ${l.snapshots}`);
  }
  return lines.join("\n") + "\n";
}
