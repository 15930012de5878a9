/**
 * The side-by-side demonstration (`xenide demo`, `npm start`): a sample image, the same small workload
 * through plain node:fs, IDE PIO (16-bit, 32-bit, REP), IDE DMA and PV with the guest drivers, every path's
 * data checked, and one table: exits and modelled cycles per I/O, MB/s, ratio to plain fs.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { fmtNum, fmtRatio, textTable } from "./format.ts";
import { prepareImage } from "./image.ts";
import { pathSpec } from "./paths.ts";
import { runCell } from "./runner.ts";
import type { PathVariant, Row, Workload } from "./types.ts";
import { type PathCheck, verifyPath } from "./verify.ts";

export interface DemoOptions {
  /** Image to create (default: in a temporary directory, removed afterwards). */
  image?: string;
  /** Overwrite `image` even when it exists and is not a sample image xenide made. */
  force?: boolean;
  budgetMs?: number;
  log?: (line: string) => void;
}

export interface DemoResult {
  image: string;
  blockSize: number;
  lines: { path: string; check: PathCheck | null; read: Row; write: Row }[];
  table: string;
}

const VARIANTS: PathVariant[] = ["fs-sync", "pio16", "pio32", "rep", "dma", "pv"];
const IMAGE_BYTES = 32 * 2 ** 20;

export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const log = o.log ?? (() => {});
  const tmp = o.image ? null : fs.mkdtempSync(path.join(os.tmpdir(), "xenide-demo-"));
  const imagePath = o.image ?? path.join(tmp!, "sample.img");
  const image = { path: imagePath, bytes: IMAGE_BYTES };
  const budgetMs = o.budgetMs ?? 250;
  const bs = 65536;
  try {
    prepareImage(imagePath, IMAGE_BYTES, { force: o.force === true });
    log(`sample image: ${imagePath} (${IMAGE_BYTES >> 20} MiB raw)`);
    const lines: DemoResult["lines"] = [];
    let lba = 0;
    for (const v of VARIANTS) {
      const spec = pathSpec(v, v === "fs-sync" ? null : "sync");
      const check = v === "fs-sync" ? null : await verifyPath(spec, image, lba);
      lba += 256;
      const cell = (op: "read" | "write"): Promise<Row> => {
        const workload: Workload = { op, pattern: "seq", blockSize: bs, qd: 1 };
        return runCell(
          { path: spec, workload, cache: "warm" },
          { image, workingSet: IMAGE_BYTES, repeats: 3, budgetMs, warmupMs: 30 },
        );
      };
      const read = await cell("read");
      const write = await cell("write");
      log(`${spec.label}: ${check ? (check.ok ? "data OK" : `DATA WRONG: ${check.note}`) : "baseline"}`);
      lines.push({ path: spec.label.replace(/, sync$/, ""), check, read, write });
    }
    const base = lines[0]!;
    const header = ["path", "data", "exits/IO", "cycles/IO", "read MB/s", "vs fs", "write MB/s", "vs fs"];
    const rows = lines.map((l, i) => [
      l.path,
      l.check ? (l.check.ok ? "ok" : "WRONG") : "-",
      i === 0 ? "-" : fmtNum(l.read.exitsPerIo),
      i === 0 ? "-" : fmtNum(l.read.cyclesPerIo),
      fmtNum(l.read.mbps.median),
      i === 0 ? "1.00x" : fmtRatio(l.read.iops.median / base.read.iops.median),
      fmtNum(l.write.mbps.median),
      i === 0 ? "1.00x" : fmtRatio(l.write.iops.median / base.write.iops.median),
    ]);
    const table = textTable(header, rows);
    return { image: imagePath, blockSize: bs, lines, table };
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}
