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
  IOREQ_DF,
  IOREQ_TYPE_COPY,
  IOREQ_TYPE_PIO,
  type SharedIoreqPage,
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
    // The device model must never touch a slot that is not READY (xen-protocol §9.3): take() refuses it. The
    // layout constants are literals here (see ioreq.ts: the exit path).
    const tail = page.take(vcpu);
    const flags = (tail >>> 16) & 0xff; // byte 30 (IOREQ_OFF_FLAGS)
    const type = tail >>> 24; // byte 31 (IOREQ_OFF_TYPE)
    const u32 = page.u32;
    const w = vcpu << 3; // vcpu * IOREQ_SIZE / 4
    const addr = u32[w]!; // IOREQ_OFF_ADDR, low word
    const size = u32[w + 5]!; // IOREQ_OFF_SIZE
    const isRead = (flags & 0x20) /* IOREQ_DIR_READ_BIT */ !== 0;
    const isPtr = (flags & 0x10) /* IOREQ_DATA_IS_PTR */ !== 0;
    try {
      if (type === 0 /* IOREQ_TYPE_PIO */ && (size === 1 || size === 2 || size === 4)) {
        if (isPtr) {
          const count = u32[w + 4]!; // IOREQ_OFF_COUNT
          this.string(addr & 0xffff, size, isRead, page.data(vcpu), count, (flags & IOREQ_DF) !== 0);
        } else if (isRead) {
          // A port read answers at most 32 bits: the bus masks it to the access size.
          page.setData32(vcpu, this.bus.read(addr & 0xffff, size));
        } else {
          // The low word holds every bit an access of 4 bytes or fewer can carry; the bus masks it to `size`.
          this.bus.write(addr & 0xffff, size, page.data32(vcpu));
        }
      } else if (
        type === IOREQ_TYPE_COPY &&
        this.mmio !== null &&
        !isPtr &&
        (size === 1 || size === 2 || size === 4)
      ) {
        // The 64-bit guest-physical address: low and high words of the slot's addr field.
        const gpa = addr + u32[w + 1]! * 0x1_0000_0000;
        if (isRead) page.setData(vcpu, this.mmio.read(gpa, size));
        else this.mmio.write(gpa, size, page.data(vcpu) & sizeMask(size));
      } else if (isRead && !isPtr) {
        // Request types this device model does not serve: reads float high, writes are dropped.
        page.setData(vcpu, sizeMask(Math.min(size, 4)) >>> 0);
      }
    } catch (e) {
      // A device-model bug must not wedge the vCPU: the slot is still answered (a read floats high), and the
      // error goes on to whoever drives the vCPU.
      if (isRead && !isPtr) page.setData(vcpu, sizeMask(size === 1 || size === 2 ? size : 4) >>> 0);
      throw e;
    } finally {
      this.stats.handled++;
      page.step(vcpu, 2 /* STATE_IOREQ_INPROCESS: on to IORESP_READY */);
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
