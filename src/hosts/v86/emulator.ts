/**
 * Starting a v86 PC in Node and watching its consoles. v86 is loaded lazily, so only code that boots a guest
 * pays for it (and only this folder depends on it).
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { V86, V86Options } from "v86";
import type { V86Machine } from "./internals.ts";

export interface BootFiles {
  /** SeaBIOS image (bios.bin) and its VGA BIOS (vgabios-stdvga.bin). */
  bios: Uint8Array;
  vgaBios: Uint8Array;
  /** Boot a Linux bzImage directly (v86 loads it through its option ROM) instead of from a disk. */
  bzimage?: Uint8Array;
  initrd?: Uint8Array;
  cmdline?: string;
  /** A disk for v86's OWN IDE controller (for comparisons); leave unset when xenide's controller is used. */
  v86Hda?: Uint8Array;
}

export interface V86Host {
  emulator: V86;
  machine: V86Machine;
  serial: SerialConsole;
  screen: TextScreen;
  /** v86's own disk as it writes it (only with `v86Hda`). */
  v86Disk: Uint8Array | undefined;
  /** Start the CPU (devices are attached between load and run). */
  run(): Promise<void>;
  destroy(): Promise<void>;
}

function arrayBufferOf(u8: Uint8Array): ArrayBuffer {
  // v86 takes an ArrayBuffer and may keep it (a disk image is written in place): hand it a private copy.
  const ab = new ArrayBuffer(u8.byteLength);
  new Uint8Array(ab).set(u8);
  return ab;
}

export function v86WasmPath(): string {
  return createRequire(import.meta.url).resolve("v86/build/v86.wasm");
}

export function readBinary(path: string): Uint8Array {
  return new Uint8Array(readFileSync(path));
}

/**
 * Create the emulator and resolve once it is loaded and stopped before the first instruction, so that the
 * caller can change its devices before the firmware runs.
 */
export async function loadV86(files: BootFiles, memoryMiB = 128): Promise<V86Host> {
  const { V86: V86Ctor } = await import("v86");
  const opts: V86Options = {
    wasm_path: v86WasmPath(),
    bios: { buffer: arrayBufferOf(files.bios) },
    vga_bios: { buffer: arrayBufferOf(files.vgaBios) },
    memory_size: memoryMiB * 1024 * 1024,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    // Hard disk first (0x312 in v86's CMOS boot-order encoding: hdd, floppy, cdrom).
    boot_order: 0x312 as V86Options["boot_order"],
  };
  if (files.bzimage) opts.bzimage = { buffer: arrayBufferOf(files.bzimage) };
  if (files.initrd) opts.initrd = { buffer: arrayBufferOf(files.initrd) };
  if (files.cmdline !== undefined) opts.cmdline = files.cmdline;
  let v86Disk: Uint8Array | undefined;
  if (files.v86Hda) {
    const ab = arrayBufferOf(files.v86Hda);
    v86Disk = new Uint8Array(ab);
    opts.hda = { buffer: ab };
  }
  const emulator = new V86Ctor(opts);
  const serial = new SerialConsole();
  const screen = new TextScreen();
  emulator.add_listener("serial0-output-byte", (b: number) => serial.push(b));
  emulator.add_listener("screen-put-char", (a: [number, number, number]) => screen.put(a[0], a[1], a[2]));
  await new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
  const machine = (emulator as unknown as { v86: V86Machine }).v86;
  return {
    emulator,
    machine,
    serial,
    screen,
    v86Disk,
    run: () => emulator.run(),
    destroy: async () => {
      serial.close();
      await emulator.destroy();
    },
  };
}

type LineWaiter = {
  re: RegExp;
  resolve: (m: RegExpMatchArray) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
};

/** The guest's first serial port (COM1) as lines of text. */
export class SerialConsole {
  readonly lines: string[] = [];
  private partial = "";
  private waiters: LineWaiter[] = [];
  private listeners: ((line: string) => void)[] = [];
  private closed = false;

  push(byte: number): void {
    if (byte === 0x0a) {
      const line = this.partial.replace(/\r$/, "");
      this.partial = "";
      this.lines.push(line);
      for (const l of this.listeners) l(line);
      this.match(line);
    } else if (byte !== 0x0d || this.partial.length) {
      this.partial += String.fromCharCode(byte);
    }
  }

  onLine(fn: (line: string) => void): void {
    this.listeners.push(fn);
  }

  get text(): string {
    return this.lines.join("\n") + (this.partial ? "\n" + this.partial : "");
  }

  /** The text after the last newline (a prompt that has no newline yet). */
  get pending(): string {
    return this.partial;
  }

  private match(line: string): void {
    const keep: LineWaiter[] = [];
    for (const w of this.waiters) {
      const m = w.re.exec(line);
      if (m) {
        clearTimeout(w.timer);
        w.resolve(m);
      } else keep.push(w);
    }
    this.waiters = keep;
  }

  /** Resolve with the first line (already seen or still to come) matching `re`. */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    for (const l of this.lines) {
      const m = re.exec(l);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error("serial console closed"));
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        const tail = this.lines.slice(-15).join("\n");
        reject(new Error(`no serial line matching ${re} within ${timeoutMs} ms; last lines:\n${tail}`));
      }, timeoutMs);
      this.waiters.push({ re, resolve, reject, timer });
    });
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new Error("serial console closed"));
    }
    this.waiters = [];
  }
}

/** The VGA text screen (80x25) as v86 draws it. */
export class TextScreen {
  private readonly rows: string[][] = Array.from({ length: 25 }, () => Array<string>(80).fill(" "));

  put(row: number, col: number, chr: number): void {
    const r = this.rows[row];
    if (r && col >= 0 && col < r.length) r[col] = String.fromCharCode(chr);
  }

  get text(): string {
    return this.rows
      .map((r) => r.join("").trimEnd())
      .join("\n")
      .trimEnd();
  }

  /** Poll the screen until `re` matches its text. */
  async waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.text);
      if (m) return m;
      if (Date.now() > end)
        throw new Error(`screen did not show ${re} within ${timeoutMs} ms; screen:\n${this.text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
