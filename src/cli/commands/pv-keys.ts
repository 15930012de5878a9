/**
 * `xenide pv-keys IMAGE`: negotiate the PV block device for IMAGE and print both ends' xenstore keys (what a
 * Linux blkfront and blkback would see), with the ring parameters that were agreed.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { buildMachine, type Machine } from "../../machine/builder.ts";
import { connectBlkfront, dumpKeys } from "../../machine/pv.ts";
import { ImageError } from "../../storage/index.ts";
import { UsageError } from "../errors.ts";
import {
  checkXenstoreFlags,
  holdXenstore,
  startXenstore,
  XENSTORE_HOLD_OPTION,
  XENSTORE_SOCKET_OPTION,
  XENSTORE_WAIT_OPTION,
} from "../xenstore-options.ts";

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
      "indirect segments per request: 0 (none), 32, 64, 128 or 256",
      int("--indirect", [0, 32, 64, 128, 256]),
      32,
    )
    .option("--no-persistent", "do not ask for persistent grants")
    .option("--protocol <abi>", "x86_64-abi or x86_32-abi", "x86_64-abi")
    .option(
      "--read-only",
      'give the disk to the guest read-only (mode "r"; default: "w" when the file is writable)',
    )
    .option("--json", "print a machine-readable result")
    .option(...XENSTORE_SOCKET_OPTION)
    .option(...XENSTORE_WAIT_OPTION)
    .option(...XENSTORE_HOLD_OPTION)
    .action(async (image: string, o: Record<string, unknown>) => {
      checkXenstoreFlags(o);
      if (o.protocol !== "x86_64-abi" && o.protocol !== "x86_32-abi") {
        throw new UsageError(`--protocol must be x86_64-abi or x86_32-abi, got '${String(o.protocol)}'`);
      }
      let machine: Machine;
      try {
        // The disk is attached as a toolstack would attach it: writable (mode "w", info 0) when the file can be
        // written, unless --read-only. Nothing is written to it: pv-keys moves no data.
        const readOnly = o.readOnly === true || !writable(image);
        machine = buildMachine({
          pc: false,
          pv: [{ medium: { image, readOnly }, readOnly, persistent: o.persistent as boolean }],
        });
      } catch (e) {
        if (e instanceof ImageError) throw new UsageError(e.message, 1);
        throw e;
      }
      try {
        await startXenstore(machine, o);
        // blkfront negotiates over its xenstore ring page, as a domU's does (the keys are the same either way).
        const front = await connectBlkfront(machine, {
          xenstoreRing: true,
          ringPages: o.ringPages as number,
          queues: o.queues as number,
          indirect: o.indirect as number,
          persistent: o.persistent as boolean,
          protocol: o.protocol,
        });
        const host = machine.xen!;
        const { paths } = machine.pv[0]!;
        const keys = [...dumpKeys(host, paths.frontend), ...dumpKeys(host, paths.backend)];
        const info = front.info;
        if (o.json) {
          process.stdout.write(JSON.stringify({ info, keys: Object.fromEntries(keys) }, null, 2) + "\n");
        } else {
          for (const [k, v] of keys) process.stdout.write(`${k} = "${v}"\n`);
          process.stdout.write(
            `negotiated: ${info.protocol}, ${info.queues} queue(s) of ${info.ringPages} ring page(s), ` +
              `${info.maxSegments} segments/request${info.indirect ? " (indirect)" : ""}, ` +
              `persistent grants ${info.persistent ? "on" : "off"}\n`,
          );
        }
        // The connected session stays up for the socket's clients until interrupted (--xenstore-hold).
        await holdXenstore(o);
        await front.shutdown();
      } finally {
        await machine.close();
      }
    });
}

function writable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
