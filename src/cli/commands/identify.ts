/**
 * `xenide identify IMG`: attach the image to the emulated IDE controller, let the guest ATA driver find the
 * controller on PCI and IDENTIFY the drive, and print what it reported and what that cost in exits.
 */
import type { Command } from "commander";
import {
  type DiskFlags,
  addDiskOptions,
  costReport,
  formatCost,
  identitySummary,
  openDisk,
  writeOut,
} from "../disk-options.ts";
import { identifyCdrom } from "../cdrom.ts";
import { UsageError } from "../errors.ts";

export function register(program: Command): void {
  const cmd = program
    .command("identify")
    .argument("<image>", "raw disk image")
    .description(
      "IDENTIFY DEVICE through the emulated IDE controller and print the drive's answer and its cost",
    );
  addDiskOptions(cmd, { via: false });
  cmd
    .option("--via <method>", "how the 512 identify bytes cross the data port: pio, pio32 or rep", "pio")
    .option("--cdrom", "IMAGE is an ISO in a CD-ROM drive: IDENTIFY PACKET DEVICE, INQUIRY, READ CAPACITY")
    .addHelpText(
      "after",
      "\nExample:\n  xenide identify disk.img\n  xenide identify disk.img --via rep --json",
    )
    .action(async (image: string, flags: DiskFlags & { cdrom?: boolean }) => {
      if (flags.cdrom) {
        await identifyCdrom(image, flags);
        return;
      }
      // IDENTIFY's 512 bytes cross the data port: DMA has no part in it and the PV ring has no IDENTIFY.
      if (!["pio", "pio32", "rep"].includes(flags.via))
        throw new UsageError(`--via for identify is pio, pio32 or rep, got '${flags.via}'`);
      const disk = await openDisk(image, { ...flags, readOnly: true });
      try {
        const s = disk.identity!;
        const report = costReport(disk.hv, disk.setup, 0);
        const id = identitySummary(s);
        if (flags.json) {
          writeOut(
            JSON.stringify(
              { image, engine: disk.engine.kind, via: flags.via, identity: id, cost: report },
              null,
              2,
            ) + "\n",
          );
          return;
        }
        const lines = [
          `model          ${s.model}`,
          `serial         ${s.serial}`,
          `firmware       ${s.firmware}`,
          `capacity       ${s.sectors.toLocaleString("en-US")} sectors (${fmtBytes(s.sectors * 512)})`,
          `LBA28 sectors  ${s.lba28Sectors.toLocaleString("en-US")}`,
          `LBA48          ${s.lba48 ? `yes, ${s.lba48Sectors.toLocaleString("en-US")} sectors` : "no"}`,
          `CHS            ${s.cylinders}/${s.heads}/${s.sectorsPerTrack}`,
          `multiple       max ${s.multipleMax}, current ${s.multipleCurrent}`,
          `dword I/O      ${s.dwordIo ? "yes" : "no"}`,
          `DMA            ${s.dma ? `SWDMA ${list(id.swdmaModes)}, MWDMA ${list(id.mwdmaModes)}, UDMA ${list(id.udmaModes)}${s.udmaSelected >= 0 ? ` (UDMA${s.udmaSelected} selected)` : ""}` : "no"}`,
          `PIO modes      ${list(id.pioModes)}`,
          `write cache    ${String(id.writeCache)}`,
          `flush          ${s.flushCache ? "FLUSH CACHE" : "-"}${s.flushCacheExt ? ", FLUSH CACHE EXT" : ""}`,
        ];
        writeOut(lines.join("\n") + "\n\n");
        writeOut(formatCost(`cost of PCI setup + probe + IDENTIFY (${disk.engine.kind} engine):`, report));
      } finally {
        await disk.close();
      }
    });
}

function list(v: unknown): string {
  const a = v as number[];
  return a.length ? a.join(",") : "-";
}

function fmtBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  let x = n;
  while (x >= 1024 && u < units.length - 1) {
    x /= 1024;
    u++;
  }
  return `${Number.isInteger(x) ? x : x.toFixed(1)} ${units[u]}`;
}
