/**
 * A qtest protocol server in front of the emulated machine, so that a client written for QEMU's qtest (libqtest,
 * a script, the differential tests) drives xenide unchanged. Port accesses go through the vCPU's exit path
 * (every `inb` is a counted ioreq), memory accesses go straight to guest RAM, and interrupt lines are reported
 * as QEMU's `irq_intercept_in ioapic` reports them.
 *
 * Scheduling follows QEMU's: the lines of one input chunk (at most 1024 bytes, QEMU's qtest_can_read) run back to
 * back; asynchronous device work (storage completions) runs only between chunks, in `settle()`. When no such
 * work is pending, settling is a no-op and the transport goes straight on to the next chunk.
 *
 * The common requests (`inb/inw/inl/outb/outw/outl` with plain numbers) are decoded without splitting the line
 * or going through 64-bit arithmetic; anything unusual takes the general path, which defines the behaviour.
 */

import type { Hypervisor, Vcpu } from "../hypervisor/hypervisor.ts";
import { isFault } from "../hypervisor/memory.ts";
import { NUM_IRQ_LINES } from "../hypervisor/irq.ts";
import { machineClock, type VirtualClock } from "../machine/clock.ts";
import {
  QtestArgError,
  fmtBase64,
  fmtHexBytes,
  fmtMemValue,
  fmtPortValue,
  parseBase64,
  parseHexData,
  parsePort,
  parseU64,
  splitWords,
} from "./protocol.ts";

/** What the server drives. */
export interface QtestTarget {
  hv: Hypervisor;
  vcpu: Vcpu;
  /** Let pending asynchronous device work complete (called between input chunks). */
  settle?: () => Promise<void>;
  /**
   * Whether asynchronous device work is pending (submitted storage requests not yet completed and reaped).
   * Without it, a target that has `settle` is taken to be always busy.
   */
  busy?: () => boolean;
  /**
   * Whether the request just served asked to be answered only after device work has settled (and forget
   * the request): `Machine.takeDrainRequest`, QEMU 7.2 draining a stopped Bus Master's transfer inside the
   * stop write (docs/conformance.md D1). The vCPU then waits for its reply, as for an ioreq a Xen ioreq server
   * answers later.
   */
  takeDrainRequest?: () => boolean;
}

/** QEMU's qtest_can_read: the chardev hands the protocol at most this many bytes per main-loop dispatch. */
export const QTEST_CHUNK = 1024;

/** Largest `read`/`b64read`/`write`/`memset` length served (QEMU would g_malloc it; we refuse absurd sizes). */
export const QTEST_MAX_LEN = 256 * 1024 * 1024;

/** Largest hex `read`: its reply ("OK 0x" + 2 characters per byte) must fit in one JavaScript string. */
export const QTEST_MAX_HEX_READ = 128 * 1024 * 1024;

/** QOM paths that name the PC's IOAPIC, whose input pins are the GSIs our interrupt lines model. */
const IOAPIC_PATHS = new Set(["ioapic", "/machine/ioapic"]);

export class QtestServer {
  private out: (s: string) => void = () => {};
  private pending = "";
  /** Replies (and IRQ lines) of the chunk being fed, handed to `out` in one piece when the chunk is done. */
  private acc = "";
  private feeding = false;
  private interceptDev: string | null = null;
  private interceptIn = false;
  /** Last level reported per line (QEMU's irq_levels[]): a line is reported only when it changes. */
  private readonly levels = new Uint8Array(NUM_IRQ_LINES);
  /** The machine's virtual clock (the qtest accelerator's: moves only when the client steps it). */
  private readonly clock: VirtualClock;
  /** Requests served, for diagnostics. */
  commands = 0;
  /**
   * Sees every request line ("R", before it runs) and every reply and IRQ line ("S"), in the order they happen:
   * what QEMU's `-qtest-log` records. Null (the default) costs one comparison per line.
   */
  traffic: ((dir: "R" | "S", text: string) => void) | null = null;
  /** The reply of a request that waits for a drain (`QtestTarget.takeDrainRequest`); sent by `settle()`. */
  private heldReply: string | null = null;
  /** Lines of a chunk after a held request, still to run (`feed("")` runs them once settled). */
  private linesWaiting = false;
  private readonly takeDrainRequest: (() => boolean) | null;

