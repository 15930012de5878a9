/**
 * Exit and cycle accounting. Every event that costs a real Xen guest CPU time is counted here by kind, and a
 * cost model turns the counts into modelled CPU cycles. The default cost of each kind cites where the figure
 * comes from; every cost can be overridden (CLI `--cost kind=cycles`).
 */

export const COUNTER_KINDS = [
  "pioIn", // IN from a port: exit, ioreq round trip to the device model
  "pioOut", // OUT to a port: same
  "stringIo", // INS/OUTS (REP): one exit and one ioreq for up to a page of items
  "mmio", // a load or store to an MMIO range: exit, instruction emulation, ioreq round trip (IOREQ_TYPE_COPY)
  "bufferedWrite", // write sent through the buffered ioreq page: handled in Xen, no device-model round trip
  "hypercall", // any hypercall (grant op, event-channel op, xenstore ring kick)
  "evtchnNotify", // EVTCHNOP_send: an event-channel notification (also counted as a hypercall)
  "irqInject", // an interrupt injected into the guest (line going active while unmasked)
  "grantMap", // a grant mapped by the backend (map + unmap pair in the cost model)
  "grantCopy", // a grant copy operation (per segment)
] as const;

export type CounterKind = (typeof COUNTER_KINDS)[number];

export type Counts = Record<CounterKind, number>;

export interface CostEntry {
  cycles: number;
  source: string;
}

/**
 * Default costs, in CPU cycles. Sources:
 * - 5,287 cycles: a port-I/O exit served by a userspace device model ("portio-no-eventfd" in QEMU's
 *   docs/specs/pci-testdev.txt, kvm-unit-tests measurement). The closest public figure for an ioreq round
 *   trip from a Xen HVM vCPU to QEMU.
 * - 1,762 cycles: a port-I/O exit completed inside the hypervisor ("portio-wildcard-eventfd", same source);
 *   a buffered ioreq is completed by Xen without waking the device model.
 * - 2,550 cycles: a full guest->hypervisor->guest transition (AMD SVM KVM_RUN round trip, LKML Dec 2020,
 *   2,528-2,576 cycles), used for a hypercall.
 * - An event-channel send is a hypercall; the notified side pays the upcall, modelled as one more transition.
 * - Interrupt injection: one more exit-like transition (VMRUN with event injection), same LKML figure.
 * - A grant map/unmap pair is two hypercalls plus a TLB flush in the backend; modelled as 2 x 2,550 + 1,000.
 *   This last figure is our estimate, not a published measurement.
 */
export const DEFAULT_COSTS: Record<CounterKind, CostEntry> = {
  pioIn: {
    cycles: 5287,
    source: "QEMU docs/specs/pci-testdev.txt, portio-no-eventfd (userspace device model)",
  },
  pioOut: {
    cycles: 5287,
    source: "QEMU docs/specs/pci-testdev.txt, portio-no-eventfd (userspace device model)",
  },
  stringIo: { cycles: 5287, source: "one ioreq round trip per string exit, as portio-no-eventfd" },
  mmio: {
    cycles: 5287,
    source: "estimate: one ioreq round trip, as portio-no-eventfd (Xen also emulates the instruction)",
  },
  bufferedWrite: {
    cycles: 1762,
    source: "QEMU pci-testdev portio-wildcard-eventfd (exit completed in the hypervisor)",
  },
  hypercall: { cycles: 2550, source: "AMD SVM KVM_RUN round trip, LKML Dec 2020 (2,528-2,576 cycles)" },
  evtchnNotify: { cycles: 2550, source: "upcall on the notified side: one transition, LKML Dec 2020" },
  irqInject: { cycles: 2550, source: "interrupt injection on VM entry: one transition, LKML Dec 2020" },
  grantMap: { cycles: 6100, source: "estimate: map + unmap hypercalls (2 x 2,550) + TLB flush (1,000)" },
  grantCopy: { cycles: 2550, source: "estimate: one GNTTABOP_copy hypercall per segment batch" },
};

export function zeroCounts(): Counts {
  const c = {} as Counts;
  for (const k of COUNTER_KINDS) c[k] = 0;
  return c;
}

export class CostModel {
  readonly costs: Record<CounterKind, CostEntry>;
  constructor(overrides: Partial<Record<CounterKind, number>> = {}) {
    this.costs = { ...DEFAULT_COSTS };
    for (const [k, v] of Object.entries(overrides)) {
      if (!(COUNTER_KINDS as readonly string[]).includes(k)) throw new Error(`unknown cost kind '${k}'`);
      if (typeof v !== "number" || !(v >= 0)) throw new Error(`cost of '${k}' must be a non-negative number`);
      this.costs[k as CounterKind] = { cycles: v, source: "user override" };
    }
  }

  /** Modelled CPU cycles for a set of counts. */
  cycles(counts: Counts): number {
    let total = 0;
    for (const k of COUNTER_KINDS) total += counts[k] * this.costs[k].cycles;
    return total;
  }

  /** Parse `kind=cycles` pairs as given on the command line. */
  static parseOverrides(pairs: readonly string[]): Partial<Record<CounterKind, number>> {
    const out: Partial<Record<CounterKind, number>> = {};
    for (const p of pairs) {
      const m = /^([A-Za-z]+)=(\d+(?:\.\d+)?)$/.exec(p);
      if (!m) throw new Error(`bad cost '${p}': expected kind=cycles, e.g. pioOut=5287`);
      const kind = m[1]!;
      if (!(COUNTER_KINDS as readonly string[]).includes(kind)) {
        throw new Error(`unknown cost kind '${kind}' (kinds: ${COUNTER_KINDS.join(", ")})`);
      }
      out[kind as CounterKind] = Number(m[2]);
    }
    return out;
  }
}

/** Live counters of one hypervisor. Plain fields so the hot path is one increment. */
export class Accounting {
  readonly counts: Counts = zeroCounts();
  constructor(readonly model: CostModel = new CostModel()) {}

  /** Total exits: every guest access that left the guest (port I/O, string I/O, MMIO, buffered write, hypercall). */
  get exits(): number {
    return exitsOf(this.counts);
  }

  get cycles(): number {
    return this.model.cycles(this.counts);
  }

  snapshot(): Counts {
    return { ...this.counts };
  }

  /** Counts accumulated since an earlier snapshot. */
  since(before: Counts): Counts {
    const d = zeroCounts();
    for (const k of COUNTER_KINDS) d[k] = this.counts[k] - before[k];
    return d;
  }

  reset(): void {
    for (const k of COUNTER_KINDS) this.counts[k] = 0;
  }
}

/** The kinds that are exits: the guest left to the hypervisor or the device model (not IRQs or grant work). */
export const EXIT_KINDS = [
  "pioIn",
  "pioOut",
  "stringIo",
  "mmio",
  "bufferedWrite",
  "hypercall",
] as const satisfies readonly CounterKind[];

export function exitsOf(c: Counts): number {
  let n = 0;
  for (const k of EXIT_KINDS) n += c[k];
  return n;
}
