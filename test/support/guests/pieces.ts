/**
 * Where the Debian pieces of the real-guest tests live: the cache that `scripts/fetch-guest.sh` fills
 * (`.cache/guests`, or `$XENIDE_GUEST_CACHE`). Nothing here downloads; a missing piece is reported as a reason
 * so tests can skip with one line, or fail under CI.
 */

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export interface GuestPieces {
  cache: string;
  kernelVersion: string;
  /** i386 bzImage. */
  vmlinuz: string;
  /** The kernel's module tree (lib/modules/<version>). */
  modules: string;
  /** i386 busybox-static binary. */
  busybox: string;
  /** Debian SeaBIOS (always PIO for ATA) and its VGA BIOS. */
  bios: string;
  vgaBios: string;
  /** syslinux's MBR boot code (440 bytes). */
  mbr: string;
  /** Host tools unpacked from Debian's packages. */
  syslinux: string;
  mkfsFat: string;
  /** Directory holding mcopy, mtype, ... */
  mtoolsBin: string;
  /** The host's e2fsck (e2fsprogs), when installed. */
  e2fsck: string | undefined;
}

export function guestCacheDir(): string {
  return process.env.XENIDE_GUEST_CACHE ?? join(REPO_ROOT, ".cache", "guests");
}

/** The pieces, or a one-line reason why they are not there. */
export function findGuestPieces(cache = guestCacheDir()): GuestPieces | string {
  const stamp = join(cache, "READY");
  if (!existsSync(stamp))
    return `Debian guest pieces not fetched (run scripts/fetch-guest.sh; looked in ${cache})`;
  const lines = readFileSync(stamp, "utf8").split("\n");
  const kver = lines
    .find((l) => l.startsWith("kernel "))
    ?.slice(7)
    .trim();
  if (!kver) return `${stamp} names no kernel; run scripts/fetch-guest.sh again`;
  for (const l of lines) {
    if (l.startsWith("file ") && !existsSync(join(cache, l.slice(5).trim()))) {
      return `guest piece ${l.slice(5).trim()} missing in ${cache}; run scripts/fetch-guest.sh again`;
    }
  }
  const host = join(cache, "host");
  const e2fsck = ["/usr/sbin/e2fsck", "/sbin/e2fsck"].find((p) => existsSync(p));
  return {
    cache,
    kernelVersion: kver,
    vmlinuz: join(cache, "i386", "boot", `vmlinuz-${kver}`),
    modules: join(cache, "i386", "lib", "modules", kver),
    busybox: join(cache, "i386", "bin", "busybox"),
    bios: join(host, "usr", "share", "seabios", "bios.bin"),
    vgaBios: join(host, "usr", "share", "seabios", "vgabios-stdvga.bin"),
    mbr: join(host, "usr", "lib", "syslinux", "mbr", "mbr.bin"),
    syslinux: join(host, "usr", "bin", "syslinux"),
    mkfsFat: join(host, "sbin", "mkfs.fat"),
    mtoolsBin: join(host, "usr", "bin"),
    e2fsck,
  };
}

/**
 * For tests: the pieces, or a skip reason. Under CI (`CI=true`) a missing piece is an error instead, so a
 * broken setup step cannot pass as skipped tests.
 */
export function guestPiecesOrSkip():
  { pieces: GuestPieces; skip: undefined } | { pieces: undefined; skip: string } {
  try {
    createRequire(import.meta.url).resolve("v86/build/v86.wasm");
  } catch {
    return fail("the optional npm dependency v86 is not installed");
  }
  const p = findGuestPieces();
  if (typeof p !== "string") {
    if (!p.e2fsck) return fail("e2fsck (Debian package e2fsprogs) not installed");
    return { pieces: p, skip: undefined };
  }
  return fail(p);
}

function fail(reason: string): { pieces: undefined; skip: string } {
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  console.warn(`real-guest tests skipped: ${reason}`);
  return { pieces: undefined, skip: reason };
}
