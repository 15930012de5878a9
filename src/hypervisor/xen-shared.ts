/**
 * The parts of a Xen host that live in shared memory, for a backend (or frontend) on another worker thread:
 * guest RAM, each domain's grant table (entries in guest RAM, Xen's active-entry pins beside them) and each
 * domain's event-channel ports and pending/mask bits. `xenSharedState(host)` gives a structured-clonable
 * description to post to the worker; `attachXenShared` rebuilds working views there. Xenstore stays with the
 * host thread: negotiation happens there, the data path can run anywhere.
 */

import { Accounting } from "./accounting.ts";
import { EventChannels } from "./event-channel.ts";
import { GrantMapper, GrantTable, type HypercallSink } from "./grant-table.ts";
import { GuestRam } from "./memory.ts";
import type { XenHost } from "./xen-host.ts";

export interface XenSharedState {
  ram: SharedArrayBuffer;
  ramSize: number;
  /** Domains whose memory is `ram`, with their grant-table state. */
  grantTables: [number, SharedArrayBuffer][];
  evtchn: [number, SharedArrayBuffer][];
}

export function xenSharedState(host: XenHost): XenSharedState {
  const mem = host.hv.mem;
  if (!(mem instanceof GuestRam) || !(mem.buffer instanceof SharedArrayBuffer)) {
    throw new TypeError("guest RAM is not a SharedArrayBuffer: it cannot be shared with another thread");
  }
  const grantTables: [number, SharedArrayBuffer][] = [];
  for (const id of host.domains.keys()) {
    const t = host.grantTable(id);
    if (t && t.mem === mem) grantTables.push([id, t.shared]);
  }
  return { ram: mem.buffer, ramSize: mem.size, grantTables, evtchn: [...host.evtchn.sharedBuffers()] };
}

/** A thread's view of a shared Xen host: memory, grant tables, event channels, its own counters. */
export class XenPeer implements HypercallSink {
  readonly acct = new Accounting();
  readonly mem: GuestRam;
  readonly evtchn: EventChannels;
  private readonly tables = new Map<number, GrantTable>();
  private readonly mappers = new Map<number, GrantMapper>();

  constructor(s: XenSharedState) {
    this.mem = new GuestRam(s.ramSize, { buffer: s.ram });
    for (const [id, sab] of s.grantTables) this.tables.set(id, GrantTable.attach(id, this.mem, sab));
    this.evtchn = EventChannels.attach(this, new Map(s.evtchn));
  }

  hypercall(_dom: number, _op: string): void {
    this.acct.counts.hypercall++;
  }

  grantTable(id: number): GrantTable | undefined {
    return this.tables.get(id);
  }

  grants(id: number): GrantMapper {
    let m = this.mappers.get(id);
    if (!m) this.mappers.set(id, (m = new GrantMapper(id, (d) => this.tables.get(d), this)));
    return m;
  }
}

export function attachXenShared(s: XenSharedState): XenPeer {
  return new XenPeer(s);
}
