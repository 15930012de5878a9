/**
 * `xenide qtest --disk IMG`: serve QEMU's qtest protocol for the emulated PC's IDE controller, on stdin/stdout
 * or a unix socket, so that a client written for `qemu-system-x86_64 -qtest` drives xenide unchanged.
 */
import type { Command } from "commander";
import { COUNTER_KINDS, CostModel } from "../../hypervisor/accounting.ts";
import { type QtestSession, openQtestSession } from "../../qtest/session.ts";
import {
  connectUnix,
  listenUnix,
  serveStream,
  SocketPathError,
  staleSocketAt,
} from "../../qtest/transport.ts";
import { MAX_GUEST_RAM, PAGE_SIZE } from "../../hypervisor/memory.ts";
import { ImageError, parseByteSize } from "../../storage/index.ts";
import { openTrace } from "../disk-options.ts";
import { openFailure, UsageError } from "../errors.ts";
import { CdMediumError } from "../../ide/cd/tray.ts";
import { COMPAT_PROFILES, type CompatProfile, DEFAULT_COMPAT } from "../../ide/compat.ts";

interface QtestFlags {
  disk?: string;
  slave?: string;
  secondary?: string;
  secondarySlave?: string;
  /** A CD-ROM drive: its ISO image, or true for an empty drive. */
  cdrom?: string | true;
  slaveCdrom?: string | true;
  secondaryCdrom?: string | true;
  secondarySlaveCdrom?: string | true;
  socket?: string;
  connect?: string;
  engine: "sync" | "async";
  trace?: string;
  cost: string[];
  ram: string;
  readOnly?: boolean;
  model?: string;
  serial?: string[];
  firmware?: string;
  compat: string;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function register(program: Command): void {
  program
    .command("qtest")
    .description("serve QEMU's qtest protocol (ports, memory, IRQ lines) for the emulated IDE controller")
    .option("--disk <image>", "primary master")
    .option("--slave <image>", "primary slave")
    .option("--secondary <image>", "secondary master")
    .option("--secondary-slave <image>", "secondary slave")
    .option("--cdrom [iso]", "a CD-ROM drive as primary master, with ISO (2048-byte blocks) or empty")
    .option("--slave-cdrom [iso]", "a CD-ROM drive as primary slave")
    .option("--secondary-cdrom [iso]", "a CD-ROM drive as secondary master")
    .option("--secondary-slave-cdrom [iso]", "a CD-ROM drive as secondary slave")
    .option("--socket <path>", "listen on a unix socket instead of stdin/stdout")
    .option("--connect <path>", "connect to a unix socket the client listens on (as QEMU's -qtest unix:PATH)")
    .option("--engine <kind>", "storage engine: sync or async", "sync")
    .option("--trace <file>", "write every exit and IRQ change as JSON lines to FILE")
    .option(
      "--cost <kind=cycles>",
      `override a modelled cost (repeatable); kinds: ${COUNTER_KINDS.join(", ")}`,
      collect,
      [],
    )
    .option("--ram <size>", "guest RAM, 4K to just under 4G (qemu-img size syntax: 512M, 1.5G)", "128M")
    .option("--read-only", "attach every image read-only")
    .option("--model <text>", "IDENTIFY model string for every drive")
    .option("--serial <text>", "IDENTIFY serial, once per drive in order (repeatable)", collect, [])
    .option("--firmware <text>", "IDENTIFY firmware revision for every drive")
    .option(
      "--compat <profile>",
      `where the ATA standard and QEMU 7.2 differ, follow: ${COMPAT_PROFILES.join(" or ")} (docs/conformance.md)`,
      DEFAULT_COMPAT,
    )
    .addHelpText(
      "after",
      "\nThe vCPU never runs: the client is the guest. Port accesses are exits through the ioreq path;\n" +
        "memory commands touch guest RAM; `irq_intercept_in ioapic` reports IRQ 14/15 as `IRQ raise N`.\n" +
        "\nExamples:\n  printf 'outb 0x1f6 0xa0\\ninb 0x1f7\\n' | xenide qtest --disk disk.img\n" +
        "  xenide qtest --disk a.img --slave b.img --socket /tmp/xenide-qtest.sock",
    )
    .action(async (flags: QtestFlags) => {
      if (flags.engine !== "sync" && flags.engine !== "async") {
        throw new UsageError(`--engine must be sync or async, got '${flags.engine}'`);
      }
      if (flags.socket && flags.connect) throw new UsageError("--socket and --connect exclude each other");
      if (!(COMPAT_PROFILES as readonly string[]).includes(flags.compat))
        throw new UsageError(`--compat must be ${COMPAT_PROFILES.join(" or ")}, got '${flags.compat}'`);
      if (flags.socket) {
        // Only a socket left by an earlier run is replaced; a file or anything else at the path is not ours.
        try {
          staleSocketAt(flags.socket);
        } catch (e) {
          if (e instanceof SocketPathError) throw new UsageError(`--socket ${e.message}`);
          throw e;
        }
      }
      let costs: ReturnType<typeof CostModel.parseOverrides>;
      let ram: number;
      try {
        costs = CostModel.parseOverrides(flags.cost);
        ram = parseByteSize(flags.ram);
      } catch (e) {
        throw new UsageError(`--ram: ${(e as Error).message}`);
      }
      if (ram === 0 || ram % PAGE_SIZE !== 0 || ram > MAX_GUEST_RAM)
        throw new UsageError(
          `--ram ${flags.ram}: guest RAM is a whole number of 4 KiB pages, from 4K to ${MAX_GUEST_RAM / 1024} K (just under 4 GiB)`,
        );
      const cds = [flags.cdrom, flags.slaveCdrom, flags.secondaryCdrom, flags.secondarySlaveCdrom];
      const disks = [flags.disk, flags.slave, flags.secondary, flags.secondarySlave];
      const names = [
        "--disk/--cdrom",
        "--slave/--slave-cdrom",
        "--secondary/--secondary-cdrom",
        "--secondary-slave/--secondary-slave-cdrom",
      ];
      cds.forEach((cd, i) => {
        if (cd !== undefined && disks[i] !== undefined)
          throw new UsageError(`${names[i]}: one drive per position (a disk or a CD-ROM)`);
      });
      const cdroms = cds.map((cd) => (cd === undefined ? undefined : cd === true ? null : cd));
      const images = [...disks, ...cdroms].filter((x): x is string => typeof x === "string");
      const tracer = flags.trace ? openTrace(flags.trace, images) : null;
      let machine: QtestSession;
      try {
        machine = openQtestSession({
          images: disks,
          cdroms,
          engine: flags.engine,
          ramSize: ram,
          readOnly: flags.readOnly === true,
          model: flags.model,
          serials: flags.serial ?? [],
          firmware: flags.firmware,
          costs,
          tracer,
          compat: flags.compat as CompatProfile,
        });
      } catch (e) {
        await tracer?.close();
        if (e instanceof ImageError) throw openFailure(e);
        if (e instanceof CdMediumError) throw new UsageError(e.message, 1);
        // SharedArrayBuffer allocation: the host could not give the guest that much memory.
        if (e instanceof RangeError && /allocation failed/i.test(e.message))
          throw new UsageError(
            `--ram ${flags.ram}: the host could not allocate ${ram} bytes of guest RAM`,
            1,
          );
        throw e;
      }
      const server = machine.server;
      // SIGTERM, SIGINT and SIGHUP stop the machine in order, as they stop QEMU (exit 0): write-cache blocks
      // the guest was told are written reach the image before the process ends.
      const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
      let signalled = false;
      let onSignal = (): void => {};
      const stopped = new Promise<void>((resolve) => {
        onSignal = () => {
          signalled = true;
          resolve();
        };
      });
      for (const sig of signals) process.on(sig, onSignal);
      try {
        if (flags.socket) {
          const srv = await listenUnix(server, flags.socket);
          process.stderr.write(`xenide qtest: listening on ${flags.socket}\n`);
          await stopped;
          srv.close();
        } else if (flags.connect) {
          await Promise.race([connectUnix(server, flags.connect), stopped]);
        } else {
          await Promise.race([serveStream(server, process.stdin, process.stdout), stopped]);
        }
        // A second signal during the shutdown below finds the handler still installed and changes nothing.
        await machine.close();
        await tracer?.close();
      } finally {
        for (const sig of signals) process.off(sig, onSignal);
      }
      // A signal leaves the client's stream or socket open; nothing is left to do.
      if (signalled) process.exit(0);
    });
}
