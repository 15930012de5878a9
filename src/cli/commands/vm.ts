/**
 * `xenide vm IMG`: boot a raw disk image with SeaBIOS on xenide's PIIX IDE controller inside the v86 PC
 * emulator, stream the guest's serial console (COM1) to stdout, and report the exits the disk cost. v86 is
 * an optional dependency, loaded only by this command.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { exitsOf } from "../../hypervisor/accounting.ts";
import { CdMediumError } from "../../ide/cd/tray.ts";
import { type IdeDriveSpec, type IdePosition, MachineConfigError } from "../../machine/description.ts";
import { ImageError } from "../../storage/index.ts";
import { UsageError } from "../errors.ts";

interface VmFlags {
  bios?: string;
  vgaBios?: string;
  kernel?: string;
  initrd?: string;
  append?: string;
  memory: string;
  engine: string;
  busMaster: boolean;
  readOnly?: boolean;
  timeout?: string;
  until?: string;
  slave?: string;
  secondary?: string;
  secondarySlave?: string;
  cdrom?: string | true;
  slaveCdrom?: string | true;
  secondaryCdrom?: string | true;
  secondarySlaveCdrom?: string | true;
  boot: string;
}

/**
 * SeaBIOS's boot order in the CMOS (registers 3Dh and 38h bits 7:4, one device per nibble: 1 floppy, 2 hard
 * disk, 3 CD-ROM), as QEMU's `-boot c` and `-boot d` write it.
 */
const BOOT_ORDER: Record<string, number> = { c: 0x312, d: 0x213 };

/** Where Debian's seabios package puts its images, then the test cache of scripts/fetch-guest.sh. */
function findFirmware(name: string): string | undefined {
  const cache = process.env.XENIDE_GUEST_CACHE ?? join(process.cwd(), ".cache", "guests");
  return [join("/usr/share/seabios", name), join(cache, "host/usr/share/seabios", name)].find((p) =>
    existsSync(p),
  );
}

/** The drives of `vm`: IMAGE at the primary master, the other positions as `qtest` names them. */
function vmDrives(image: string | undefined, f: VmFlags): IdeDriveSpec[] {
  const cdAt = image !== undefined ? "secondary-master" : "primary-master";
  const slots: [IdePosition, string | undefined, string | true | undefined][] = [
    ["primary-master", image, cdAt === "primary-master" ? f.cdrom : undefined],
    ["primary-slave", f.slave, f.slaveCdrom],
    [
      "secondary-master",
      f.secondary,
      cdAt === "secondary-master" ? (f.cdrom ?? f.secondaryCdrom) : f.secondaryCdrom,
    ],
    ["secondary-slave", f.secondarySlave, f.secondarySlaveCdrom],
  ];
  if (image !== undefined && f.cdrom !== undefined && f.secondaryCdrom !== undefined)
    throw new UsageError("--cdrom and --secondary-cdrom name the same position (the secondary master)");
  const out: IdeDriveSpec[] = [];
  for (const [position, disk, cd] of slots) {
    if (disk !== undefined && cd !== undefined)
      throw new UsageError(`the ${position} position has both a disk and a CD-ROM`);
    if (disk !== undefined) out.push({ position, medium: { image: disk, readOnly: f.readOnly === true } });
    else if (cd !== undefined)
      out.push({
        position,
        kind: "cd",
        medium: cd === true ? { empty: true } : { image: cd, readOnly: true },
      });
  }
  if (out.length === 0) throw new UsageError("nothing to boot: give IMAGE or a --cdrom ISO");
  return out;
}

function positiveInt(text: string, flag: string): number {
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v <= 0)
    throw new UsageError(`${flag} expects a positive integer, got '${text}'`);
  return v;
}

