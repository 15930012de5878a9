/**
 * Two qtest peers driven in lock step: every line goes to both, replies must agree, and after each step the
 * settled state of the channel (task file in both HOB views, alternate status, IRQ level, Bus Master status)
 * must agree too. QEMU is the oracle: where control flow depends on the device (is DRQ up?), QEMU's answer
 * decides, and any difference shows up as a mismatch.
 */

import type { QtestClient } from "../../src/qtest/client.ts";

export interface ChannelPorts {
  cmd: number;
  ctl: number;
  irq: number;
  /** Bus Master registers of this channel (BAR4 base + 0 or + 8). */
  bm: number;
}

export const PRIMARY: ChannelPorts = { cmd: 0x1f0, ctl: 0x3f6, irq: 14, bm: 0xc000 };
export const SECONDARY: ChannelPorts = { cmd: 0x170, ctl: 0x376, irq: 15, bm: 0xc008 };

export interface Snapshot {
  alt: number;
  /** 0x1F1-0x1F6 with HOB clear: error, nsect, lbal, lbam, lbah, device. */
  regs: number[];
  /** 0x1F1-0x1F5 with HOB set: hob feature, nsect, lbal, lbam, lbah. */
  hob: number[];
  bmStatus: number;
  irq: 0 | 1;
}

export const SNAPSHOT_FIELDS = ["alt", "err", "nsect", "lbal", "lbam", "lbah", "dev"] as const;

/** A known, documented difference that the comparison forgives. */
export interface Excuse {
  id: string;
  /** True when this difference (at `what`, QEMU value `q`, xenide value `x`) is the documented one. */
  covers(what: string, q: string, x: string, ctx: PairContext): boolean;
}

export interface PairContext {
  /** The last command byte written to the channel's command register. */
  lastCommand: number;
  /** Lines sent so far (the reproduction script). */
  transcript: readonly string[];
}

export class Mismatch extends Error {
  constructor(
    readonly what: string,
    readonly qemu: string,
    readonly xen: string,
    readonly transcript: readonly string[],
  ) {
    super(`${what}: QEMU ${qemu}, xenide ${xen}`);
    this.name = "Mismatch";
  }
}

const hex = (n: number): string => `0x${n.toString(16).padStart(2, "0")}`;

function parseOk(reply: string): number {
  const m = /^OK (0x[0-9a-f]+)$/.exec(reply);
  if (!m) throw new Error(`unexpected reply '${reply}'`);
  return Number(m[1]);
}

export class Pair {
  readonly transcript: string[] = [];
  /** Device control value the script keeps (nIEN); snapshots restore it after looking at the HOB view. */
  ctl = 0;
  /** Set while a DMA command may still be moving data: the settle waits for the Bus Master too. */
  dmaPending = false;
  lastCommand = -1;
  /** Replies compared, for the summary. */
  compared = 0;

  constructor(
    readonly qemu: QtestClient,
    readonly xen: QtestClient,
    readonly ch: ChannelPorts = PRIMARY,
    readonly excuses: readonly Excuse[] = [],
  ) {}

  private ctx(): PairContext {
    return { lastCommand: this.lastCommand, transcript: this.transcript };
  }

  private check(what: string, q: string, x: string): void {
    this.compared++;
    if (q === x) return;
    for (const e of this.excuses) if (e.covers(what, q, x, this.ctx())) return;
    throw new Mismatch(what, q, x, this.transcript);
  }

  /** Send lines to both in one write each; compare every reply; return QEMU's. */
  async send(lines: readonly string[], label = "reply"): Promise<string[]> {
    for (const l of lines) {
      this.transcript.push(l);
      const m = /^outb (0x[0-9a-f]+) (0x[0-9a-f]+)$/.exec(l);
      if (m && Number(m[1]) === this.ch.cmd + 7) this.lastCommand = Number(m[2]);
    }
    const [q, x] = await Promise.all([this.qemu.batch(lines), this.xen.batch(lines)]);
    for (let i = 0; i < lines.length; i++) this.check(`${label} line ${i} to '${lines[i]}'`, q[i]!, x[i]!);
    return q;
  }

  private busy(alt: number, bms: number): boolean {
    // BSY, or (after a DMA start) the Bus Master still active without having interrupted.
    return (alt & 0x80) !== 0 || (this.dmaPending && (bms & 0x05) === 0x01);
  }

