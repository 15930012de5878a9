/**
 * REP INS/OUTS as one exit, the way Xen takes them.
 *
 * Under Xen a `rep insl` on the IDE data port is one VM exit: hvmemul_rep_ins sends one ioreq with
 * data_is_ptr, a guest-physical buffer and a count clamped to the page (xen-protocol §9), and the device
 * model moves all items at once. v86 instead calls the port handler once per item. To charge what Xen
 * charges, the first item's call recognises the instruction that made it (REP prefix + INS/OUTS at the
 * instruction pointer, DX = this port, operand size = this access), works out exactly the items v86's fast
 * path will move in this pass (ECX, clamped to the end of the destination's physical page, as v86's
 * string.rs does), and issues ONE string ioreq for them over guest memory. v86's remaining calls for the
 * pass are then answered from guest memory (INS: the words the device model stored) or absorbed (OUTS: the
 * device model already took them) without further exits.
 *
 * Only v86's "fast path" is batched (32-bit addressing, aligned buffer, RAM not MMIO): there v86 moves whole
 * page-bounded passes and re-executes the instruction with updated registers for the rest, so each pass is
 * seen afresh. Anything else (16-bit real-mode firmware, unaligned buffers) stays one exit per item, which
 * is also what Xen does for a non-REP IN/OUT.
 */

import type { AccessSize } from "../../hypervisor/bus.ts";
import type { Hypervisor } from "../../hypervisor/hypervisor.ts";
import { IOREQ_READ, IOREQ_WRITE } from "../../hypervisor/ioreq.ts";
import { DirectView, REG_ECX, REG_EDI, REG_EDX, REG_ESI, type V86Cpu } from "./internals.ts";

const PAGE = 4096;
const FLAG_DF = 1 << 10;
/** Segment indices in v86's order. */
const SEG_ES = 0;
const SEG_DS = 3;
const SEGMENT_PREFIX: Record<number, number> = { 0x26: 0, 0x2e: 1, 0x36: 2, 0x3e: 3, 0x64: 4, 0x65: 5 };

interface Pass {
  port: number;
  dir: 0 | 1;
  size: AccessSize;
  /** Items v86 will still hand us in this pass (after the one that started it). */
  left: number;
  /** Index in the pass's copy of the next item v86 will ask for (or hand over), and the direction. */
  next: number;
  step: 1 | -1;
}

export class StringIoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StringIoError";
  }
}

export interface StringIoStats {
  /** String ioreqs issued (one per pass). */
  passes: number;
  /** Items those passes moved. */
  items: number;
}

export class RepStringBatcher {
  private pass: Pass | null = null;
  readonly stats: StringIoStats = { passes: 0, items: 0 };
  private readonly ram: DirectView<Uint8Array>;
  /** The items of the current pass, copied out of guest RAM once (a page at most). */
  private readonly copy = new ArrayBuffer(PAGE);
  private readonly copy8 = new Uint8Array(this.copy);
  private readonly copy16 = new Uint16Array(this.copy);
  private readonly copy32 = new Uint32Array(this.copy);

  constructor(
    private readonly cpu: V86Cpu,
    private readonly hv: Hypervisor,
    private readonly vcpu = 0,
  ) {
    const size = cpu.memory_size[0]!;
    this.ram = new DirectView(cpu.wasm_memory, cpu.mem8, (b, off) => new Uint8Array(b, off, size));
  }

  /** An IN from `port`: a value, possibly out of a string pass. */
  read(port: number, size: AccessSize): number {
    const p = this.pass;
    if (p) {
      this.check(p, port, IOREQ_READ, size);
      const v = this.item(p.next, size);
      p.next += p.step;
      if (--p.left === 0) this.pass = null;
      return v;
    }
    const plan = this.plan(port, IOREQ_READ, size);
    if (!plan) return this.hv.pio(this.vcpu, IOREQ_READ, port, size, 0);
    this.issue(port, IOREQ_READ, size, plan.phys, plan.items, plan.df);
    // The device model stored the pass in guest RAM; v86 now asks for it item by item.
    const first = this.load(plan.phys, plan.items, size, plan.df);
    if (plan.items > 1) {
      this.pass = {
        port,
        dir: IOREQ_READ,
        size,
        left: plan.items - 1,
        next: first + plan.step,
        step: plan.step,
      };
    }
    return this.item(first, size);
  }