export function register(program: Command): void {
  program
    .command("vm")
    .argument("[image]", "raw disk image to boot (primary master)")
    .description(
      "boot a raw image with SeaBIOS on xenide's IDE controller inside v86 and stream its serial console",
    )
    .option("--bios <file>", "SeaBIOS image (default: /usr/share/seabios/bios.bin)")
    .option("--vga-bios <file>", "VGA BIOS image (default: vgabios-stdvga.bin next to it)")
    .option("--kernel <bzImage>", "boot this i386 Linux kernel directly instead of from the disk")
    .option("--initrd <file>", "initramfs for --kernel")
    .option("--append <cmdline>", "kernel command line for --kernel", "console=ttyS0")
    .option("--memory <MiB>", "guest RAM", "128")
    .option("--engine <kind>", "storage engine: sync or async", "sync")
    .option("--no-bus-master", "present the IDE function without its Bus Master block (PIO only)")
    .option("--read-only", "open the disk images read-only")
    .option("--slave <image>", "a disk as primary slave")
    .option("--secondary <image>", "a disk as secondary master")
    .option("--secondary-slave <image>", "a disk as secondary slave")
    .option(
      "--cdrom [iso]",
      "a CD-ROM drive (empty without ISO): secondary master when IMAGE is given (QEMU's -cdrom), else primary master",
    )
    .option("--slave-cdrom [iso]", "a CD-ROM drive as primary slave")
    .option("--secondary-cdrom [iso]", "a CD-ROM drive as secondary master")
    .option("--secondary-slave-cdrom [iso]", "a CD-ROM drive as secondary slave")
    .option("--boot <order>", "c: hard disk first; d: CD-ROM first (SeaBIOS's CMOS boot order)", "c")
    .option("--timeout <seconds>", "stop after this long")
    .option("--until <regex>", "stop once a serial line or the text screen matches REGEX")
    .addHelpText(
      "after",
      "\nThe guest's COM1 goes to stdout; the VGA text screen and the exit counts are printed on stderr at the end.\n" +
        "Stop with Ctrl-C, --timeout or --until.\n\nExamples:\n  xenide vm disk.img --until 'boot:' \n" +
        "  xenide vm disk.img --kernel vmlinuz --initrd initrd.gz --append 'console=ttyS0' --timeout 120",
    )
    .action(async (image: string | undefined, flags: VmFlags) => {
      const order = BOOT_ORDER[flags.boot];
      if (order === undefined) throw new UsageError(`--boot must be c or d, got '${flags.boot}'`);
      const drives = vmDrives(image, flags);
      const bios = flags.bios ?? findFirmware("bios.bin");
      if (!bios || !existsSync(bios)) {
        throw new UsageError("no SeaBIOS image: install Debian's seabios package or pass --bios FILE");
      }
      const vgaBios =
        flags.vgaBios ?? findFirmware("vgabios-stdvga.bin") ?? join(bios, "..", "vgabios-stdvga.bin");
      if (!existsSync(vgaBios)) throw new UsageError(`no VGA BIOS at ${vgaBios}: pass --vga-bios FILE`);
      if (flags.initrd && !flags.kernel) throw new UsageError("--initrd needs --kernel");
      if (flags.engine !== "sync" && flags.engine !== "async")
        throw new UsageError("--engine must be sync or async");
      const memoryMiB = positiveInt(flags.memory, "--memory");
      const timeoutMs = flags.timeout ? positiveInt(flags.timeout, "--timeout") * 1000 : undefined;
      let until: RegExp | undefined;
      try {
        until = flags.until ? new RegExp(flags.until, "m") : undefined;
      } catch {
        throw new UsageError(`--until: '${flags.until}' is not a regular expression`);
      }

      let mod: typeof import("../../hosts/v86/xenide-pc.ts");
      let emu: typeof import("../../hosts/v86/emulator.ts");
      try {
        emu = await import("../../hosts/v86/emulator.ts");
        emu.v86WasmPath();
        mod = await import("../../hosts/v86/xenide-pc.ts");
      } catch {
        throw new UsageError("the optional dependency v86 is not installed (npm install v86)");
      }
      let pc: Awaited<ReturnType<typeof mod.createXenidePc>>;
      try {
        pc = await mod.createXenidePc({
          files: {
            bios: emu.readBinary(bios),
            vgaBios: emu.readBinary(vgaBios),
            ...(flags.kernel ? { bzimage: emu.readBinary(flags.kernel), cmdline: flags.append ?? "" } : {}),
            ...(flags.initrd ? { initrd: emu.readBinary(flags.initrd) } : {}),
          },
          memoryMiB,
          drives: drives.map((d) => ({ ...d, engine: flags.engine as "sync" | "async" })),
          busMaster: flags.busMaster,
        });
      } catch (e) {
        if (e instanceof ImageError || e instanceof CdMediumError || e instanceof MachineConfigError)
          throw new UsageError(e.message);
        throw e;
      }
      const { host, hv } = pc;
      const rtc = (
        host.machine.cpu as unknown as { devices: { rtc: { cmos_write(i: number, v: number): void } } }
      ).devices.rtc;
      rtc.cmos_write(0x3d, order & 0xff);
      rtc.cmos_write(0x38, 1 | ((order >> 4) & 0xf0));
      let stop!: (why: string) => void;
      let matched = false;
      const stopped = new Promise<string>((r) => (stop = r));
      const found = (where: string): void => {
        matched = true;
        stop(`${where} matched ${until}`);
      };
      host.serial.onLine((line) => {
        if (until?.test(line)) found("serial");
      });
      host.emulator.add_listener("serial0-output-byte", (b: number) =>
        process.stdout.write(String.fromCharCode(b)),
      );
      const poll = until
        ? setInterval(() => until.test(host.screen.text) && found("screen"), 200)
        : undefined;
      const timer = timeoutMs
        ? setTimeout(() => stop(`timeout of ${flags.timeout} s`), timeoutMs)
        : undefined;
      const onSigint = () => stop("interrupted");
      process.once("SIGINT", onSigint);
      await host.run();
      const why = await stopped;
      process.off("SIGINT", onSigint);
      if (poll) clearInterval(poll);
      if (timer) clearTimeout(timer);
      await host.destroy();
      await pc.machine.close();
      const c = hv.acct.counts;
      process.stderr.write(
        `\n--- screen ---\n${host.screen.text}\n--- stopped: ${why} ---\n` +
          `exits ${exitsOf(c)} (${c.pioIn} in, ${c.pioOut} out, ${c.stringIo} string), ${c.irqInject} IRQs, ` +
          `${(hv.acct.cycles / 1e6).toFixed(1)} Mcycles modelled\n`,
      );
      // --until is a check: a boot that never showed the pattern failed it.
      if (until && !matched)
        throw new UsageError(`--until ${flags.until}: not seen before the stop (${why})`, 1);
    });
}
