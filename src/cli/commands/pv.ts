/**
 * `xenide pv-keys IMAGE`: negotiate the PV block device for IMAGE and print both ends' xenstore keys (what a
 * Linux blkfront and blkback would see), with the ring parameters that were agreed. Also makes `--via pv`
 * available to `read` and `write`.
 */
import type { Command } from "commander";
import { ImageError, SyncEngine, openImage } from "../../storage/index.ts";
import { createPvDiskPath, dumpKeys } from "../../xenblk/disk-path.ts";
import { createPvMachine } from "../../xenblk/machine.ts";
import { registerDiskPath } from "../disk-path.ts";
import { UsageError } from "../errors.ts";

registerDiskPath("pv", (ctx) => createPvDiskPath(ctx));

function int(flag: string, allowed: number[]): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!allowed.includes(n))
      throw new UsageError(`${flag} must be one of ${allowed.join(", ")}, got '${v}'`);
    return n;
  };
}

export function register(program: Command): void {
  program
    .command("pv-keys")
    .description("negotiate the PV block device (blkfront <-> blkback) for IMAGE and print the xenstore keys")
    .argument("<image>", "raw disk image")
    .option(
      "--ring-pages <n>",
      "ring pages per queue (1, 2, 4, 8, 16)",
      int("--ring-pages", [1, 2, 4, 8, 16]),
      1,
    )
    .option("--queues <n>", "queues (1-4)", int("--queues", [1, 2, 3, 4]), 1)
    .option(
      "--indirect <n>",
      "indirect segments per request (0 = none)",
      int("--indirect", [0, 32, 64, 128, 256]),
      32,
    )
    .option("--no-persistent", "do not ask for persistent grants")
    .option("--protocol <abi>", "x86_64-abi or x86_32-abi", "x86_64-abi")
    .option("--json", "print a machine-readable result")
    .action(async (image: string, o: Record<string, unknown>) => {
      if (o.protocol !== "x86_64-abi" && o.protocol !== "x86_32-abi") {
        throw new UsageError(`--protocol must be x86_64-abi or x86_32-abi, got '${String(o.protocol)}'`);
      }
      let backend;
      try {
        backend = openImage(image, { readOnly: true });
      } catch (e) {
        if (e instanceof ImageError) throw new UsageError(e.message, 1);
        throw e;
      }
      try {
        const m = await createPvMachine({
          engine: new SyncEngine(backend),
          ringPages: o.ringPages as number,
          queues: o.queues as number,
          indirect: o.indirect as number,
          persistent: o.persistent as boolean,
          protocol: o.protocol,
        });
        const keys = [...dumpKeys(m, m.paths.frontend), ...dumpKeys(m, m.paths.backend)];
        const info = m.front.info;
        await m.close();
        if (o.json) {
          process.stdout.write(JSON.stringify({ info, keys: Object.fromEntries(keys) }, null, 2) + "\n");
          return;
        }
        for (const [k, v] of keys) process.stdout.write(`${k} = "${v}"\n`);
        process.stdout.write(
          `negotiated: ${info.protocol}, ${info.queues} queue(s) of ${info.ringPages} ring page(s), ` +
            `${info.maxSegments} segments/request${info.indirect ? " (indirect)" : ""}, ` +
            `persistent grants ${info.persistent ? "on" : "off"}\n`,
        );
      } finally {
        backend.close();
      }
    });
}
