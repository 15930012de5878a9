/**
 * Boot Debian's kernel with the test initramfs in v86 and collect what the guest prints. The disk sits
 * either on xenide's IDE (a raw image file behind the storage engine) or on v86's own controller (for
 * comparisons).
 */

import { type BootFiles, loadV86, readBinary, type V86Host } from "../../../src/hosts/v86/emulator.ts";
import type { AttachOptions } from "../../../src/hosts/v86/host.ts";
import { createXenidePc, type XenidePc } from "../../../src/hosts/v86/xenide-pc.ts";
import { MemoryBackend, RawImageBackend } from "../../../src/storage/index.ts";
import type { BlockBackend } from "../../../src/storage/types.ts";
import type { GuestPieces } from "./pieces.ts";

export const DRIVE_MODEL = "XENIDE GUEST TEST DISK";

export type GuestDisk =
  | { kind: "xenide"; path: string }
  /** xenide's controller over a disk in memory (like v86's own, for comparisons). */
  | { kind: "xenide-memory"; bytes: Uint8Array }
  | { kind: "v86"; bytes: Uint8Array };

export interface LinuxRunOptions {
  pieces: GuestPieces;
  initrd: Uint8Array;
  disk: GuestDisk;
  /** Extra kernel command-line words (for example "libata.dma=0"). */
  cmdline?: string;
  attach?: AttachOptions;
  /** Called once the PC exists, before its first instruction. */
  onCreate?: (pc: XenidePc) => void;
  /** Called on every serial line (phase markers). */
  onLine?: (line: string, host: V86Host, pc: XenidePc | undefined) => void;
  timeoutMs?: number;
}

export interface LinuxRun {
  lines: string[];
  wallMs: number;
  pc: XenidePc | undefined;
  /** v86's disk after the run (v86 controller only). */
  v86Disk: Uint8Array | undefined;
}

export function linuxBootFiles(p: GuestPieces, initrd: Uint8Array, cmdline = ""): BootFiles {
  return {
    bios: readBinary(p.bios),
    vgaBios: readBinary(p.vgaBios),
    bzimage: readBinary(p.vmlinuz),
    initrd,
    // quiet keeps the polled 8250 console short; panic=-1 reboots instead of hanging after a panic.
    cmdline: `console=ttyS0 quiet loglevel=4 panic=-1 ${cmdline}`.trim(),
  };
}

export async function runLinux(o: LinuxRunOptions): Promise<LinuxRun> {
  const files = linuxBootFiles(o.pieces, o.initrd, o.cmdline);
  let pc: XenidePc | undefined;
  let host: V86Host;
  let backend: BlockBackend | undefined;
  if (o.disk.kind !== "v86") {
    backend = o.disk.kind === "xenide" ? RawImageBackend.open(o.disk.path) : new MemoryBackend(o.disk.bytes);
    pc = await createXenidePc({
      files,
      drives: [{ position: "primary-master", medium: { backend }, model: DRIVE_MODEL }],
      ...(o.attach ? { attach: o.attach } : {}),
    });
    host = pc.host;
    o.onCreate?.(pc);
  } else {
    host = await loadV86({ ...files, v86Hda: o.disk.bytes });
  }
  const t0 = Date.now();
  try {
    if (o.onLine) host.serial.onLine((l) => o.onLine!(l, host, pc));
    await host.run();
    await host.serial.waitFor(/^@@ done|Kernel panic|reboot: /, o.timeoutMs ?? 480_000);
    return { lines: [...host.serial.lines], wallMs: Date.now() - t0, pc, v86Disk: host.v86Disk };
  } finally {
    await host.destroy();
    backend?.close();
  }
}
