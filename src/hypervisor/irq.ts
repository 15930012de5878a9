/**
 * Interrupt lines. Level-triggered, as the ISA IRQ 14/15 lines of an IDE channel are wired through the PIIX
 * to the guest's PIC/IOAPIC: a device raises and lowers its line; the guest sees the level and can poll it or
 * wait for it. An injection is counted each time a line goes active (the hypervisor injects the vector once
 * per assertion).
 */

import type { Accounting } from "./accounting.ts";
import type { Tracer } from "./trace.ts";

export const NUM_IRQ_LINES = 24; // an IOAPIC's worth of GSIs

type Waiter = { line: number; resolve: (v: boolean) => void; timer?: NodeJS.Timeout };

export class InterruptController {
  private readonly level = new Uint8Array(NUM_IRQ_LINES);
  private waiters: Waiter[] = [];
  /** Observers (hosts that forward the line to a real PIC, qtest's irq_intercept). */
  private readonly listeners: ((line: number, level: 0 | 1) => void)[] = [];
  tracer: Tracer | null = null;

  constructor(private readonly acct: Accounting) {}

  private check(line: number): void {
    if (!(Number.isInteger(line) && line >= 0 && line < NUM_IRQ_LINES))
      throw new RangeError(`no IRQ line ${line}`);
  }

  raise(line: number): void {
    this.check(line);
    if (this.level[line]) return;
    this.level[line] = 1;
    this.acct.counts.irqInject++;
    this.tracer?.emit({ ev: "irq", line, level: 1 });
    for (const l of this.listeners) l(line, 1);
    if (this.waiters.length) this.wake(line);
  }

  lower(line: number): void {
    this.check(line);
    if (!this.level[line]) return;
    this.level[line] = 0;
    this.tracer?.emit({ ev: "irq", line, level: 0 });
    for (const l of this.listeners) l(line, 0);
  }

  set(line: number, level: boolean): void {
    if (level) this.raise(line);
    else this.lower(line);
  }

  isRaised(line: number): boolean {
    this.check(line);
    return this.level[line] === 1;
  }

  onChange(fn: (line: number, level: 0 | 1) => void): void {
    this.listeners.push(fn);
  }

  /**
   * Resolve true once the line is (or becomes) active, false after `timeoutMs`. Completions of asynchronous
   * storage arrive from the event loop, so a guest driver waiting for its IRQ yields to it here.
   */
  wait(line: number, timeoutMs = 10_000): Promise<boolean> {
    this.check(line);
    if (this.level[line]) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w: Waiter = { line, resolve };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  private wake(line: number): void {
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.line === line) {
        clearTimeout(w.timer);
        w.resolve(true);
      } else keep.push(w);
    }
    this.waiters = keep;
  }
}
