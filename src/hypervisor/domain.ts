/**
 * Xen domains as the PV services see them: an id, whether the domain is privileged (dom0 runs the toolstack,
 * xenstored and the block backend), and the memory the domain's own grant table and shared pages live in.
 *
 * The backend domain has no modelled RAM of its own: everything it touches of the guest it reaches through a
 * grant map or a grant copy, exactly as dom0 only ever sees guest frames the guest granted.
 */

import { type GuestMemory, PageAllocator } from "./memory.ts";

/** `DOMID_SELF` (xen.h): "the calling domain" in hypercall arguments. */
export const DOMID_SELF = 0x7ff0;
/** The toolstack/backend domain. */
export const DOM0 = 0;

export interface DomainOptions {
  id: number;
  name?: string;
  /** Dom0 is privileged: xenstore permissions do not apply to it. */
  privileged?: boolean;
  /** The domain's RAM (the guest's physical memory); null for a backend domain without modelled RAM. */
  mem?: GuestMemory | null;
  /** Where the domain's page allocator starts (default 16 MiB, or half of a RAM smaller than 32 MiB). */
  allocStart?: number;
}

export class Domain {
  readonly id: number;
  readonly name: string;
  readonly privileged: boolean;
  readonly mem: GuestMemory | null;
  private _pages: PageAllocator | null = null;
  private readonly allocStart: number;

  constructor(opts: DomainOptions) {
    if (!(Number.isInteger(opts.id) && opts.id >= 0 && opts.id < DOMID_SELF)) {
      throw new RangeError(`domain id must be 0..${DOMID_SELF - 1}, got ${opts.id}`);
    }
    this.id = opts.id;
    this.name = opts.name ?? `dom${opts.id}`;
    this.privileged = opts.privileged ?? opts.id === DOM0;
    this.mem = opts.mem ?? null;
    // Above the low 16 MiB other guest code uses; in a small RAM, its upper half.
    this.allocStart =
      opts.allocStart ?? (this.mem && this.mem.size < 0x200_0000 ? this.mem.size / 2 : 0x100_0000);
  }

  /** The domain's allocator of its own frames (rings, grant-table frames, bounce buffers). */
  get pages(): PageAllocator {
    if (!this.mem) throw new Error(`${this.name} has no modelled memory to allocate from`);
    this._pages ??= new PageAllocator(this.mem, this.allocStart);
    return this._pages;
  }
}