  /**
   * One side's settled state: a snapshot, and while it shows the device busy, cheap polls of the alternate
   * (and Bus Master) status followed by a new snapshot. `stuck` describes the state if it never settled.
   */
  private async settleOne(
    c: QtestClient,
    maxPolls: number,
  ): Promise<{ snap: Snapshot; stuck: string | null }> {
    const ch = this.ch;
    let snap = await this.snapshotOne(c);
    if (!this.busy(snap.alt, snap.bmStatus)) return { snap, stuck: null };
    for (let i = 0; i < maxPolls; i++) {
      const alt = parseOk(await c.cmd(`inb 0x${ch.ctl.toString(16)}`));
      const bms = this.dmaPending ? parseOk(await c.cmd(`inb 0x${(ch.bm + 2).toString(16)}`)) : 0;
      if (!this.busy(alt, bms)) {
        snap = await this.snapshotOne(c);
        if (!this.busy(snap.alt, snap.bmStatus)) return { snap, stuck: null };
      }
      if (i > 20) await new Promise((r) => setTimeout(r, 1));
    }
    snap = await this.snapshotOne(c);
    const busy = this.busy(snap.alt, snap.bmStatus);
    return {
      snap,
      stuck: busy ? `still busy (alt ${hex(snap.alt)}, BM status ${hex(snap.bmStatus)})` : null,
    };
  }

  async snapshotOne(c: QtestClient): Promise<Snapshot> {
    const ch = this.ch;
    const p = (n: number): string => `0x${n.toString(16)}`;
    const lines = [`inb ${p(ch.ctl)}`];
    for (let r = 1; r <= 6; r++) lines.push(`inb ${p(ch.cmd + r)}`);
    lines.push(`outb ${p(ch.ctl)} ${p(this.ctl | 0x80)}`);
    for (let r = 1; r <= 5; r++) lines.push(`inb ${p(ch.cmd + r)}`);
    lines.push(`outb ${p(ch.ctl)} ${p(this.ctl)}`);
    lines.push(`inb ${p(ch.bm + 2)}`);
    const r = await c.batch(lines);
    const v = (i: number): number => parseOk(r[i]!);
    return {
      alt: v(0),
      regs: [1, 2, 3, 4, 5, 6].map(v),
      hob: [8, 9, 10, 11, 12].map(v),
      bmStatus: v(14),
      irq: c.irqLevel(ch.irq),
    };
  }

  /**
   * Wait until both are settled, then compare their states. Returns QEMU's. `maxPolls` bounds the wait where
   * one side may legitimately stay busy (a held software reset).
   */
  async settle(label: string, maxPolls = 3000): Promise<Snapshot> {
    const [qr, xr] = await Promise.all([
      this.settleOne(this.qemu, maxPolls),
      this.settleOne(this.xen, maxPolls),
    ]);
    if (qr.stuck || xr.stuck) this.check(`${label}: settles`, qr.stuck ?? "settled", xr.stuck ?? "settled");
    const q = qr.snap;
    const x = xr.snap;
    this.check(`${label}: alt status`, hex(q.alt), hex(x.alt));
    SNAPSHOT_FIELDS.slice(1).forEach((f, i) =>
      this.check(`${label}: ${f}`, hex(q.regs[i]!), hex(x.regs[i]!)),
    );
    ["hob feature", "hob nsect", "hob lbal", "hob lbam", "hob lbah"].forEach((f, i) =>
      this.check(`${label}: ${f}`, hex(q.hob[i]!), hex(x.hob[i]!)),
    );
    this.check(`${label}: BM status`, hex(q.bmStatus), hex(x.bmStatus));
    this.check(`${label}: IRQ ${this.ch.irq}`, String(q.irq), String(x.irq));
    return q;
  }

  /** Compare guest memory on both sides (DMA buffers). */
  async compareMemory(addr: number, len: number, label: string): Promise<string> {
    const line = `b64read 0x${addr.toString(16)} ${len}`;
    const [q, x] = await Promise.all([this.qemu.cmd(line), this.xen.cmd(line)]);
    this.transcript.push(line);
    this.check(`${label}: guest memory ${line}`, q, x);
    return q;
  }

  /** Compare byte arrays (image files), naming the first differing sector. */
  compareBytes(label: string, q: Uint8Array, x: Uint8Array): void {
    if (q.length !== x.length) this.check(`${label}: length`, String(q.length), String(x.length));
    for (let i = 0; i < q.length; i++) {
      if (q[i] !== x[i]) {
        const s = Math.floor(i / 512);
        const seg = (b: Uint8Array): string => Buffer.from(b.subarray(s * 512, s * 512 + 16)).toString("hex");
        this.check(`${label}: sector ${s} (first differing byte ${i % 512})`, seg(q), seg(x));
        return;
      }
    }
  }
}
