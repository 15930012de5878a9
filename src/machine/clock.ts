/**
 * The machine's virtual clock (QEMU's QEMU_CLOCK_VIRTUAL under the qtest accelerator): nanoseconds that move
 * only when the host steps them (qtest `clock_step` and `clock_set`), and the timers devices arm on it. A step
 * runs every timer whose deadline it passes, each at its deadline and in deadline order, as QEMU's
 * qtest_clock_warp does.
 */

import type { Hypervisor } from "../hypervisor/hypervisor.ts";

export class VirtualTimer {
  /** Absolute deadline in ns, or null when the timer is not armed. */
  deadline: bigint | null = null;
  constructor(readonly fire: () => void) {}
  /** Arm (or re-arm) the timer for `ns` (QEMU's timer_mod). */
  mod(ns: bigint): void {
    this.deadline = ns;
  }
  /** Disarm it (QEMU's timer_del). */
  del(): void {
    this.deadline = null;
  }
}

export class VirtualClock {
  private now = 0n;
  private readonly timers: VirtualTimer[] = [];

  /** The time in ns. */
  get ns(): bigint {
    return this.now;
  }

  /** A timer on this clock, disarmed. */
  timer(fire: () => void): VirtualTimer {
    const t = new VirtualTimer(fire);
    this.timers.push(t);
    return t;
  }

  /** The earliest armed deadline, or null when no timer is armed. */
  nextDeadline(): bigint | null {
    let d: bigint | null = null;
    for (const t of this.timers) if (t.deadline !== null && (d === null || t.deadline < d)) d = t.deadline;
    return d;
  }

  /**
   * Move forward to `dest` (nothing when it is not later), stopping at each deadline on the way to run the
   * timers that are due there (qtest_clock_warp). Bounded, so a timer that keeps re-arming itself in the past
   * cannot hang the host.
   */
  advanceTo(dest: bigint): void {
    for (let guard = 0; guard < 1_000_000 && this.now < dest; guard++) {
      const d = this.nextDeadline();
      if (d === null || d >= dest) this.now = dest;
      else if (d > this.now) this.now = d;
      this.runDue();
    }
  }

  private runDue(): void {
    for (const t of this.timers) {
      if (t.deadline !== null && t.deadline <= this.now) {
        t.deadline = null;
        t.fire();
      }
    }
  }
}

const clocks = new WeakMap<Hypervisor, VirtualClock>();

/**
 * The virtual clock of the machine on `hv`: one per hypervisor, shared by the devices that keep time (the PIIX4
 * PM timer) and whoever steps it (the qtest server's `clock_step`).
 */
export function machineClock(hv: Hypervisor): VirtualClock {
  let c = clocks.get(hv);
  if (!c) {
    c = new VirtualClock();
    clocks.set(hv, c);
  }
  return c;
}