  constructor(readonly target: QtestTarget) {
    this.takeDrainRequest = target.takeDrainRequest ?? null;
    this.clock = machineClock(target.hv);
    target.hv.irq.onChange((line, level) => {
      if (!this.interceptIn || line >= NUM_IRQ_LINES) return;
      if (this.levels[line] === level) return;
      this.levels[line] = level;
      const msg = `IRQ ${level ? "raise" : "lower"} ${line}\n`;
      if (this.traffic !== null) this.traffic("S", msg);
      // Inside a chunk, the message goes between the replies of the requests before and after the change.
      if (this.feeding) this.acc += msg;
      else this.out(msg);
    });
  }

  /** Begin a client connection: replies and IRQ lines go to `write`. QEMU clears irq_levels on open. */
  open(write: (s: string) => void): void {
    this.out = write;
    this.pending = "";
    this.levels.fill(0);
  }

  /** The connection went away: drop output until the next `open`. */
  close(): void {
    this.out = () => {};
    this.pending = "";
  }

  /**
   * Feed raw input. Complete lines are executed at once, in order, with no asynchronous work in between (like
   * one QEMU main-loop dispatch); the caller then awaits `settle()` before feeding the next chunk.
   */
  feed(chunk: string): void {
    if (this.heldReply !== null) {
      // A reply is still held (`settle` sends it): later requests wait behind it, in order.
      this.pending += chunk;
      this.linesWaiting = this.pending.includes("\n");
      return;
    }
    const buf = this.pending.length > 0 ? this.pending + chunk : chunk;
    let pos = 0;
    this.feeding = true;
    this.linesWaiting = false;
    const drain = this.takeDrainRequest;
    try {
      for (;;) {
        const nl = buf.indexOf("\n", pos);
        if (nl < 0) break;
        // Run first, then append (not `acc += run(...)`, which would read `acc` before the call): an IRQ line
        // the request caused is already in `acc` and goes before its reply.
        const reply = this.run(buf, pos, nl);
        pos = nl + 1;
        if (drain !== null && drain()) {
          // The vCPU waits for this reply until device work has settled; later lines wait behind it.
          this.heldReply = reply;
          this.linesWaiting = buf.indexOf("\n", pos) >= 0;
          break;
        }
        this.acc += reply;
      }
    } finally {
      this.feeding = false;
      this.pending = pos === 0 ? buf : buf.slice(pos);
      const out = this.acc;
      this.acc = "";
      if (out.length > 0) this.out(out);
    }
  }

  /** Whether `settle()` has work to wait for before the next chunk (a held reply included). */
  busy(): boolean {
    if (this.heldReply !== null) return true;
    const t = this.target;
    return t.busy ? t.busy() : t.settle !== undefined;
  }

  /** Lines of an earlier chunk wait behind a reply that was held; `feed("")` runs them. */
  get waiting(): boolean {
    return this.linesWaiting;
  }

  /**
   * Run device work that became due (storage completions) before the next chunk. A held reply goes out once
   * that work is done (interrupts it raised first, as QEMU reports them inside the request).
   */
  async settle(): Promise<void> {
    await new Promise<void>((r) => setImmediate(r));
    const t = this.target;
    if (t.settle) await t.settle();
    const held = this.heldReply;
    if (held === null) return;
    // `settle` is bounded; a request that cannot finish (one held at a breakpoint, say) is not waited for.
    for (let i = 0; i < 100 && t.settle && t.busy?.(); i++) await t.settle();
    this.heldReply = null;
    this.out(held);
  }

  /** Execute one request line; returns its reply line (with the newline). */
  execute(rawLine: string): string {
    return this.run(rawLine, 0, rawLine.length);
  }

