/**
 * The test initramfs: Debian's busybox-static, the kernel's own modules for the disk path (resolved from each
 * module's `depends=` modinfo field, since the unpacked package has no modules.dep), and an /init script.
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type CpioEntry, gzipCpio, S_IFCHR, S_IFDIR, S_IFREG } from "./cpio.ts";
import type { GuestPieces } from "./pieces.ts";

/**
 * The disk path's modules. Soft dependencies are named explicitly: sd_mod's T10 protection needs a
 * crct10dif and a crc64-rocksoft implementation, and ext4 (which serves ext2 here) a crc32c.
 */
export const DISK_MODULES = [
  "ata_piix",
  "crct10dif_generic",
  "crc64_rocksoft_generic",
  "sd_mod",
  "vfat",
  "nls_cp437",
  "nls_utf8",
  "nls_ascii",
  "crc32c_generic",
  "ext4",
] as const;

const norm = (n: string) => n.replace(/-/g, "_");

/** Module name → path relative to the module tree, from modules.order. */
function moduleIndex(modulesDir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(join(modulesDir, "modules.order"), "utf8").split("\n")) {
    const rel = line.trim();
    if (!rel.endsWith(".ko")) continue;
    const base = rel.slice(rel.lastIndexOf("/") + 1, -3);
    m.set(norm(base), rel);
  }
  return m;
}

function dependsOf(ko: Uint8Array): string[] {
  // modinfo strings are NUL-separated "key=value" entries in the .modinfo section.
  const text = Buffer.from(ko).toString("latin1");
  const i = text.indexOf("\0depends=");
  if (i < 0) return [];
  const end = text.indexOf("\0", i + 1);
  const v = text.slice(i + "\0depends=".length, end);
  return v ? v.split(",").map(norm) : [];
}

/** The module files to insmod, dependencies first. */
export function resolveModules(
  modulesDir: string,
  wanted: readonly string[],
): { name: string; data: Uint8Array }[] {
  const index = moduleIndex(modulesDir);
  const out: { name: string; data: Uint8Array }[] = [];
  const done = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    const n = norm(name);
    if (done.has(n)) return;
    if (chain.includes(n)) throw new Error(`module dependency cycle: ${[...chain, n].join(" -> ")}`);
    const rel = index.get(n);
    if (!rel) throw new Error(`module ${name} not in ${modulesDir}/modules.order`);
    const data = new Uint8Array(readFileSync(join(modulesDir, rel)));
    for (const d of dependsOf(data)) visit(d, [...chain, n]);
    done.add(n);
    out.push({ name: n, data });
  };
  for (const w of wanted) visit(w, []);
  return out;
}

export interface InitramfsOptions {
  /** Shell commands run by /init after the modules are loaded and /proc, /sys, /dev are mounted. */
  script: string;
  /** Extra arguments for libata.ko (for example "dma=0"). */
  libataArgs?: string;
  modules?: readonly string[];
}

/** A gzip-compressed newc initramfs whose /init loads the disk modules and runs `script`, then powers off. */
export function buildInitramfs(pieces: GuestPieces, opts: InitramfsOptions): Uint8Array {
  const mods = resolveModules(pieces.modules, opts.modules ?? DISK_MODULES);
  const insmods = mods
    .map(
      (m) =>
        `insmod /lib/modules/${m.name}.ko${m.name === "libata" && opts.libataArgs ? " " + opts.libataArgs : ""}`,
    )
    .join("\n");
  const init = `#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /mnt /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "@@ init"
${insmods}
echo "@@ modules-loaded"
${opts.script}
echo "@@ done"
sync
poweroff -f
`;
  const entries: CpioEntry[] = [
    { path: "bin", mode: S_IFDIR | 0o755 },
    { path: "dev", mode: S_IFDIR | 0o755 },
    { path: "dev/console", mode: S_IFCHR | 0o600, rdev: { major: 5, minor: 1 } },
    { path: "lib", mode: S_IFDIR | 0o755 },
    { path: "lib/modules", mode: S_IFDIR | 0o755 },
    { path: "bin/busybox", mode: S_IFREG | 0o755, data: readFileSync(pieces.busybox) },
    { path: "init", mode: S_IFREG | 0o755, data: init },
    ...mods.map((m) => ({ path: `lib/modules/${m.name}.ko`, mode: S_IFREG | 0o644, data: m.data })),
  ];
  return gzipCpio(entries);
}
