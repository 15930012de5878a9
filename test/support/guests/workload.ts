/**
 * The Linux guest's checks, as a busybox shell script for /init, and the parser for what it prints on the
 * serial console. Every result line starts with "@@ "; "@@ phase NAME" marks where the host snapshots its
 * exit counters, so each workload's cost can be told apart.
 */

import type { DiskLayout } from "./disk.ts";

export interface RandomWrite {
  sector: number;
  count: number;
}

/** Deterministic, non-overlapping runs of sectors inside the scratch area (xorshift32 from `seed`). */
export function randomWrites(layout: DiskLayout, runs: number, maxRun: number, seed: number): RandomWrite[] {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const slot = Math.floor(layout.scratch.sectors / runs);
  const out: RandomWrite[] = [];
  for (let i = 0; i < runs; i++) {
    const count = 1 + (next() % maxRun);
    const off = next() % Math.max(1, slot - count);
    out.push({ sector: layout.scratch.start + i * slot + off, count });
  }
  return out;
}

export interface LinuxChecks {
  layout: DiskLayout;
  writes: RandomWrite[];
  /** Text Linux writes into a new file on the FAT partition. */
  fatToken: string;
  /** Files Linux creates on the ext2 file system it makes (name → size in 512-byte blocks). */
  ext2Files: Record<string, number>;
  /** Optional sequential direct-I/O test (MiB); 0 to skip. */
  seqMiB?: number;
}

export function linuxCheckScript(c: LinuxChecks): string {
  const s: string[] = [];
  s.push(
    `echo "@@ phase probe"`,
    `i=0; while [ ! -b /dev/sda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`,
    `dmesg | grep -E 'ata_piix|ata[0-9]|scsi|sd 0:|sda' | sed 's/^/@@ dmesg /'`,
    `echo "@@ phase mbr"`,
    `echo "@@ mbr $(dd if=/dev/sda bs=512 count=1 2>/dev/null | md5sum | cut -d' ' -f1)"`,
    `echo "@@ phase random-write"`,
  );
  c.writes.forEach((w, i) => {
    s.push(
      `dd if=/dev/urandom of=/tmp/w${i} bs=512 count=${w.count} 2>/dev/null`,
      `dd if=/tmp/w${i} of=/dev/sda bs=512 seek=${w.sector} conv=notrunc 2>/dev/null`,
    );
  });
  s.push(`sync`, `echo 3 > /proc/sys/vm/drop_caches`, `echo "@@ phase random-read"`);
  c.writes.forEach((w, i) => {
    s.push(
      `echo "@@ rw ${i} ${w.sector} ${w.count} $(md5sum /tmp/w${i} | cut -d' ' -f1) ` +
        `$(dd if=/dev/sda bs=512 skip=${w.sector} count=${w.count} 2>/dev/null | md5sum | cut -d' ' -f1)"`,
    );
  });
  s.push(
    `echo "@@ phase fat"`,
    `mount -t vfat /dev/sda1 /mnt && echo "@@ fat-mounted"`,
    `echo "@@ fat-cfg $(md5sum /mnt/syslinux.cfg | cut -d' ' -f1)"`,
    `echo '${c.fatToken}' > /mnt/LINUX.TXT`,
    `umount /mnt && echo "@@ fat-unmounted"`,
    `echo "@@ phase ext2"`,
    `mke2fs -q /dev/sda2 && echo "@@ mke2fs-ok"`,
    `mount -t ext2 /dev/sda2 /mnt && echo "@@ ext2-mounted"`,
    `mkdir -p /mnt/dir/sub`,
  );
  for (const [name, blocks] of Object.entries(c.ext2Files)) {
    s.push(
      `dd if=/dev/urandom of=/mnt/${name} bs=512 count=${blocks} 2>/dev/null`,
      `echo "@@ ext2-file ${name} $(md5sum /mnt/${name} | cut -d' ' -f1)"`,
    );
  }
  s.push(`umount /mnt && echo "@@ ext2-unmounted"`);
  if (c.seqMiB) {
    const n = c.seqMiB * 2048;
    const at = c.layout.scratch.start;
    s.push(
      `echo "@@ phase seq-write"`,
      `dd if=/dev/zero of=/dev/sda bs=64k seek=${at / 128} count=${n / 128} oflag=direct 2>&1 | tail -n1 | sed 's/^/@@ seq-write /'`,
      `echo "@@ phase seq-read"`,
      `dd if=/dev/sda of=/dev/null bs=64k skip=${at / 128} count=${n / 128} iflag=direct 2>&1 | tail -n1 | sed 's/^/@@ seq-read /'`,
    );
  }
  s.push(`sync`, `echo "@@ phase end"`);
  return s.join("\n");
}

export interface LinuxResults {
  dmesg: string[];
  mbr?: string;
  rw: { index: number; sector: number; count: number; written: string; readBack: string }[];
  fatMounted: boolean;
  fatCfgMd5?: string;
  fatUnmounted: boolean;
  mke2fsOk: boolean;
  ext2Mounted: boolean;
  ext2Files: Record<string, string>;
  ext2Unmounted: boolean;
  done: boolean;
}

export function parseResults(lines: readonly string[]): LinuxResults {
  const r: LinuxResults = {
    dmesg: [],
    rw: [],
    fatMounted: false,
    fatUnmounted: false,
    mke2fsOk: false,
    ext2Mounted: false,
    ext2Files: {},
    ext2Unmounted: false,
    done: false,
  };
  for (const line of lines) {
    const m = /^@@ (\S+)(?: (.*))?$/.exec(line);
    if (!m) continue;
    const [, key, rest = ""] = m;
    switch (key) {
      case "dmesg":
        r.dmesg.push(rest);
        break;
      case "mbr":
        r.mbr = rest.trim();
        break;
      case "rw": {
        const [i, sector, count, written, readBack] = rest.split(" ");
        r.rw.push({
          index: Number(i),
          sector: Number(sector),
          count: Number(count),
          written: written ?? "",
          readBack: readBack ?? "",
        });
        break;
      }
      case "fat-mounted":
        r.fatMounted = true;
        break;
      case "fat-cfg":
        r.fatCfgMd5 = rest.trim();
        break;
      case "fat-unmounted":
        r.fatUnmounted = true;
        break;
      case "mke2fs-ok":
        r.mke2fsOk = true;
        break;
      case "ext2-mounted":
        r.ext2Mounted = true;
        break;
      case "ext2-file": {
        const [name, md5] = rest.split(" ");
        if (name) r.ext2Files[name] = md5 ?? "";
        break;
      }
      case "ext2-unmounted":
        r.ext2Unmounted = true;
        break;
      case "done":
        r.done = true;
        break;
    }
  }
  return r;
}