  /**
   * The request in `s[start, end)`. The common ones are decoded in place (no string is cut out of a chunk for
   * them); whatever goes wrong serving a line becomes its FAIL reply.
   */
  private run(s: string, start: number, end: number): string {
    this.commands++;
    if (this.traffic !== null) return this.runLogged(s, start, end);
    try {
      return this.fastPio(s, start, end) ?? this.general(s.slice(start, end));
    } catch (e) {
      return failReply(e);
    }
  }

  private runLogged(s: string, start: number, end: number): string {
    const log = this.traffic!;
    log("R", s.slice(start, end));
    let reply: string;
    try {
      reply = this.fastPio(s, start, end) ?? this.general(s.slice(start, end));
    } catch (e) {
      reply = failReply(e);
    }
    log("S", reply);
    return reply;
  }

  private general(rawLine: string): string {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    const words = splitWords(line);
    const cmd = words[0] ?? "";
    return this.dispatch(cmd, words) + "\n";
  }

  /**
   * `in{b,w,l} PORT` and `out{b,w,l} PORT VALUE` in `s[start, end)`, with nothing else on the line and every
   * number a plain literal (see `fastNumber`); null for any other line, which `general` then serves.
   */
  private fastPio(s: string, start: number, end: number): string | null {
    const c0 = s.charCodeAt(start);
    let at: number;
    if (c0 === 0x69 /* i */) {
      if (s.charCodeAt(start + 1) !== 0x6e /* n */) return null;
      at = start + 2;
    } else if (c0 === 0x6f /* o */) {
      if (s.charCodeAt(start + 1) !== 0x75 /* u */ || s.charCodeAt(start + 2) !== 0x74 /* t */) return null;
      at = start + 3;
    } else return null;
    const sz = s.charCodeAt(at);
    const size = sz === 0x62 /* b */ ? 1 : sz === 0x77 /* w */ ? 2 : sz === 0x6c /* l */ ? 4 : 0;
    if (size === 0 || at + 1 >= end || s.charCodeAt(at + 1) !== 0x20) return null;
    const v = this.target.vcpu;
    if (at === start + 2) {
      const port = fastNumber(s, at + 2, end);
      if (port < 0 || port > 0xffff) return null;
      return portReply(size === 1 ? v.inb(port) : size === 2 ? v.inw(port) : v.inl(port));
    }
    const sp = s.indexOf(" ", at + 2);
    if (sp < 0 || sp >= end) return null;
    const port = fastNumber(s, at + 2, sp);
    const value = fastNumber(s, sp + 1, end);
    if (port < 0 || port > 0xffff || value < 0) return null;
    if (size === 1) v.outb(port, value);
    else if (size === 2) v.outw(port, value);
    else v.outl(port, value);
    return "OK\n";
  }

