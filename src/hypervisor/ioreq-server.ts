/**
 * The device-model side of the ioreq protocol (QEMU's `cpu_handle_ioreq` / `handle_ioreq` in
 * hw/xen/xen-hvm-common.c): take a READY slot, mark it INPROCESS, decode the bytes, perform the access on the
 * port bus (string I/O over guest memory), write the result back and mark it IORESP_READY. Buffered writes
 * are drained before every synchronous request, which is the ordering guarantee QEMU gives.
 *
 * It only touches the shared pages, the bus and guest memory, so it could run on its own thread the way QEMU
 * runs in its own dom0 process.
 */

import { type AccessSize, type MmioBus, type PortBus, sizeMask } from "./bus.ts";
import {
  type BufferedIoreqPage,
  IOREQ_DATA_IS_PTR,
  IOREQ_DF,
  IOREQ_DIR_READ_BIT,
  IOREQ_OFF_ADDR,
  IOREQ_OFF_COUNT,
  IOREQ_OFF_FLAGS,
  IOREQ_OFF_SIZE,
  IOREQ_OFF_TYPE,
  IOREQ_TYPE_COPY,
  IOREQ_TYPE_PIO,
  IOREQ_SIZE,
  type SharedIoreqPage,
  STATE_IOREQ_INPROCESS,
  STATE_IOREQ_READY,
} from "./ioreq.ts";
import { type GuestMemory, isFault, type MemoryFault } from "./memory.ts";

export interface IoreqServerStats {
  handled: number;
  bufferedDrained: number;
  stringItems: number;
  faults: number;
}

export class IoreqServer {
  readonly stats: IoreqServerStats = { handled: 0, bufferedDrained: 0, stringItems: 0, faults: 0 };
  /** The last guest-memory fault met while serving string I/O, for diagnostics. */
  lastFault: MemoryFault | undefined;

  constructor(
    readonly page: SharedIoreqPage,
    readonly bufPage: BufferedIoreqPage,
    readonly bus: PortBus,
    readonly mem: GuestMemory,
    /** Where IOREQ_TYPE_COPY (MMIO) requests go; without it they float high like any unserved type. */
    readonly mmio: MmioBus | null = null,
  ) {}

  /** Perform every pending buffered write, in order (QEMU handle_buffered_iopage). */
  drainBuffered(): number {
    let n = 0;
    for (;;) {
      const b = this.bufPage.pop();
      if (!b) break;
      if (b.type === IOREQ_TYPE_PIO && b.size <= 4) this.bus.write(b.addr, b.size as AccessSize, b.data);
      n++;
    }
    this.stats.bufferedDrained += n;
    return n;
  }

  /** Serve the READY request in `vcpu`'s slot. */
  handle(vcpu: number): void {
    if (this.bufPage.hasPending()) this.drainBuffered();
    const page = this.page;
    // The device model must never touch a slot that is not READY (xen-protocol §9.3): step() refuses it.
    page.step(vcpu, STATE_IOREQ_READY);
    const o = vcpu * IOREQ_SIZE;
    const u32 = page.u32;
    const flags = page.u8[o + IOREQ_OFF_FLAGS]!;
    const type = page.u8[o + IOREQ_OFF_TYPE]!;
    const addr = u32[(o + IOREQ_OFF_ADDR) >>> 2]!;
    const size = u32[(o + IOREQ_OFF_SIZE) >>> 2]!;
    const isRead = (flags & IOREQ_DIR_READ_BIT) !== 0;
    try {
      if (type === IOREQ_TYPE_PIO && (size === 1 || size === 2 || size === 4)) {
        if (flags & IOREQ_DATA_IS_PTR) {
          const count = u32[(o + IOREQ_OFF_COUNT) >>> 2]!;
          this.string(addr & 0xffff, size, isRead, page.data(vcpu), count, (flags & IOREQ_DF) !== 0);
        } else if (isRead) {
          page.setData(vcpu, this.bus.read(addr & 0xffff, size));
        } else {
          this.bus.write(addr & 0xffff, size, page.data(vcpu) & sizeMask(size));
        }
      } else if (
        type === IOREQ_TYPE_COPY &&
        this.mmio !== null &&
        !(flags & IOREQ_DATA_IS_PTR) &&
        (size === 1 || size === 2 || size === 4)
      ) {
        // The 64-bit guest-physical address: low and high words of the slot's addr field.
        const gpa = addr + u32[((o + IOREQ_OFF_ADDR) >>> 2) + 1]! * 0x1_0000_0000;
        if (isRead) page.setData(vcpu, this.mmio.read(gpa, size));
        else this.mmio.write(gpa, size, page.data(vcpu) & sizeMask(size));
      } else if (isRead && !(flags & IOREQ_DATA_IS_PTR)) {
        // Request types this device model does not serve: reads float high, writes are dropped.
        page.setData(vcpu, sizeMask(Math.min(size, 4)) >>> 0);
      }
    } catch (e) {
      // A device-model bug must not wedge the vCPU: the slot is still answered (a read floats high), and the
      // error goes on to whoever drives the vCPU.
      if (isRead && !(flags & IOREQ_DATA_IS_PTR))
        page.setData(vcpu, sizeMask(size === 1 || size === 2 ? size : 4) >>> 0);
      throw e;
    } finally {
      this.stats.handled++;
      page.step(vcpu, STATE_IOREQ_INPROCESS);
    }
  }

  /**
   * String I/O: `count` items of `size` bytes between `port` and guest memory at `gpa`, downwards when `df`.
   * The device's bulk path is used when it has one. A guest-memory fault stops the transfer there.
   */
  private string(
    port: number,
    size: AccessSize,
    isRead: boolean,
    gpa: number,
    count: number,
    df: boolean,
  ): void {
    const dev = this.bus.deviceAt(port);
    if (dev?.ioString) {
      const r = dev.ioString(port, size, isRead ? "in" : "out", this.mem, gpa, count, df);
      if (isFault(r)) this.fault(r);
      else this.stats.stringItems += r;
      return;
    }
    const step = df ? -size : size;
    for (let i = 0; i < count; i++) {
      const a = gpa + i * step;
      let f: MemoryFault | undefined;
      if (isRead) {
        const v = this.bus.read(port, size);
        f =
          size === 1
            ? this.mem.writeU8(a, v)
            : size === 2
              ? this.mem.writeU16(a, v)
              : this.mem.writeU32(a, v);
      } else {
        const v = size === 1 ? this.mem.readU8(a) : size === 2 ? this.mem.readU16(a) : this.mem.readU32(a);
        if (isFault(v)) f = v;
        else this.bus.write(port, size, v);
      }
      if (f) {
        this.fault(f);
        return;
      }
      this.stats.stringItems++;
    }
  }

  private fault(f: MemoryFault): void {
    this.stats.faults++;
    this.lastFault = f;
  }
}
