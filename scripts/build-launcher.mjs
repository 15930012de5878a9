// Builds the QEMU drop-in launcher's start path: dist/xenide-system-x86_64.cjs, one self-contained CommonJS file
// (no chunks to resolve and link one by one, nothing of the CLI's) written as the function expression of Node's
// CommonJS wrapper, and dist/xenide-system-x86_64.cache, the V8
// code cache that bin/xenide-system-x86_64.cjs hands to vm.Script so that a start compiles nothing it has compiled
// before. A libqtest test starts a machine per test case: parsing and compiling the bundle was the largest part
// of a start after Node's own.
//
// The cache is made by a warm-up run: the launcher, through the same loader as every start, serves a short
// qtest session (IDENTIFY and a DMA read on a scratch image) and writes the cache on its way out, so that the
// functions a start and a first request run are in it too, not only the module's top level. The cache is tied
// to the bundle's bytes (it holds a copy of them) and to the Node version; the loader ignores a cache that does
// not match, and V8 rejects one built by another V8 or with other flags, so a missing or stale cache costs time,
// never correctness.
//
//   node scripts/build-launcher.mjs [OUTDIR]   bundle + cache into OUTDIR (default dist/); build.mjs runs it
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = dirname(dirname(fileURLToPath(import.meta.url)));

/** The bundle's file name, in `dist/` beside the main bundle. */
export const LAUNCHER_BUNDLE = "xenide-system-x86_64.cjs";
/** The code cache's file name, beside the bundle. */
export const LAUNCHER_CACHE = "xenide-system-x86_64.cache";
/** Node's CommonJS module wrapper, around the bundle's text. */
const WRAPPER_HEAD = "(function (exports, require, module, __filename, __dirname) {";
const WRAPPER_TAIL = "});";

/** Bundle src/qemu/main.ts into `outDir` as one CommonJS file. */
export async function bundleLauncher(outDir) {
  await build({
    absWorkingDir: root,
    entryPoints: ["src/qemu/main.ts"],
    outfile: join(outDir, LAUNCHER_BUNDLE),
    bundle: true,
    format: "cjs",
    platform: "node",
    target: "node20",
    packages: "external",
    // Without comments and indentation the file is 30% smaller, and pure ASCII (the comments' "§" made the whole
    // source a two-byte string): every start reads it, compares it with the cache's copy and hands it to V8
    // (about 10 ms of CPU less a start). Names are kept; the source map gives stack traces their lines.
    minifyWhitespace: true,
    // ASCII (esbuild's default, stated): the loader hands the file to V8 as Latin-1 text, one copy, no decoding.
    charset: "ascii",
    sourcemap: true,
    logLevel: "warning",
    // The file is the function expression Node wraps a CommonJS module in, so that the loader compiles the file's
    // text as it is: wrapping it at each start made a second copy of the source and a garbage collection (~5 ms
    // of a start here). It is compiled by bin/xenide-system-x86_64.cjs, not meant for require().
    banner: { js: `// Built by scripts/build-launcher.mjs from src/; do not edit.\n${WRAPPER_HEAD}` },
    footer: { js: WRAPPER_TAIL },
  });
}

/**
 * The warm-up session: QEMU's PC with one disk, the PIIX IDE function's BARs programmed, IDENTIFY DEVICE by PIO
 * and READ DMA of one sector by bus mastering (the requests ide-test's cases start with).
 */
const WARM_UP = [
  "endianness",
  // PCI 0:1.1 (PIIX3 IDE): command register I/O + bus master, BAR4 (bus master) at 0xc000.
  "outl 0xcf8 0x80000920",
  "outl 0xcfc 0xc001",
  "outl 0xcf8 0x80000904",
  "outw 0xcfc 0x5",
  "outb 0x1f6 0xe0",
  "outb 0x1f7 0xec", // IDENTIFY DEVICE
  "inb 0x1f7",
  ...Array.from({ length: 8 }, () => "inw 0x1f0"),
  "readb 0x0",
  // A one-entry PRD table at 0x1000 (512 bytes to 0x2000, end of table), READ DMA LBA 0 count 1.
  "writel 0x1000 0x2000",
  "writel 0x1004 0x80000200",
  "outl 0xc004 0x1000",
  "outb 0x1f2 0x1",
  "outb 0x1f3 0x0",
  "outb 0x1f4 0x0",
  "outb 0x1f5 0x0",
  "outb 0x1f6 0xe0",
  "outb 0x1f7 0xc8",
  "outb 0xc000 0x9",
  "inb 0xc002",
  "inb 0x1f7",
  "outb 0xc000 0x8",
  "read 0x2000 0x10",
  "clock_step 1000",
];

/**
 * Run the launcher once through bin/xenide-system-x86_64 with the bundle in `outDir`, asking it to write the
 * code cache when it exits. Returns an error text, or null when the cache was written.
 */
export function warmUpLauncher(outDir, bin = join(root, "bin", "xenide-system-x86_64")) {
  const scratch = mkdtempSync(join(tmpdir(), "xenide-launcher-cache-"));
  try {
    const image = join(scratch, "disk.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    // The bin itself, as a user starts it: the same Node and flags, or V8 would reject the cache.
    const r = spawnSync(
      bin,
      [
        "-machine",
        "pc",
        "-display",
        "none",
        "-qtest",
        "stdio",
        "-qtest-log",
        "none",
        "-drive",
        `file=${image},if=ide,format=raw,cache=writeback`,
      ],
      {
        input: WARM_UP.join("\n") + "\n",
        encoding: "utf8",
        timeout: 60_000,
        env: {
          ...process.env,
          XENIDE_FROM_SOURCES: "0",
          XENIDE_CODE_CACHE_WRITE: resolve(outDir, LAUNCHER_CACHE),
        },
      },
    );
    if (r.error) return r.error.message;
    if (r.status !== 0) return `the warm-up run ended with status ${r.status}: ${(r.stderr ?? "").trim()}`;
    return null;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Bundle and warm up into `outDir`. A failed warm-up leaves no cache (starts are slower, not wrong). */
export async function buildLauncher(outDir = join(root, "dist"), bin = undefined) {
  rmSync(join(outDir, LAUNCHER_CACHE), { force: true });
  await bundleLauncher(outDir);
  const err = warmUpLauncher(outDir, bin);
  if (err) process.stderr.write(`build-launcher: no code cache for the launcher (${err})\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildLauncher(process.argv[2] ? resolve(process.argv[2]) : undefined);
}
