/**
 * Debian's i386 Linux reads a CD from xenide's ATAPI drive inside v86: ata_piix finds the PACKET device, sr_mod
 * and cdrom give /dev/sr0, isofs mounts it, and the guest's md5sum of every file must equal the host's. Then the
 * host changes the medium while the guest waits (the QMP `blockdev-change-medium` path: tray open, medium out,
 * another ISO in, tray shut) and the guest mounts the new disc and checks its files too. Once by DMA (libata's
 * default, ATAPI PACKET with the DMA feature bit) and once by PIO (libata.dma=0).
 */

import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createXenidePc } from "../../src/hosts/v86/xenide-pc.ts";
import { buildInitramfs, DISK_MODULES } from "../support/guests/initramfs.ts";
import { guestPiecesOrSkip } from "../support/guests/pieces.ts";
import { linuxBootFiles } from "../support/guests/run-linux.ts";

function xorrisoOrSkip(): string | undefined {
  if (spawnSync("xorriso", ["-version"]).status === 0) return undefined;
  const reason = "xorriso (Debian package xorriso) not installed";
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

const { pieces, skip: noPieces } = guestPiecesOrSkip();
const skip = noPieces ?? xorrisoOrSkip();
const tmp = mkdtempSync(join(tmpdir(), "xenide-linux-cd-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** An ISO 9660 image with `files` (name -> bytes); returns the host's md5 of each. */
function buildIso(
  name: string,
  files: Record<string, Uint8Array>,
): { iso: string; md5: Map<string, string> } {
  const root = join(tmp, `${name}-root`);
  mkdirSync(root, { recursive: true });
  const md5 = new Map<string, string>();
  for (const [f, data] of Object.entries(files)) {
    writeFileSync(join(root, f), data);
    md5.set(f, createHash("md5").update(data).digest("hex"));
  }
  const iso = join(tmp, `${name}.iso`);
  const r = spawnSync(
    "xorriso",
    ["-as", "mkisofs", "-quiet", "-r", "-V", name.toUpperCase(), "-o", iso, root],
    {
      encoding: "utf8",
    },
  );
  if (r.status !== 0) throw new Error(`xorriso: ${r.stderr}`);
  return { iso, md5 };
}

function seeded(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

// The guest mounts the disc, prints md5 of every file, asks for a change, and waits for the second disc (its
// marker file) before checking that one too.
const SCRIPT = `
mkdir -p /mnt/cd
mount -t iso9660 -o ro /dev/sr0 /mnt/cd && echo "@@ mounted-first"
for f in /mnt/cd/*.bin; do echo "@@ md5 first $(md5sum $f)"; done
umount /mnt/cd
echo "@@ change-medium"
i=0
while [ $i -lt 60 ]; do
  if mount -t iso9660 -o ro /dev/sr0 /mnt/cd 2>/dev/null; then
    if [ -e /mnt/cd/second.bin ]; then break; fi
    umount /mnt/cd
  fi
  sleep 1
  i=$((i+1))
done
echo "@@ mounted-second"
for f in /mnt/cd/*.bin; do echo "@@ md5 second $(md5sum $f)"; done
umount /mnt/cd
`;

describe.skipIf(skip !== undefined)(
  `Linux mounts /dev/sr0 on xenide's ATAPI drive in v86${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    for (const mode of ["dma", "pio"] as const) {
      it(`reads every file and a changed medium (${mode})`, async () => {
        const p = pieces!;
        const first = buildIso(`first-${mode}`, {
          "a.bin": seeded(300_000, 1),
          "b.bin": seeded(70_001, 2),
          "first.bin": seeded(5000, 3),
        });
        const second = buildIso(`second-${mode}`, {
          "c.bin": seeded(200_000, 4),
          "second.bin": seeded(9000, 5),
        });
        const initrd = buildInitramfs(p, {
          script: SCRIPT,
          modules: [...DISK_MODULES, "sr_mod", "isofs"],
          ...(mode === "pio" ? { libataArgs: "dma=0" } : {}),
        });
        // PACKET commands the guest issues on the secondary channel, by whether Features asked for DMA.
        const packets = { dma: 0, pio: 0 };
        let features = 0;
        const pc = await createXenidePc({
          files: linuxBootFiles(p, initrd),
          drives: [{ position: "secondary-master", kind: "cd", medium: { image: first.iso } }],
          attach: {
            onWrite: (port, _size, value) => {
              if (port === 0x171) features = value & 0xff;
              else if (port === 0x177 && (value & 0xff) === 0xa0) packets[features & 1 ? "dma" : "pio"]++;
            },
          },
        });
        const drive = pc.machine.ide.get("secondary-master")!;
        let changed: Promise<void> | undefined;
        pc.host.serial.onLine((l) => {
          if (l.startsWith("@@ change-medium")) changed = drive.insert({ image: second.iso });
        });
        const t0 = Date.now();
        try {
          await pc.host.run();
          await pc.host.serial.waitFor(/^@@ done|Kernel panic|reboot: /, 300_000);
        } finally {
          await pc.host.destroy();
          await changed;
          await pc.machine.close();
        }
        const lines = pc.host.serial.lines;
        const sums = (disc: string): Map<string, string> =>
          new Map(
            lines
              .filter((l) => l.startsWith(`@@ md5 ${disc} `))
              .map((l) => {
                const [sum, path] = l.split(/\s+/).slice(3);
                return [path!.replace("/mnt/cd/", ""), sum!] as [string, string];
              }),
          );
        expect(lines, lines.slice(-30).join("\n")).toContain("@@ mounted-first");
        expect(sums("first")).toEqual(first.md5);
        expect(lines).toContain("@@ mounted-second");
        expect(sums("second")).toEqual(second.md5);
        // libata reads by DMA (ATAPI PACKET with Features bit 0) unless dma=0; its other packets go by PIO.
        if (mode === "dma") expect(packets.dma).toBeGreaterThan(0);
        else expect(packets.dma).toBe(0);
        expect(packets.pio).toBeGreaterThan(0);
        console.log(
          `linux cdrom ${mode}: ${((Date.now() - t0) / 1000).toFixed(1)} s, ${pc.hv.acct.counts.irqInject} IRQs`,
        );
      }, 360_000);
    }
  },
);