  /** An OUT to `port`. Returns false when the caller should perform it as a single exit. */
  write(port: number, size: AccessSize, value: number): boolean {
    const p = this.pass;
    if (p) {
      this.check(p, port, IOREQ_WRITE, size);
      // v86 reads each item from the same guest memory the string ioreq took it from.
      if (value !== this.item(p.next, size)) {
        throw new StringIoError(`OUTS item ${p.next} of the pass differs from what the string exit moved`);
      }
      p.next += p.step;
      if (--p.left === 0) this.pass = null;
      return true;
    }
    const plan = this.plan(port, IOREQ_WRITE, size);
    if (!plan) return false;
    const first = this.load(plan.phys, plan.items, size, plan.df);
    // The first item must be the one in memory at the source address, or this is not the pass we think.
    if (value !== this.item(first, size)) return false;
    this.issue(port, IOREQ_WRITE, size, plan.phys, plan.items, plan.df);
    if (plan.items > 1) {
      this.pass = {
        port,
        dir: IOREQ_WRITE,
        size,
        left: plan.items - 1,
        next: first + plan.step,
        step: plan.step,
      };
    }
    return true;
  }

  private check(p: Pass, port: number, dir: 0 | 1, size: AccessSize): void {
    if (p.port !== port || p.dir !== dir || p.size !== size) {
      throw new StringIoError(
        `string pass on port 0x${p.port.toString(16)} (${p.left} items left) interrupted by ` +
          `${dir === IOREQ_READ ? "IN" : "OUT"} 0x${port.toString(16)}/${size}`,
      );
    }
  }

  private issue(port: number, dir: 0 | 1, size: AccessSize, phys: number, items: number, df: boolean): void {
    const gpa = phys;
    let moved = 0;
    // One exit per page at most; the plan never crosses a page, so this is one call.
    while (moved < items) {
      const n = this.hv.pioString(
        this.vcpu,
        dir,
        port,
        size,
        df ? gpa - moved * size : gpa + moved * size,
        items - moved,
        df,
      );
      moved += n;
    }
    this.stats.passes++;
    this.stats.items += items;
  }

  /**
   * Copy the pass's bytes (lowest address first) out of guest RAM; returns the index of the item v86 takes
   * first (the lowest for DF=0, the highest for DF=1).
   */
  private load(phys: number, items: number, size: AccessSize, df: boolean): number {
    const lo = df ? phys - (items - 1) * size : phys;
    this.copy8.set(this.ram.get().subarray(lo, lo + items * size));
    return df ? items - 1 : 0;
  }

  private item(i: number, size: AccessSize): number {
    return size === 4 ? this.copy32[i]! : size === 2 ? this.copy16[i]! : this.copy8[i]!;
  }

  /** Is the executing instruction a REP INS/OUTS on this port that v86 runs on its fast path? */
  private plan(
    port: number,
    dir: 0 | 1,
    size: AccessSize,
  ): { phys: number; items: number; step: 1 | -1; df: boolean } | null {
    const cpu = this.cpu;
    const ip = cpu.previous_ip[0]!;
    const ram = this.ram.get();
    let rep = false;
    let opsize = false;
    let asize = false;
    let seg = SEG_DS;
    let op = -1;
    for (let i = 0; i < 15; i++) {
      const b = ram[cpu.translate_address_system_read((ip + i) | 0)]!;
      if (b === 0xf3 || b === 0xf2) rep = true;
      else if (b === 0x66) opsize = true;
      else if (b === 0x67) asize = true;
      else if (b === 0xf0) continue;
      else if (b in SEGMENT_PREFIX) seg = SEGMENT_PREFIX[b]!;
      else {
        op = b;
        break;
      }
    }
    if (!rep) return null;
    const want = dir === IOREQ_READ ? 0x6c : 0x6e;
    if (op !== want && op !== want + 1) return null;
    const code32 = cpu.is_32[0] !== 0;
    const opBytes = op === want ? 1 : code32 !== opsize ? 4 : 2;
    if (opBytes !== size) return null;
    if ((cpu.reg32[REG_EDX]! & 0xffff) !== port) return null;
    // v86's fast path needs 32-bit addressing; 16-bit passes go item by item.
    if (code32 === asize) return null;
    const count = cpu.reg32[REG_ECX]! >>> 0;
    if (count === 0) return null;
    const linear =
      dir === IOREQ_READ
        ? (cpu.segment_offsets[SEG_ES]! + cpu.reg32[REG_EDI]!) | 0
        : (cpu.segment_offsets[seg]! + cpu.reg32[REG_ESI]!) | 0;
    if (linear & (size - 1)) return null; // unaligned: v86's slow path
    const phys = cpu.translate_address_system_read(linear) >>> 0;
    if (phys + size > cpu.memory_size[0]! || cpu.in_mapped_range(phys)) return null;
    const df = (cpu.flags[0]! & FLAG_DF) !== 0;
    const toPageEnd = df
      ? Math.floor((phys & (PAGE - 1)) / size) + 1
      : Math.floor((PAGE - (phys & (PAGE - 1))) / size);
    const items = Math.min(count, toPageEnd);
    return { phys, items, step: df ? -1 : 1, df };
  }
}
