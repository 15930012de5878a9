/**
 * Debian's SeaBIOS boots a syslinux disk from xenide's PIIX IDE inside v86: MBR, VBR, ldlinux.sys,
 * ldlinux.c32 and syslinux.cfg are all read through our controller (the cfg's SAY line proves the last
 * step), with and without a Bus Master block. Debian's bios.bin is built without CONFIG_ATA_DMA, so it reads
 * with READ SECTORS (20h) in both cases; what changes is whether the firmware finds and maps BAR4. A third
 * boot turns off the batching of REP INSW into string exits, to show the same firmware run one exit per word.
 */

import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readBinary } from "../../src/hosts/v86/emulator.ts";
import { CommandLedger, formatLedger } from "../../src/hosts/v86/ledger.ts";
import { createXenidePc } from "../../src/hosts/v86/xenide-pc.ts";
import { RawImageBackend } from "../../src/storage/index.ts";
import { buildBootDisk, fatImageSpec, SYSLINUX_MARKER, toolEnv } from "../support/guests/disk.ts";
import { guestPiecesOrSkip, REPO_ROOT } from "../support/guests/pieces.ts";
import { writeGuestReport } from "../support/guests/report.ts";

const { pieces, skip } = guestPiecesOrSkip();
const tmp = mkdtempSync(join(tmpdir(), "xenide-fw-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(skip !== undefined)(
  `SeaBIOS boots from xenide's IDE in v86${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    const cases = [
      { busMaster: true, batch: true, name: "with the Bus Master BAR" },
      { busMaster: false, batch: true, name: "without the Bus Master BAR" },
      { busMaster: true, batch: false, name: "with every string item as its own exit" },
    ];
    for (const { busMaster, batch, name } of cases) {
      it(`reaches the syslinux prompt ${name}`, async () => {
        const p = pieces!;
        const img = join(tmp, `boot-${busMaster}-${batch}.img`);
        const layout = buildBootDisk(p, img);
        const ldlinux = execFileSync(
          join(p.mtoolsBin, "mcopy"),
          ["-i", fatImageSpec(img, layout), "::ldlinux.sys", "-"],
          {
            env: toolEnv(p),
          },
        );
        const backend = RawImageBackend.open(img);
        let ledger: CommandLedger | undefined;
        const pc = await createXenidePc({
          files: { bios: readBinary(p.bios), vgaBios: readBinary(p.vgaBios) },
          drives: [{ position: "primary-master", medium: { backend }, model: "XENIDE FIRMWARE TEST" }],
          busMaster,
          attach: {
            batchStringIo: batch,
            onWrite: (port, size, value) => ledger?.onWrite(port, size, value),
          },
        });
        ledger = new CommandLedger(pc.hv.acct, () => pc.ide.ide.bmBase, "firmware");
        try {
          await pc.host.run();
          await pc.host.screen.waitFor(/^boot:/m, 60_000);
          const screen = pc.host.screen.text;
          expect(screen).toContain("Booting from Hard Disk");
          expect(screen).toMatch(/SYSLINUX 6\.04/);
          expect(screen).toContain(SYSLINUX_MARKER);
        } finally {
          await pc.host.destroy();
          backend.close();
        }
        const report = ledger.finish();
        console.log(formatLedger(`SeaBIOS ${name}:`, report));
        writeGuestReport(`seabios-${busMaster ? "bmbar" : "nobmbar"}${batch ? "" : "-per-item"}`, report);

        const cmds = new Map(report[0]!.commands.map((c) => [c.command, c]));
        expect(cmds.get("IDENTIFY_DEVICE")?.count).toBeGreaterThanOrEqual(1);
        // Debian's SeaBIOS reads with PIO READ SECTORS either way; it read at least the MBR, the VBR and all of
        // ldlinux.sys through our controller.
        const reads = cmds.get("READ_SECTORS");
        expect(reads?.sectors).toBeGreaterThanOrEqual(2 + Math.ceil(ldlinux.length / 512));
        expect(cmds.has("READ_DMA")).toBe(false);
        const c = pc.hv.acct.counts;
        if (batch) {
          // SeaBIOS moves each sector with one REP INSW: one string exit, two when its buffer crosses a page
          // (Xen clamps a string ioreq to the page). IDENTIFY's 256 words are one more.
          expect(c.stringIo).toBeGreaterThanOrEqual(reads!.sectors);
          expect(c.stringIo).toBeLessThanOrEqual(2 * reads!.sectors + 2);
        } else {
          // v86 hands over every word: 256 IN exits per sector.
          expect(c.stringIo).toBe(0);
          expect(c.pioIn).toBeGreaterThanOrEqual(256 * reads!.sectors);
        }
        // With the BAR the firmware assigned BAR4 and enabled I/O decode, so the model decodes the block;
        // without it there is nothing to assign.
        if (busMaster) expect(pc.ide.ide.bmBase).toBeGreaterThan(0);
        else expect(pc.ide.ide.bmBase).toBe(-1);
      }, 120_000);
    }

    /** `xenide vm` on a fresh boot disk, from the sources, with SeaBIOS from the guest pieces. */
    const vm = (name: string, until: string, timeoutS: number) => {
      const p = pieces!;
      const img = join(tmp, name);
      buildBootDisk(p, img);
      const tsx = join(REPO_ROOT, "node_modules", "tsx", "dist", "loader.mjs");
      const args = [
        "vm",
        img,
        "--bios",
        p.bios,
        "--vga-bios",
        p.vgaBios,
        "--until",
        until,
        "--timeout",
        `${timeoutS}`,
      ];
      return spawnSync(
        process.execPath,
        ["--import", `file://${tsx}`, join(REPO_ROOT, "src/cli/main.ts"), ...args],
        {
          encoding: "utf8",
          timeout: (timeoutS + 20) * 1000,
          env: { ...process.env, NO_COLOR: "1" },
        },
      );
    };

    it("`xenide vm IMG` boots the image and streams the guest's serial console", () => {
      const r = vm("cli.img", "^boot:", 150);
      expect(r.status, r.stderr).toBe(0);
      // syslinux's SERIAL directive puts its banner and prompt on COM1, which the command streams to stdout.
      expect(r.stdout).toMatch(/SYSLINUX 6\.04/);
      expect(r.stderr).toContain(SYSLINUX_MARKER);
      expect(r.stderr).toMatch(/stopped: (screen|serial) matched/);
      expect(r.stderr).toMatch(/exits \d+ \(\d+ in, \d+ out, [1-9]\d* string\)/);
    }, 180_000);

    it("`xenide vm IMG --until` fails (exit 1, saying so) when the pattern never shows", () => {
      const r = vm("cli-never.img", "^never printed$", 8);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/stopped: timeout of 8 s/);
      expect(r.stderr).toMatch(/--until \^never printed\$: not seen before the stop \(timeout of 8 s\)/);
    }, 90_000);
  },
);