  private dispatch(cmd: string, w: string[]): string {
    const v = this.target.vcpu;
    switch (cmd) {
      case "outb":
      case "outw":
      case "outl": {
        const port = parsePort(w[1]);
        const value = Number(parseU64(w[2], "value") & 0xffffffffn);
        if (cmd === "outb") v.outb(port, value);
        else if (cmd === "outw") v.outw(port, value);
        else v.outl(port, value);
        return "OK";
      }
      case "inb":
      case "inw":
      case "inl": {
        const port = parsePort(w[1]);
        const value = cmd === "inb" ? v.inb(port) : cmd === "inw" ? v.inw(port) : v.inl(port);
        return fmtPortValue(value);
      }
      case "writeb":
      case "writew":
      case "writel":
      case "writeq": {
        const addr = parseU64(w[1], "address");
        const value = parseU64(w[2], "value");
        const size = { writeb: 1, writew: 2, writel: 4, writeq: 8 }[cmd];
        const bytes = new Uint8Array(8);
        new DataView(bytes.buffer).setBigUint64(0, value, true);
        this.memWrite(addr, bytes.subarray(0, size));
        return "OK";
      }
      case "readb":
      case "readw":
      case "readl":
      case "readq": {
        const addr = parseU64(w[1], "address");
        const size = { readb: 1, readw: 2, readl: 4, readq: 8 }[cmd];
        const bytes = new Uint8Array(8);
        this.memRead(addr, bytes.subarray(0, size));
        return fmtMemValue(new DataView(bytes.buffer).getBigUint64(0, true));
      }
      case "read":
      case "b64read": {
        const addr = parseU64(w[1], "address");
        const len = this.length(w[2]);
        // QEMU asserts on a zero-length `read` (it would send an empty hex string); b64read of 0 is "OK ".
        if (len === 0 && cmd === "read") throw new QtestArgError("zero length");
        // Two hex digits per byte: a reply longer than V8's longest string cannot be built.
        if (cmd === "read" && len > QTEST_MAX_HEX_READ)
          throw new QtestArgError(
            `size ${w[2]} too large for a hex read (max ${QTEST_MAX_HEX_READ}; use b64read)`,
          );
        const data = new Uint8Array(len);
        this.memRead(addr, data);
        return cmd === "read" ? fmtHexBytes(data) : fmtBase64(data);
      }
      case "write":
      case "b64write": {
        const addr = parseU64(w[1], "address");
        const len = this.length(w[2]);
        const word = w[3];
        if (word === undefined) throw new QtestArgError("missing data");
        // Same reply and same (missing) prefix as QEMU for data shorter than three characters.
        if (word.length < 3) return "ERR invalid argument size";
        let data: Uint8Array;
        if (cmd === "write") data = parseHexData(word, len);
        else {
          // g_base64_decode result, truncated to SIZE when longer; a shorter result is written as far as it goes.
          const dec = parseBase64(word);
          data = dec.length > len ? dec.subarray(0, len) : dec;
        }
        this.memWrite(addr, data);
        return "OK";
      }
      case "memset": {
        const addr = parseU64(w[1], "address");
        const len = this.length(w[2]);
        const pattern = Number(parseU64(w[3], "pattern") & 0xffn);
        if (len > 0) this.memWrite(addr, new Uint8Array(len).fill(pattern));
        return "OK";
      }
      case "endianness":
        return "OK little";
      case "irq_intercept_in":
      case "irq_intercept_out": {
        const dev = w[1];
        if (dev === undefined || dev === "") throw new QtestArgError("missing device path");
        if (!IOAPIC_PATHS.has(dev)) return "FAIL Unknown device";
        if (this.interceptDev !== null) {
          return this.interceptDev === "ioapic" ? "OK" : "FAIL IRQ intercept already enabled";
        }
        this.interceptDev = "ioapic";
        // The IOAPIC has input pins only: intercepting its outputs succeeds but reports nothing (as in QEMU).
        this.interceptIn = cmd === "irq_intercept_in";
        return "OK";
      }
      case "set_irq_in": {
        const dev = w[1];
        if (dev === undefined || w[2] === undefined)
          throw new QtestArgError("usage: set_irq_in PATH NAME NUM LEVEL");
        if (!IOAPIC_PATHS.has(dev)) return "FAIL Unknown device";
        if (w[2] !== "unnamed-gpio-in") throw new QtestArgError(`no GPIO list '${w[2]}' on ${dev}`);
        const num = Number(parseU64(w[3], "irq number"));
        const level = parseU64(w[4], "level") & 0xffffffffn;
        if (!(num < NUM_IRQ_LINES)) throw new QtestArgError(`no IRQ line ${w[3]}`);
        this.target.hv.irq.set(num, level !== 0n);
        return "OK";
      }
      case "clock_step": {
        // By NS, or to the next timer deadline; with no timer armed that is "never", and QEMU leaves the clock
        // where it is. Timers the step passes run at their deadlines (qtest_clock_warp).
        const c = this.clock;
        if (w[1] !== undefined) c.advanceTo(c.ns + this.signed(w[1]));
        else {
          const d = c.nextDeadline();
          if (d !== null) c.advanceTo(d);
        }
        return `OK ${c.ns}`;
      }
      case "clock_set": {
        if (w[1] === undefined) throw new QtestArgError("missing time");
        this.clock.advanceTo(this.signed(w[1]));
        return `OK ${this.clock.ns}`;
      }
      default:
        return `FAIL Unknown command '${cmd}'`;
    }
  }

