/**
 * The Linux checks of one transfer mode, shared by the DMA and PIO test files (separate files so that the
 * two boots run in parallel workers). Debian's 686 kernel binds ata_piix to xenide's function, then the
 * initramfs script reads the MBR, writes and re-reads random sectors, writes a file on the FAT partition
 * and builds an ext2 file system; the host then checks the image with its own tools.
 */

import { createHash } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandLedger, formatLedger, type PhaseReport } from "../../../src/hosts/v86/ledger.ts";
import { buildBootDisk, type DiskLayout, mtype, SECTOR, SYSLINUX_CFG } from "./disk.ts";
import { buildInitramfs } from "./initramfs.ts";
import { guestPiecesOrSkip } from "./pieces.ts";
import { writeGuestReport } from "./report.ts";
import { DRIVE_MODEL, runLinux } from "./run-linux.ts";
import { type LinuxResults, linuxCheckScript, parseResults, randomWrites } from "./workload.ts";

const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

export type TransferMode = "dma" | "pio";

export function linuxSuite(mode: TransferMode): void {
  const { pieces, skip } = guestPiecesOrSkip();
  const title = `Linux ata_piix on xenide's IDE in v86, ${mode.toUpperCase()}${skip ? ` (skipped: ${skip})` : ""}`;

  describe.skipIf(skip !== undefined)(title, () => {
    const tmp = mkdtempSync(join(tmpdir(), `xenide-linux-${mode}-`));
    const img = join(tmp, "disk.img");
    const token = `written by linux over ${mode} ${Date.now().toString(36)}`;
    const ext2Files = { "small.bin": 3, "dir/medium.bin": 96, "dir/sub/large.bin": 700 };
    let layout: DiskLayout;
    let mbrBefore: string;
    let r: LinuxResults;
    let phases: PhaseReport[];
    let image: Uint8Array;

    beforeAll(async () => {
      const p = pieces!;
      layout = buildBootDisk(p, img);
      mbrBefore = md5(readFileSync(img).subarray(0, SECTOR));
      const script = linuxCheckScript({
        layout,
        writes: randomWrites(layout, 16, 40, 0x5eed + mode.length),
        fatToken: token,
        ext2Files,
      });
      const initrd = buildInitramfs(p, mode === "pio" ? { script, libataArgs: "dma=0" } : { script });
      let ledger: CommandLedger | undefined;
      const run = await runLinux({
        pieces: p,
        initrd,
        disk: { kind: "xenide", path: img },
        attach: { onWrite: (port, size, value) => ledger?.onWrite(port, size, value) },
        onCreate: (pc) => {
          ledger = new CommandLedger(pc.hv.acct, () => pc.ide.ide.bmBase, "boot");
        },
        onLine: (line) => {
          const m = /^@@ phase (\S+)/.exec(line);
          if (m) ledger?.mark(m[1]!);
        },
      });
      r = parseResults(run.lines);
      if (!r.done) throw new Error(`guest did not finish; last lines:\n${run.lines.slice(-30).join("\n")}`);
      phases = ledger!.finish().filter((ph) => ph.phase !== "end");
      console.log(
        formatLedger(`Linux ${mode.toUpperCase()} (${(run.wallMs / 1000).toFixed(1)} s wall):`, phases),
      );
      writeGuestReport(`linux-${mode}`, { mode, wallMs: run.wallMs, phases });
      image = new Uint8Array(readFileSync(img));
    }, 600_000);
    afterAll(() => rmSync(tmp, { recursive: true, force: true }));

    // The "boot" phase also holds the firmware's own PIO reads (SeaBIOS has no DMA), so the workload phases
    // after it tell which transfer mode Linux chose.
    const commandsIn = (names: readonly string[]) =>
      new Set(
        phases
          .filter((ph) => ph.phase !== "boot")
          .flatMap((ph) => ph.commands.map((c) => c.command))
          .filter((c) => names.includes(c)),
      );

    it("binds ata_piix to 00:01.1 and IDENTIFY succeeds (model string, LBA48)", () => {
      const dmesg = r.dmesg.join("\n");
      expect(dmesg).toMatch(/ata_piix 0000:00:01\.1/);
      expect(dmesg).toMatch(/ata1: PATA max \S+ cmd 0x1f0 ctl 0x3f6 bmdma 0x[0-9a-f]+ irq 14/);
      expect(dmesg).toContain(`ATA-7: ${DRIVE_MODEL}`);
      expect(dmesg).toMatch(new RegExp(`ata1\\.00: ${layout.sectors} sectors, multi \\d+: LBA48`));
      expect(dmesg).toMatch(/sda: sda1 sda2/);
    });

    it(`moves data with ${mode === "dma" ? "Bus Master DMA" : "PIO"} commands only`, () => {
      const dma = ["READ_DMA", "WRITE_DMA", "READ_DMA_EXT", "WRITE_DMA_EXT"];
      const pio = [
        "READ_MULTIPLE",
        "WRITE_MULTIPLE",
        "READ_MULTIPLE_EXT",
        "WRITE_MULTIPLE_EXT",
        "READ_SECTORS",
        "WRITE_SECTORS",
        "READ_SECTORS_EXT",
        "WRITE_SECTORS_EXT",
      ];
      const used = mode === "dma" ? commandsIn(dma) : commandsIn(pio);
      const other = mode === "dma" ? commandsIn(pio) : commandsIn(dma);
      expect([...used].some((c) => c.startsWith("READ"))).toBe(true);
      expect([...used].some((c) => c.startsWith("WRITE"))).toBe(true);
      expect([...other]).toEqual([]);
    });

    it("reads the MBR the host wrote", () => {
      expect(r.mbr).toBe(mbrBefore);
    });

    it("random sectors written with dd read back equal after dropping caches, and are on the image", () => {
      expect(r.rw.length).toBe(16);
      for (const w of r.rw) {
        expect(w.readBack, `run ${w.index} at sector ${w.sector}`).toBe(w.written);
        const onDisk = md5(image.subarray(w.sector * SECTOR, (w.sector + w.count) * SECTOR));
        expect(onDisk, `image bytes of run ${w.index}`).toBe(w.written);
      }
    });

    it("mounts the FAT partition, and a file Linux wrote there reads back on the host with mtools", () => {
      expect(r.fatMounted).toBe(true);
      expect(r.fatCfgMd5).toBe(md5(Buffer.from(SYSLINUX_CFG)));
      expect(r.fatUnmounted).toBe(true);
      expect(mtype(pieces!, img, layout, "LINUX.TXT")).toBe(token + "\n");
    });

    it("makes an ext2 file system that e2fsck -f -n on the host finds clean, with the files Linux wrote", () => {
      expect(r.mke2fsOk && r.ext2Mounted && r.ext2Unmounted).toBe(true);
      const part = join(tmp, "ext2.img");
      writeFileSync(
        part,
        image.subarray(layout.ext2.start * SECTOR, (layout.ext2.start + layout.ext2.sectors) * SECTOR),
      );
      const fsck = spawnSync(pieces!.e2fsck!, ["-f", "-n", part], { encoding: "utf8" });
      expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
      const debugfs = pieces!.e2fsck!.replace(/e2fsck$/, "debugfs");
      for (const name of Object.keys(ext2Files)) {
        const data = execFileSync(debugfs, ["-R", `cat /${name}`, part], {
          stdio: ["ignore", "pipe", "ignore"],
          maxBuffer: 1 << 24,
        });
        expect(md5(data), name).toBe(r.ext2Files[name]);
      }
    });

    it("accounts every workload's commands and exits", () => {
      const byName = new Map(phases.map((ph) => [ph.phase, ph]));
      for (const name of ["random-write", "random-read", "fat", "ext2"]) {
        const ph = byName.get(name);
        expect(ph, name).toBeDefined();
        expect(ph!.commandCount, name).toBeGreaterThan(0);
        expect(ph!.exits, name).toBeGreaterThan(ph!.commandCount);
      }
      // PIO moves each sector with one REP INSD/OUTSD of 512 bytes, which never crosses a page of the page
      // cache: one string exit per sector, as under Xen. Bus Master DMA moves none through the data port.
      for (const name of ["random-read", "ext2"]) {
        const ph = byName.get(name)!;
        const sectors = ph.commands.reduce((n, c) => n + c.sectors, 0);
        if (mode === "pio") {
          expect(ph.counts.stringIo, name).toBeGreaterThanOrEqual(sectors);
          expect(ph.counts.stringIo, name).toBeLessThanOrEqual(2 * sectors);
        } else {
          expect(ph.counts.stringIo, name).toBe(0);
        }
      }
      // The written runs reach the disk during the random-write phase (sync before the marker).
      const w = byName.get("random-write")!;
      const written = w.commands
        .filter((c) => c.command.startsWith("WRITE"))
        .reduce((n, c) => n + c.sectors, 0);
      expect(written).toBeGreaterThanOrEqual(r.rw.reduce((n, x) => n + x.count, 0));
    });
  });
}
