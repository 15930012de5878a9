/**
 * `xenide bench`: every path, the same workloads, the node:fs baseline in the same run; a table on stdout,
 * and files only where `--out` or `--json` say (`npm run bench` refreshes the committed run in bench/).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { Option, type Command } from "commander";
import { ImageExistsError } from "../../bench/image.ts";
import { runBench } from "../../bench/index.ts";
import { benchMarkdown, benchText } from "../../bench/output.ts";
import { usesIoUring } from "../../bench/probes.ts";
import { streamProbe } from "../../bench/rss.ts";
import { UsageError } from "../errors.ts";
import { checkWritableFile, ensureWritableDir } from "../files.ts";

interface BenchFlags {
  quick?: boolean;
  json?: string | boolean;
  out?: string;
  force?: boolean;
  image?: string;
  repeats?: string;
  budget?: string;
  only?: string;
  rss: boolean;
  qtest: boolean;
  ideTest?: boolean;
  formats: boolean;
  cd: boolean;
  threadpool: string;
  ioUring?: boolean;
  save: boolean;
  rssProbe?: string;
  rssFormat?: string;
}

function positiveInt(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`${what} must be a positive whole number, got '${v}'`);
  return n;
}

export function register(program: Command): void {
  program
    .command("bench")
    .description("measure every disk path (IDE PIO/DMA, PV ring) against plain node:fs on the same image")
    .option("--quick", "a short run: one cell of each kind the targets and the report need")
    .option(
      "--json [file]",
      "write the results as JSON to FILE (no FILE: JSON on stdout instead of the table)",
    )
    .option("--out <dir>", "write latest.json and latest.md (the input of `xenide report`) into DIR")
    .option("--no-save", "do not write latest.json / latest.md even with --out")
    .option(
      "--image <path>",
      "bench image to create, or reuse if an earlier bench made it (default: a temporary file)",
    )
    .option("-f, --force", "overwrite --image even if it is a file the bench did not make")
    .option("--repeats <n>", "timed repeats per cell (default: 3)")
    .option("--budget <ms>", "milliseconds per repeat (default: 150; with --quick 80)")
    .option("--only <ids>", "comma-separated substrings of path ids to run (baselines always run)")
    .option("--no-rss", "skip streaming 4 GiB through PV (the memory target)")
    .option("--no-qtest", "skip the qtest comparison with QEMU")
    .option(
      "--ide-test",
      "run QEMU's ide-test against the launcher and against QEMU, side by side (default in full runs: three rounds of about 30 s)",
    )
    .option("--no-ide-test", "skip QEMU's ide-test comparison")
    .option("--no-formats", "skip the raw/qcow2/NBD comparison with qemu-img bench")
    .option("--no-cd", "skip the CD-ROM rows (reads by PIO and DMA beside the disk's)")
    .option("--threadpool <n>", "libuv thread pool size for the run (UV_THREADPOOL_SIZE)", "16")
    .option(
      "--io-uring",
      "run libuv's file I/O on io_uring (UV_USE_IO_URING=1), off by default as in Node 20 and every other xenide command",
    )
    .addOption(new Option("--rss-probe <bytes>").hideHelp())
    .addOption(new Option("--rss-format <format>").choices(["raw", "qcow2"]).default("raw").hideHelp())
    .addHelpText(
      "after",
      "\nRun the bundle, not the sources: `npm run bench` (or `npm run bench -- --quick`).\n" +
        "Every row is the median of the repeats; ratios are against node:fs in the same run.",
    )
    .action(async (flags: BenchFlags) => {
      if (flags.rssProbe !== undefined) {
        const bytes = positiveInt(flags.rssProbe, "--rss-probe")!;
        const format = flags.rssFormat === "qcow2" ? "qcow2" : "raw";
        process.stdout.write(JSON.stringify(await streamProbe(bytes, undefined, format)) + "\n");
        return;
      }
      const pool = positiveInt(flags.threadpool, "--threadpool")!;
      const entry = process.argv[1];
      // libuv sizes its pool from the environment once, at first use (module loading already used it), so a
      // different size needs a fresh process.
      // io_uring likewise: libuv reads UV_USE_IO_URING once, before any JavaScript runs.
      // (UV_USE_IO_URING=1 in the environment asks for it as the flag does).
      const uring = flags.ioUring === true || usesIoUring();
      const settled = process.env.UV_THREADPOOL_SIZE === String(pool) && usesIoUring() === uring;
      if (!settled && entry && /xenide|main\.ts$/.test(entry)) {
        if (process.env.XENIDE_BENCH_CHILD === "1") {
          throw new UsageError(
            "could not set libuv's thread pool size or io_uring use (UV_THREADPOOL_SIZE, UV_USE_IO_URING)",
          );
        }
        const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
          stdio: "inherit",
          env: {
            ...process.env,
            UV_THREADPOOL_SIZE: String(pool),
            UV_USE_IO_URING: uring ? "1" : "0",
            XENIDE_BENCH_CHILD: "1",
          },
        });
        // The child already said what went wrong: pass its status on without a second line.
        if (r.status !== null && r.status !== 0) throw new UsageError("", r.status);
        if (r.status === null) throw new UsageError(`bench ended by ${r.signal ?? "a signal"}`, 1);
        return;
      }
      // Where the results go is checked before a run that can take ten minutes.
      const outDir = flags.save && flags.out !== undefined ? flags.out : null;
      // Values first: a usage error must not leave a directory behind.
      const repeats = positiveInt(flags.repeats, "--repeats");
      const budgetMs = positiveInt(flags.budget, "--budget");
      if (outDir !== null) ensureWritableDir(outDir, "--out");
      if (typeof flags.json === "string") checkWritableFile(flags.json, "--json");
      const only = flags.only ? flags.only.split(",").filter(Boolean) : undefined;
      const bar = await progressBar();
      const res = await runBench({
        quick: flags.quick ?? false,
        image: flags.image,
        force: flags.force === true,
        repeats,
        budgetMs,
        only,
        rss: flags.rss,
        qtest: flags.qtest,
        ...(flags.ideTest !== undefined ? { ideTest: flags.ideTest } : {}),
        formats: flags.formats,
        cd: flags.cd,
        cli: entry,
        progress: bar.update,
      }).catch((e: unknown) => {
        bar.stop();
        if (e instanceof ImageExistsError) throw new UsageError(e.message, 1);
        throw e;
      });
      bar.stop();
      const json = JSON.stringify(res, null, 1);
      if (outDir !== null) {
        fs.writeFileSync(path.join(outDir, "latest.json"), json + "\n");
        fs.writeFileSync(path.join(outDir, "latest.md"), benchMarkdown(res));
      }
      if (typeof flags.json === "string") fs.writeFileSync(flags.json, json + "\n");
      if (flags.json === true) process.stdout.write(json + "\n");
      else process.stdout.write(benchText(res));
      if (outDir !== null) process.stderr.write(`wrote ${path.join(outDir, "latest.json")} and latest.md\n`);
    });
}

/** A progress bar on a terminal; one line per tenth of the run otherwise. */
async function progressBar(): Promise<{
  update: (d: number, t: number, what: string) => void;
  stop: () => void;
}> {
  if (process.stderr.isTTY) {
    const { SingleBar, Presets } = await import("cli-progress");
    const bar = new SingleBar(
      {
        format: "bench [{bar}] {value}/{total} {eta_formatted} left | {what}",
        etaBuffer: 50,
        hideCursor: true,
      },
      Presets.shades_classic,
    );
    let started = false;
    return {
      update: (d, t, what) => {
        if (!started) {
          bar.start(t, 0, { what });
          started = true;
        }
        bar.update(d, { what });
      },
      stop: () => started && bar.stop(),
    };
  }
  let lastTenth = -1;
  return {
    update: (d, t, what) => {
      const tenth = Math.floor((d / t) * 10);
      if (tenth !== lastTenth) {
        lastTenth = tenth;
        process.stderr.write(`bench: ${d}/${t} ${what}\n`);
      }
    },
    stop: () => {},
  };
}
