/**
 * `xenide report [bench.json]`: the bench result as a page with charts (report/index.html) and its Markdown
 * twin (report/index.md).
 */
import fs from "node:fs";
import path from "node:path";

import type { Command } from "commander";
import { loadGuestFigures } from "../../report/guests.ts";
import { parseBench, ReportInputError, writeReport } from "../../report/index.ts";
import { UsageError } from "../errors.ts";
import { ensureWritableDir } from "../files.ts";

export function register(program: Command): void {
  program
    .command("report")
    .description("write report/index.html (and index.md, charts/*.svg) from a bench result")
    .argument("[json]", "bench result written by `xenide bench`", "bench/latest.json")
    .option("--out <dir>", "output directory", "report")
    .option("--guests <dir>", "real-guest exit ledgers to include, when present", "report/guests")
    .option("--v86 <file>", "v86 controller comparison to include, when present", "report/bench/v86-ide.json")
    .action(async (json: string, flags: { out: string; guests: string; v86: string }) => {
      let text: string;
      try {
        text = fs.readFileSync(json, "utf8");
      } catch (e) {
        throw new UsageError(`cannot read ${json}: ${(e as Error).message} (run \`npm run bench\` first)`, 1);
      }
      let res;
      try {
        res = parseBench(text);
      } catch (e) {
        if (e instanceof ReportInputError) throw new UsageError(`${json}: ${e.message}`, 1);
        throw e;
      }
      ensureWritableDir(flags.out, "--out");
      const r = await writeReport(res, flags.out, loadGuestFigures(flags.guests, flags.v86));
      process.stdout.write(
        `wrote ${path.join(flags.out, "index.html")}, index.md and ${r.charts.length} charts in ${path.join(flags.out, "charts")}\n`,
      );
    });
}
