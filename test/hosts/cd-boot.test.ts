/**
 * Debian's SeaBIOS boots an El Torito CD from xenide's ATAPI drive inside v86: an ISO made with Debian's xorriso
 * and isolinux (isolinux.bin from the isolinux package, ldlinux.c32 from the guest pieces' syslinux-common), in
 * a CD-ROM drive at the secondary master, with the CMOS boot order set to the CD first (as `xenide vm --boot d`).
 * The firmware finds the drive by its PACKET signature, reads the boot catalog and the boot image with ATAPI
 * READ(10), and isolinux reads ldlinux.c32 and isolinux.cfg from the ISO 9660 tree the same way (the cfg's SAY
 * line proves the last step).
 */

import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readBinary } from "../../src/hosts/v86/emulator.ts";
import { createXenidePc } from "../../src/hosts/v86/xenide-pc.ts";
import { guestPiecesOrSkip, REPO_ROOT } from "../support/guests/pieces.ts";

const ISOLINUX_BIN = "/usr/lib/ISOLINUX/isolinux.bin";
const MARKER = "XENIDE-CD-BOOT-OK";

function toolsOrSkip(): string | undefined {
  const missing = [
    spawnSync("xorriso", ["-version"]).status === 0 ? "" : "xorriso (Debian package xorriso)",
    existsSync(ISOLINUX_BIN) ? "" : "isolinux.bin (Debian package isolinux)",
  ].filter(Boolean);
  if (missing.length === 0) return undefined;
  const reason = `${missing.join(", ")} not installed`;
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

const { pieces, skip: noPieces } = guestPiecesOrSkip();
const noTools = toolsOrSkip();
const skip = noPieces ?? noTools;
const tmp = mkdtempSync(join(tmpdir(), "xenide-cdboot-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** An El Torito ISO (no emulation) whose isolinux says MARKER and stops at its prompt. */
function buildIso(out: string, ldlinux: string): void {
  const root = join(tmp, "iso-root");
  mkdirSync(join(root, "isolinux"), { recursive: true });
  copyFileSync(ISOLINUX_BIN, join(root, "isolinux", "isolinux.bin"));
  copyFileSync(ldlinux, join(root, "isolinux", "ldlinux.c32"));
  writeFileSync(join(root, "isolinux", "isolinux.cfg"), `SAY ${MARKER}\nPROMPT 1\nTIMEOUT 0\n`);
  writeFileSync(join(root, "README.TXT"), "a CD for xenide's ATAPI drive\n");
  const r = spawnSync(
    "xorriso",
    [
      "-as",
      "mkisofs",
      "-quiet",
      "-o",
      out,
      "-b",
      "isolinux/isolinux.bin",
      "-c",
      "isolinux/boot.cat",
      "-no-emul-boot",
      "-boot-load-size",
      "4",
      "-boot-info-table",
      root,
    ],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`xorriso failed: ${r.stderr}`);
}

describe.skipIf(skip !== undefined)(
  `SeaBIOS boots an El Torito CD from xenide's ATAPI drive in v86${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    it("reaches the isolinux prompt from the secondary master with the CD first in the boot order", async () => {
      const p = pieces!;
      const iso = join(tmp, "boot.iso");
      buildIso(iso, join(p.cache, "host", "usr", "lib", "syslinux", "modules", "bios", "ldlinux.c32"));
      const pc = await createXenidePc({
        files: { bios: readBinary(p.bios), vgaBios: readBinary(p.vgaBios) },
        drives: [{ position: "secondary-master", kind: "cd", medium: { image: iso } }],
      });
      // CMOS boot order CD-ROM, floppy, hard disk (3Dh low nibble first, then 38h bits 7:4), as -boot d.
      const rtc = (
        pc.host.machine.cpu as unknown as { devices: { rtc: { cmos_write(i: number, v: number): void } } }
      ).devices.rtc;
      rtc.cmos_write(0x3d, 0x13);
      rtc.cmos_write(0x38, 0x21);
      try {
        await pc.host.run();
        await pc.host.screen.waitFor(/^boot:/m, 90_000);
        const screen = pc.host.screen.text;
        expect(screen).toMatch(/Booting from DVD\/CD/);
        expect(screen).toMatch(/ISOLINUX 6\.04/);
        expect(screen).toContain(MARKER);
      } finally {
        await pc.host.destroy();
        await pc.machine.close();
      }
      // Everything came through xenide's controller: port exits, and interrupts from the ATAPI data phases.
      expect(pc.hv.acct.counts.pioOut).toBeGreaterThan(0);
    }, 150_000);

    it("`xenide vm IMG --cdrom ISO --boot d` boots the CD before the disk", () => {
      const p = pieces!;
      const iso = join(tmp, "vm.iso");
      buildIso(iso, join(p.cache, "host", "usr", "lib", "syslinux", "modules", "bios", "ldlinux.c32"));
      // A blank disk at the primary master: with --boot c SeaBIOS would try it first and fail over.
      const disk = join(tmp, "blank.img");
      writeFileSync(disk, new Uint8Array(1 << 20));
      const tsx = join(REPO_ROOT, "node_modules", "tsx", "dist", "loader.mjs");
      const args = ["vm", disk, "--cdrom", iso, "--boot", "d", "--bios", p.bios, "--vga-bios", p.vgaBios];
      const r = spawnSync(
        process.execPath,
        [
          "--import",
          `file://${tsx}`,
          join(REPO_ROOT, "src/cli/main.ts"),
          ...args,
          "--until",
          "^boot:",
          "--timeout",
          "90",
        ],
        { encoding: "utf8", timeout: 120_000, env: { ...process.env, NO_COLOR: "1" } },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/Booting from DVD\/CD/);
      expect(r.stderr).not.toMatch(/Booting from Hard Disk/);
      expect(r.stderr).toContain(MARKER);
    }, 150_000);
  },
);
