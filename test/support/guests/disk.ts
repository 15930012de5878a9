/**
 * The test disk: a raw image with syslinux's MBR and a partition table, a bootable FAT16 partition made with
 * Debian's dosfstools and syslinux installer (ldlinux.sys, ldlinux.c32, syslinux.cfg), a Linux partition left
 * empty for the guest's own mke2fs, and an unpartitioned scratch area at the end for raw sector writes.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GuestPieces } from "./pieces.ts";

export const SECTOR = 512;

export interface DiskLayout {
  sectors: number;
  fat: { start: number; sectors: number };
  ext2: { start: number; sectors: number };
  scratch: { start: number; sectors: number };
}

/** 64 MiB: FAT16 of 24 MiB at 1 MiB, ext2 area of 16 MiB after it, 8 MiB of scratch, the rest unused. */
export function defaultLayout(): DiskLayout {
  const MiB = 2048;
  return {
    sectors: 64 * MiB,
    fat: { start: 1 * MiB, sectors: 24 * MiB },
    ext2: { start: 25 * MiB, sectors: 16 * MiB },
    scratch: { start: 48 * MiB, sectors: 8 * MiB },
  };
}

/** The syslinux.cfg of the boot test: print a marker on screen and serial, then wait at the boot: prompt. */
export const SYSLINUX_MARKER = "xenide-syslinux-cfg-loaded";
export const SYSLINUX_CFG = `SERIAL 0 115200
SAY ${SYSLINUX_MARKER}
PROMPT 1
TIMEOUT 0
DEFAULT dummy
LABEL dummy
  KERNEL dummy.c32
`;

export function toolEnv(p: GuestPieces): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${p.mtoolsBin}:${process.env.PATH ?? ""}`, MTOOLS_SKIP_CHECK: "1" };
}

function run(p: GuestPieces, file: string, args: string[]): string {
  return execFileSync(file, args, { env: toolEnv(p), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function partitionEntry(boot: boolean, type: number, start: number, sectors: number): Uint8Array {
  const e = new Uint8Array(16);
  const dv = new DataView(e.buffer);
  e[0] = boot ? 0x80 : 0x00;
  // CHS fields set to the "use LBA" maximum (1023/254/63), as fdisk does beyond the CHS limit.
  e.set([0xfe, 0xff, 0xff], 1);
  e[4] = type;
  e.set([0xfe, 0xff, 0xff], 5);
  dv.setUint32(8, start, true);
  dv.setUint32(12, sectors, true);
  return e;
}

/** Build the image at `path`. */
export function buildBootDisk(p: GuestPieces, path: string, layout = defaultLayout()): DiskLayout {
  const tmp = mkdtempSync(join(tmpdir(), "xenide-disk-"));
  try {
    const fat = join(tmp, "fat.img");
    // 2 KiB clusters keep 24 MiB comfortably inside FAT16's cluster-count range.
    run(p, p.mkfsFat, [
      "-F",
      "16",
      "-s",
      "4",
      "-n",
      "XENIDE",
      "-i",
      "58454e31",
      "-h",
      String(layout.fat.start),
      "-C",
      fat,
      String(layout.fat.sectors / 2),
    ]);
    run(p, p.syslinux, ["--install", fat]);
    const cfg = join(tmp, "syslinux.cfg");
    writeFileSync(cfg, SYSLINUX_CFG);
    run(p, join(p.mtoolsBin, "mcopy"), ["-i", fat, cfg, "::syslinux.cfg"]);

    const disk = Buffer.alloc(layout.sectors * SECTOR);
    const mbr = readFileSync(p.mbr);
    mbr.copy(disk, 0, 0, Math.min(mbr.length, 440));
    disk.set(partitionEntry(true, 0x06, layout.fat.start, layout.fat.sectors), 446);
    disk.set(partitionEntry(false, 0x83, layout.ext2.start, layout.ext2.sectors), 446 + 16);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    readFileSync(fat).copy(disk, layout.fat.start * SECTOR);
    writeFileSync(path, disk);
    return layout;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** mtools' image@@offset syntax for the FAT partition inside the whole-disk image. */
export function fatImageSpec(path: string, layout: DiskLayout): string {
  return `${path}@@${layout.fat.start * SECTOR}`;
}

export function mtype(p: GuestPieces, img: string, layout: DiskLayout, file: string): string {
  return run(p, join(p.mtoolsBin, "mtype"), ["-i", fatImageSpec(img, layout), `::${file}`]);
}

export function mdir(p: GuestPieces, img: string, layout: DiskLayout): string {
  return run(p, join(p.mtoolsBin, "mdir"), ["-i", fatImageSpec(img, layout), "::"]);
}