  private signed(word: string): bigint {
    const v = parseU64(word, "time");
    return BigInt.asIntN(64, v);
  }

  private length(word: string | undefined): number {
    const len = parseU64(word, "size");
    if (len > BigInt(QTEST_MAX_LEN)) throw new QtestArgError(`size ${word} too large (max ${QTEST_MAX_LEN})`);
    return Number(len);
  }

  /** Guest-physical read; bytes outside RAM read as 0 (unassigned memory, as QEMU answers above `-m`). */
  private memRead(addr: bigint, dst: Uint8Array): void {
    const mem = this.target.hv.mem;
    const end = addr + BigInt(dst.length);
    if (end <= BigInt(mem.size)) {
      const f = mem.read(Number(addr), dst);
      if (!f) return;
    }
    dst.fill(0);
    for (let i = 0; i < dst.length; i++) {
      const a = addr + BigInt(i);
      if (a >= BigInt(mem.size)) break;
      const b = mem.readU8(Number(a));
      if (!isFault(b)) dst[i] = b;
    }
  }

  /** Guest-physical write; bytes outside RAM are dropped. */
  private memWrite(addr: bigint, src: Uint8Array): void {
    const mem = this.target.hv.mem;
    if (addr + BigInt(src.length) <= BigInt(mem.size)) {
      if (!mem.write(Number(addr), src)) return;
    }
    for (let i = 0; i < src.length; i++) {
      const a = addr + BigInt(i);
      if (a >= BigInt(mem.size)) break;
      mem.writeU8(Number(a), src[i]!);
    }
  }
}

/**
 * The value of `s[start, end)` when it is a plain C literal of at most 32 bits: `0x`/`0X` and 1-8 hex digits,
 * `0` and up to 10 octal digits, or 1-9 decimal digits not starting with 0. -1 for anything else (a sign,
 * whitespace, a longer or malformed number): those go to `parseU64`, which knows every strtoul rule.
 */
export function fastNumber(s: string, start: number, end: number): number {
  const n = end - start;
  if (n <= 0) return -1;
  let c = s.charCodeAt(start);
  if (c === 0x30 /* 0 */) {
    if (n === 1) return 0;
    const x = s.charCodeAt(start + 1) | 0x20;
    if (x === 0x78 /* x */) {
      if (n < 3 || n > 10) return -1;
      let v = 0;
      for (let i = start + 2; i < end; i++) {
        c = s.charCodeAt(i);
        let d: number;
        if (c >= 0x30 && c <= 0x39) d = c - 0x30;
        else {
          c |= 0x20;
          if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
          else return -1;
        }
        v = v * 16 + d;
      }
      return v;
    }
    if (n > 11) return -1;
    let v = 0;
    for (let i = start + 1; i < end; i++) {
      c = s.charCodeAt(i);
      if (c < 0x30 || c > 0x37) return -1;
      v = v * 8 + (c - 0x30);
    }
    return v;
  }
  if (n > 9) return -1;
  let v = 0;
  for (let i = start; i < end; i++) {
    c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    v = v * 10 + (c - 0x30);
  }
  return v;
}

/** "OK 0x%04x\n" for every 16-bit value, built on first use: the replies of a PIO data loop repeat. */
const PORT_REPLIES = new Array<string | undefined>(0x10000).fill(undefined);

/** The reply to inb/inw/inl: the same text as `fmtPortValue`, with its newline. */
export function portReply(value: number): string {
  if (value >= 0 && value <= 0xffff) {
    return (PORT_REPLIES[value] ??= fmtPortValue(value) + "\n");
  }
  return fmtPortValue(value) + "\n";
}

/** The reply to a request that threw: its argument error, or whatever else went wrong in the device model. */
function failReply(e: unknown): string {
  if (e instanceof QtestArgError) return `FAIL ${e.message}\n`;
  // Whatever went wrong serving this line, the connection survives it (QEMU would abort).
  const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return `FAIL ${msg.replace(/\n/g, " ")}\n`;
}
