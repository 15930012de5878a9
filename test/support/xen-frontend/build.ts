/**
 * Builds `blkfront.c` (a frontend written against Xen's own public headers) into a wasm32 module, with the
 * tools Debian ships: clang, lld (wasm-ld) and libxen-dev's /usr/include/xen. The output is cached by a hash
 * of the source, the flags and the compiler version under `node_modules/.cache/xenide/` (never committed).
 *
 * The module imports its memory (`env.memory`, shared) so that the guest's physical memory can be its linear
 * memory, and `env.xen_evtchn_send(port)`. Its statics and stack occupy the first `XF_LOW_MEMORY` bytes of
 * that memory; guest allocations must stay above.
 */

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BlkifAbi } from "../../../src/xenblk/abi.ts";

export const XF_SOURCE = fileURLToPath(new URL("./blkfront.c", import.meta.url));
/** Where libxen-dev installs the public headers. */
export const XEN_INCLUDE_ROOT = "/usr/include";
/** The module's stack and statics live below this guest-physical address. */
export const XF_LOW_MEMORY = 0x10_0000;
const STACK_SIZE = 64 * 1024;

export interface WasmToolchain {
  clang: string;
  version: string;
}

/** Why the frontend cannot be built here (a missing tool or header), or the toolchain to build it with. */
export function findToolchain(): WasmToolchain | { missing: string } {
  const clang = process.env.XENIDE_CLANG ?? "clang";
  let version: string;
  try {
    version = execFileSync(clang, ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "";
  } catch {
    return { missing: `clang not found (apt-get install -y clang lld libxen-dev)` };
  }
  try {
    execFileSync("wasm-ld", ["--version"], { encoding: "utf8" });
  } catch {
    return { missing: `wasm-ld not found (apt-get install -y lld)` };
  }
  if (!existsSync(join(XEN_INCLUDE_ROOT, "xen/io/blkif.h"))) {
    return {
      missing: `Xen public headers not found in ${XEN_INCLUDE_ROOT}/xen (apt-get install -y libxen-dev)`,
    };
  }
  return { clang, version };
}

/** Compiler flags for one ring ABI. */
export function compileFlags(abi: BlkifAbi): string[] {
  const arch = abi === "x86_32-abi" ? ["-D__i386__", "-DXF_ABI_X86_32"] : ["-D__x86_64__"];
  return [
    "--target=wasm32",
    "-ffreestanding",
    "-nostdlib",
    "-O2",
    "-Wall",
    "-Werror",
    // Not -I: clang's own freestanding stdint.h/stddef.h must win over the host libc's.
    "-idirafter",
    XEN_INCLUDE_ROOT,
    ...arch,
    "-matomics",
    "-mbulk-memory",
    "-Wl,--no-entry",
    "-Wl,--import-memory",
    "-Wl,--shared-memory",
    "-Wl,--max-memory=4294967296",
    "-Wl,--stack-first",
    `-Wl,-z,stack-size=${STACK_SIZE}`,
    "-Wl,--export=__heap_base",
  ];
}

export function defaultCacheDir(): string {
  return resolve(dirname(XF_SOURCE), "../../../node_modules/.cache/xenide");
}

/**
 * Build (or reuse) the module for `abi`. Returns its path, or `{ missing }` when the toolchain is absent.
 * Throws when the compiler runs and fails (a real error in the source or the headers).
 */
export function buildXenBlkfront(
  abi: BlkifAbi,
  cacheDir = defaultCacheDir(),
): { path: string } | { missing: string } {
  const tc = findToolchain();
  if ("missing" in tc) return tc;
  const flags = compileFlags(abi);
  const src = readFileSync(XF_SOURCE);
  const blkifH = readFileSync(join(XEN_INCLUDE_ROOT, "xen/io/blkif.h"));
  const ringH = readFileSync(join(XEN_INCLUDE_ROOT, "xen/io/ring.h"));
  const hash = createHash("sha256")
    .update(src)
    .update(blkifH)
    .update(ringH)
    .update(tc.version)
    .update(flags.join("\0"))
    .digest("hex")
    .slice(0, 16);
  const out = join(cacheDir, `xen-blkfront-${abi}-${hash}.wasm`);
  if (existsSync(out)) return { path: out };
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    execFileSync(tc.clang, [...flags, "-o", tmp, XF_SOURCE], {
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
    });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr ?? "";
    throw new Error(`building ${XF_SOURCE} for ${abi} failed:\n${stderr}`);
  }
  // Atomic publish: concurrent test files may build the same module.
  renameSync(tmp, out);
  // Builds from older sources or headers are never used again.
  for (const f of readdirSync(cacheDir)) {
    if (f.startsWith(`xen-blkfront-${abi}-`) && f.endsWith(".wasm") && join(cacheDir, f) !== out) {
      rmSync(join(cacheDir, f), { force: true });
    }
  }
  return { path: out };
}

/** Build and read the module bytes. */
export function loadXenBlkfrontWasm(
  abi: BlkifAbi,
  cacheDir?: string,
): Uint8Array<ArrayBuffer> | { missing: string } {
  const r = buildXenBlkfront(abi, cacheDir);
  if ("missing" in r) return r;
  return new Uint8Array(readFileSync(r.path));
}
