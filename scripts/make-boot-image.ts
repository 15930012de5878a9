/**
 * `npm run images:boot`: images/boot.img, the real-guest tests' boot disk (syslinux's MBR, a bootable FAT16
 * partition whose syslinux.cfg prints a marker and waits at `boot:`, an empty Linux partition), for
 * `xenide vm images/boot.img --until 'boot:'`. Needs the Debian pieces of scripts/fetch-guest.sh.
 *
 * Usage: tsx scripts/make-boot-image.ts [PATH] [--force]
 */
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { buildBootDisk } from "../test/support/guests/disk.ts";
import { findGuestPieces, REPO_ROOT } from "../test/support/guests/pieces.ts";

const args = process.argv.slice(2);
const force = args.includes("--force");
const out = args.find((a) => !a.startsWith("--")) ?? join(REPO_ROOT, "images", "boot.img");
const pieces = findGuestPieces();
if (typeof pieces === "string") {
  console.error(`make-boot-image: ${pieces}`);
  process.exit(1);
}
if (existsSync(out) && !force) {
  console.error(`make-boot-image: ${out} exists; add --force to replace it`);
  process.exit(2);
}
mkdirSync(dirname(out), { recursive: true });
const layout = buildBootDisk(pieces, out);
console.log(
  `${out}: ${layout.sectors * 512} bytes; FAT16 at sector ${layout.fat.start}, Linux partition at ${layout.ext2.start}`,
);
