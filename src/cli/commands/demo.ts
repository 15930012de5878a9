/**
 * `xenide demo` (`npm start`): the short side-by-side of the ways a Xen guest reaches its disk.
 */
import type { Command } from "commander";
import { runDemo } from "../../bench/demo.ts";
import { ImageExistsError } from "../../bench/image.ts";
import { UsageError } from "../errors.ts";

export function register(program: Command): void {
  program
    .command("demo")
    .description(
      "side by side: the same reads and writes through node:fs, IDE PIO, IDE DMA and PV, data checked",
    )
    .option(
      "--image <path>",
      "sample image to create, or reuse if an earlier demo made it (default: a temporary file)",
    )
    .option("-f, --force", "overwrite --image even if it is a file the demo did not make")
    .action(async (flags: { image?: string; force?: boolean }) => {
      const t0 = performance.now();
      let res: Awaited<ReturnType<typeof runDemo>>;
      try {
        res = await runDemo({
          image: flags.image,
          force: flags.force === true,
          log: (l) => process.stderr.write(`  ${l}\n`),
        });
      } catch (e) {
        if (e instanceof ImageExistsError) throw new UsageError(e.message, 1);
        throw e;
      }
      process.stdout.write(
        `\n64 KiB sequential I/O at queue depth 1, sync storage engine, warm page cache; exits and modelled\n` +
          `cycles per 64 KiB read (every port access of the IDE paths is an ioreq exit to the device model).\n\n`,
      );
      process.stdout.write(res.table + "\n");
      const bad = res.lines.filter((l) => l.check && !l.check.ok);
      process.stdout.write(
        `\n${((performance.now() - t0) / 1000).toFixed(1)} s. Full matrix: npm run bench; report: xenide report\n`,
      );
      if (bad.length) throw new UsageError(`data check failed on ${bad.map((l) => l.path).join(", ")}`, 1);
    });
}
