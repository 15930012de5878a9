/**
 * A Xen host for the PV path: the mock `Hypervisor` (guest RAM, accounting, tracing), its domains (dom0 runs
 * xenstored and the block backend; guests from domid 1), each guest's grant table in its own memory, the
 * event channels between them and the xenstore.
 */

import { DOM0, Domain } from "./domain.ts";
import { EventChannels } from "./event-channel.ts";
import {
  DEFAULT_MAX_GRANT_FRAMES,
  GNTST_okay,
  GrantMapper,
  GrantTable,
  type GrantStatus,
  GuestGrantTable,
} from "./grant-table.ts";
import { Hypervisor, type HypervisorOptions } from "./hypervisor.ts";
import { XenStore, type XsHandle } from "./xenstore.ts";

export interface XenHostOptions extends HypervisorOptions {
  /** Use this hypervisor (its RAM is the first guest's memory) instead of creating one. */
  hv?: Hypervisor;
  /** Create guest domain 1 on the hypervisor's RAM (default true). */
  guest?: boolean;
  /** Where the guest's own page allocator starts (default 16 MiB). */
  guestAllocStart?: number;
}

export class XenHost {
  readonly hv: Hypervisor;
  readonly domains = new Map<number, Domain>();
  readonly evtchn: EventChannels;
  readonly xenstore: XenStore;
  private readonly tables = new Map<number, GrantTable>();
  private readonly mappers = new Map<number, GrantMapper>();

  constructor(opts: XenHostOptions = {}) {
    const { hv, guest, guestAllocStart, ...hvOpts } = opts;
    this.hv = hv ?? new Hypervisor(hvOpts);
    this.evtchn = new EventChannels(this.hv);
    this.xenstore = new XenStore(this.hv);
    this.addDomain(new Domain({ id: DOM0, name: "Domain-0", privileged: true }));
    if (guest ?? true) {
      this.addDomain(
        new Domain({
          id: 1,
          name: "guest",
          mem: this.hv.mem,
          ...(guestAllocStart ? { allocStart: guestAllocStart } : {}),
        }),
      );
    }
  }

  get dom0(): Domain {
    return this.domain(DOM0);
  }

  domain(id: number): Domain {
    const d = this.domains.get(id);
    if (!d) throw new RangeError(`no domain ${id}`);
    return d;
  }

  /** Register a domain: its event-channel state, its grant table (empty until set up) and its xenstore home. */
  addDomain(d: Domain): Domain {
    if (this.domains.has(d.id)) throw new RangeError(`domain ${d.id} exists`);
    this.domains.set(d.id, d);
    this.evtchn.addDomain(d.id);
    if (d.mem) this.tables.set(d.id, GrantTable.create(d.id, d.mem));
    if (d.privileged) this.xenstore.setPrivileged(d.id);
    // What the toolstack does at domain creation: /local/domain/<id>, owned by the domain, private to it.
    const xs0 = this.xenstore.connect(DOM0);
    const home = `/local/domain/${d.id}`;
    xs0.mkdir(home);
    xs0.setPerms(home, [{ dom: d.id, perm: "n" }]);
    xs0.write(`${home}/name`, d.name);
    xs0.write(`${home}/domid`, String(d.id));
    return d;
  }

  /** The grant table of domain `id` (undefined for a domain without modelled memory). */
  grantTable(id: number): GrantTable | undefined {
    return this.tables.get(id);
  }

  /** Domain `id`'s grant operations on other domains' grants (map, unmap, copy). */
  grants(id: number): GrantMapper {
    let m = this.mappers.get(id);
    if (!m) {
      this.domain(id);
      m = new GrantMapper(id, (d) => this.tables.get(d), this.hv);
      this.mappers.set(id, m);
    }
    return m;
  }

  /** GNTTABOP_setup_table: the guest hands `gfns` (frames of its own memory) over as its grant table. */
  setupGrantTable(id: number, gfns: readonly number[]): GrantStatus {
    this.hv.hypercall(id, "gnttab_setup_table");
    const t = this.tables.get(id);
    if (!t) return -2; // GNTST_bad_domain
    return t.setup(gfns);
  }

  /**
   * What a guest kernel does at boot for its grant library: allocate `frames` pages of its own memory, hand
   * them over as the grant table, and start a free list of refs (from 8: refs 0..7 are reserved).
   */
  guestGrantTable(id: number, frames = 4): GuestGrantTable {
    const d = this.domain(id);
    const t = this.tables.get(id);
    if (!t) throw new RangeError(`domain ${id} has no memory for a grant table`);
    if (t.nrFrames === 0) {
      if (frames > DEFAULT_MAX_GRANT_FRAMES)
        throw new RangeError(`at most ${DEFAULT_MAX_GRANT_FRAMES} grant frames`);
      const base = d.pages.alloc(frames * 4096);
      const gfns = Array.from({ length: frames }, (_, i) => base / 4096 + i);
      // A fresh table is all zero (GTF_invalid): the frames may have held anything before.
      d.mem!.write(base, new Uint8Array(frames * 4096));
      const st = this.setupGrantTable(id, gfns);
      if (st !== GNTST_okay) throw new Error(`gnttab_setup_table failed with status ${st}`);
    }
    return (this._guestTables.get(id) ?? this._guestTables.set(id, new GuestGrantTable(t)).get(id))!;
  }
  private readonly _guestTables = new Map<number, GuestGrantTable>();

  /** A xenstore connection for domain `id`. */
  xs(id: number): XsHandle {
    return this.xenstore.connect(id);
  }
}
