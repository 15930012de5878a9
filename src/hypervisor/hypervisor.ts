/**
 * The mock hypervisor: guest RAM, the vCPUs' port-I/O exits encoded as Xen ioreqs, the ioreq server (device
 * model) behind them, interrupt lines, accounting and tracing. Guest drivers reach devices only through a
 * `Vcpu`, so everything they do is an exit that is counted and, when asked, traced.
 */

import { Accounting, CostModel, type CounterKind, type Counts } from "./accounting.ts";
import { type AccessSize, MmioBus, type MmioSize, PortBus } from "./bus.ts";
import { InterruptController } from "./irq.ts";
import {
  BufferedIoreqPage,
  IOREQ_READ,
  IOREQ_TYPE_COPY,
  IOREQ_TYPE_PIO,
  IOREQ_WRITE,
  MAX_VCPUS_PER_IOREQ_PAGE,
  SharedIoreqPage,
  STATE_IORESP_READY,
} from "./ioreq.ts";
import { IoreqServer } from "./ioreq-server.ts";
import { type GuestMemory, GuestRam, PAGE_SIZE } from "./memory.ts";
import type { Tracer } from "./trace.ts";

export interface HypervisorOptions {
  /** Guest RAM in bytes (default 64 MiB), or an existing memory to use. */
  ramSize?: number;
  memory?: GuestMemory;
  vcpus?: number;
  costs?: Partial<Record<CounterKind, number>>;
  tracer?: Tracer | null;
  /** Route writes to ports declared fire-and-forget through the buffered ioreq page (default true). */
  bufferedIoreqs?: boolean;
}

/**
 * How the hypervisor side hands a READY slot to the device model. In-process this is a direct call; a
 * worker-thread device model would notify through Atomics on the shared page instead.
 */
export interface IoreqTransport {
  kick(vcpu: number): void;
}

/** A guest access that the hypervisor refuses before any device sees it (a bad string-I/O buffer, say). */
export class GuestAccessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GuestAccessError";
  }
}

export class Hypervisor {
  readonly mem: GuestMemory;
  readonly bus = new PortBus();
  /** Guest-physical ranges claimed by devices (BARs of memory type, say); accesses there are MMIO exits. */
  readonly mmio = new MmioBus();
  readonly acct: Accounting;
  /** `acct.counts`, one load nearer: the exit path increments it on every exit. */
  private readonly counts: Counts;
  readonly irq: InterruptController;
  readonly ioreqPage = new SharedIoreqPage();
  readonly bufPage = new BufferedIoreqPage();
  readonly server: IoreqServer;
  readonly vcpus: Vcpu[] = [];
  /**
   * How READY slots reach the device model. Null (the default) calls the in-process server directly, which
   * keeps the hottest path free of an indirect call.
   */
  transport: IoreqTransport | null = null;
  private _tracer: Tracer | null = null;
  bufferedIoreqs: boolean;

  constructor(opts: HypervisorOptions = {}) {
    this.mem = opts.memory ?? new GuestRam(opts.ramSize ?? 64 * 1024 * 1024);
    this.acct = new Accounting(new CostModel(opts.costs));
    this.counts = this.acct.counts;
    this.irq = new InterruptController(this.acct);
    this.server = new IoreqServer(this.ioreqPage, this.bufPage, this.bus, this.mem, this.mmio);
    this.bufferedIoreqs = opts.bufferedIoreqs ?? true;
    const n = opts.vcpus ?? 1;
    if (!(n >= 1 && n <= MAX_VCPUS_PER_IOREQ_PAGE))
      throw new RangeError(`vcpus must be 1..${MAX_VCPUS_PER_IOREQ_PAGE}`);
    for (let i = 0; i < n; i++) {
      // Xen writes each slot's event channel when the ioreq server is enabled (hvm_update_ioreq_evtchn).
      this.ioreqPage.setVpEport(i, i + 1);
      this.vcpus.push(new Vcpu(this, i));
    }
    this.tracer = opts.tracer ?? null;
  }

  /** Hand the READY slot to the device model. If the device model throws, the slot is still returned to NONE. */
  private serve(vcpu: number): void {
    try {
      if (this.transport === null) this.server.handle(vcpu);
      else this.transport.kick(vcpu);
    } catch (e) {
      if (this.ioreqPage.state(vcpu) === STATE_IORESP_READY) this.complete(vcpu, false);
      throw e;
    }
  }

  get tracer(): Tracer | null {
    return this._tracer;
  }
  set tracer(t: Tracer | null) {
    this._tracer = t;
    this.irq.tracer = t;
  }

  vcpu(i = 0): Vcpu {
    const v = this.vcpus[i];
    if (!v) throw new RangeError(`no vCPU ${i}`);
    return v;
  }

  /**
   * One port-I/O exit (hvmemul_do_io + hvm_send_ioreq + hvm_wait_for_io): encode the ioreq into the vCPU's
   * slot, hand it to the device model, take the answer and return the slot to NONE. The ioreq constants of this
   * path are literals (why: the exit path in ioreq.ts).
   */
  pio(vcpu: number, dir: 0 | 1, port: number, size: AccessSize, value: number): number {
    if (dir === 1 /* IOREQ_READ */) return this.pioIn(vcpu, port, size);
    this.pioOut(vcpu, port, size, value);
    return 0;
  }

  /** IN from a port: one exit, the value the device model answers (the low `size` bytes of the data field). */
  pioIn(vcpu: number, port: number, size: AccessSize): number {
    port &= 0xffff;
    this.counts.pioIn++;
    const page = this.ioreqPage;
    page.publishPio(vcpu, port, size, 1 /* IOREQ_READ */, 0);
    this.serve(vcpu);
    const result = page.data32(vcpu);
    page.step(vcpu, 3 /* STATE_IORESP_READY */); // refuses a slot the device model did not answer
    const t = this._tracer;
    if (t !== null) this.tracePio(t, vcpu, port, size, "in", result);
    return result;
  }

  /**
   * OUT to a port: through the buffered ioreq page when the port's owner declared its writes fire-and-forget
   * (and the page has room), else one exit.
   */
  pioOut(vcpu: number, port: number, size: AccessSize, value: number): void {
    port &= 0xffff;
    const t = this._tracer;
    if (
      this.bufferedIoreqs &&
      this.bus.isBuffered(port) &&
      this.bufPage.push(IOREQ_TYPE_PIO, port, size, value)
    ) {
      this.counts.bufferedWrite++;
      if (t) t.emit({ ev: "bufioreq", port, size, value });
      return;
    }
    this.counts.pioOut++;
    const page = this.ioreqPage;
    page.publishPio(vcpu, port, size, 0 /* IOREQ_WRITE */, value);
    this.serve(vcpu);
    page.step(vcpu, 3 /* STATE_IORESP_READY */);
    if (t !== null) this.tracePio(t, vcpu, port, size, "out", value);
  }

  private tracePio(
    t: Tracer,
    vcpu: number,
    port: number,
    size: AccessSize,
    dir: "in" | "out",
    value: number,
  ): void {
    t.emit({
      ev: "ioreq",
      vcpu,
      type: IOREQ_TYPE_PIO,
      port,
      size,
      dir,
      value,
      count: 1,
      dataIsPtr: false,
      df: false,
      device: this.bus.nameAt(port) ?? "unclaimed",
    });
  }

  /**
   * One string-I/O exit (INS/OUTS, possibly REP): `count` items between `port` and guest memory at `gpa`.
   * Like Xen, the hypervisor clamps `count` so the buffer stays inside one guest page, and the caller issues
   * another exit for the rest. Returns the number of items this exit moved.
   */
  pioString(
    vcpu: number,
    dir: 0 | 1,
    port: number,
    size: AccessSize,
    gpa: number,
    count: number,
    df: boolean,
  ): number {
    port &= 0xffff;
    if (count <= 0) return 0;
    let n: number;
    if (!df) {
      const room = Math.floor((PAGE_SIZE - (gpa % PAGE_SIZE)) / size);
      n = Math.max(1, Math.min(count, room));
    } else {
      const room = Math.floor((gpa % PAGE_SIZE) / size) + 1;
      n = Math.max(1, Math.min(count, room));
    }
    const lo = df ? gpa - (n - 1) * size : gpa;
    if (!(lo >= 0 && lo + n * size <= this.mem.size)) {
      // On real hardware the guest would take a page fault on its own buffer before any exit happens.
      throw new GuestAccessError(
        `string I/O buffer 0x${gpa.toString(16)} (${n}x${size} bytes) outside guest RAM`,
      );
    }
    this.acct.counts.stringIo++;
    this.ioreqPage.publish(vcpu, IOREQ_TYPE_PIO, port, gpa, n, size, dir, true, df);
    this.serve(vcpu);
    this.complete(vcpu, false);
    const t = this._tracer;
    if (t) {
      t.emit({
        ev: "ioreq",
        vcpu,
        type: IOREQ_TYPE_PIO,
        port,
        size,
        dir: dir === IOREQ_READ ? "in" : "out",
        count: n,
        dataIsPtr: true,
        df,
        gpa,
        device: this.bus.nameAt(port) ?? "unclaimed",
      });
    }
    return n;
  }

  /**
   * One MMIO exit (hvmemul_do_io with IOREQ_TYPE_COPY): a load or store of `size` bytes at guest-physical
   * `gpa`, outside RAM, sent to the device model. Returns the value read (0 for a store).
   */
  mmioAccess(vcpu: number, dir: 0 | 1, gpa: number, size: MmioSize, value: number): number {
    if (!(Number.isSafeInteger(gpa) && gpa >= 0))
      throw new GuestAccessError(`MMIO address ${gpa} is not a guest-physical address`);
    this.acct.counts.mmio++;
    this.ioreqPage.publish(
      vcpu,
      IOREQ_TYPE_COPY,
      gpa,
      dir === IOREQ_READ ? 0 : value,
      1,
      size,
      dir,
      false,
      false,
    );
    this.serve(vcpu);
    const result = this.complete(vcpu, dir === IOREQ_READ);
    const t = this._tracer;
    if (t) {
      t.emit({
        ev: "mmio",
        vcpu,
        addr: gpa,
        size,
        dir: dir === IOREQ_READ ? "in" : "out",
        value: dir === IOREQ_READ ? result : value,
        device: this.mmio.nameAt(gpa) ?? "unclaimed",
      });
    }
    return result;
  }

  /** hvm_wait_for_io: the slot must be IORESP_READY; take the data (reads only) and return the slot to NONE. */
  private complete(vcpu: number, takeData: boolean): number {
    const page = this.ioreqPage;
    const data = takeData ? page.data(vcpu) : 0;
    page.step(vcpu, STATE_IORESP_READY); // refuses a slot the device model did not answer
    return data;
  }

  /** Count a hypercall made by a domain (grant, event-channel and xenstore operations call this). */
  hypercall(dom: number, op: string): void {
    this.acct.counts.hypercall++;
    this._tracer?.emit({ ev: "hypercall", dom, op });
  }
}

/**
 * The only way a guest driver touches devices: port I/O (each access an exit), string I/O, its own RAM (no
 * exit) and interrupt lines. Mirrors the instructions a real driver would execute.
 */
export class Vcpu {
  readonly mem: GuestMemory;
  constructor(
    readonly hv: Hypervisor,
    readonly id: number,
  ) {
    this.mem = hv.mem;
  }

  inb(port: number): number {
    return this.hv.pio(this.id, 1 /* IOREQ_READ */, port, 1, 0);
  }
  inw(port: number): number {
    return this.hv.pio(this.id, 1 /* IOREQ_READ */, port, 2, 0);
  }
  inl(port: number): number {
    return this.hv.pio(this.id, 1 /* IOREQ_READ */, port, 4, 0);
  }
  outb(port: number, value: number): void {
    this.hv.pio(this.id, 0 /* IOREQ_WRITE */, port, 1, value & 0xff);
  }
  outw(port: number, value: number): void {
    this.hv.pio(this.id, 0 /* IOREQ_WRITE */, port, 2, value & 0xffff);
  }
  outl(port: number, value: number): void {
    this.hv.pio(this.id, 0 /* IOREQ_WRITE */, port, 4, value >>> 0);
  }

  /** MOV from an MMIO address: one exit to the device model. */
  readb(gpa: number): number {
    return this.hv.mmioAccess(this.id, IOREQ_READ, gpa, 1, 0);
  }
  readw(gpa: number): number {
    return this.hv.mmioAccess(this.id, IOREQ_READ, gpa, 2, 0);
  }
  readl(gpa: number): number {
    return this.hv.mmioAccess(this.id, IOREQ_READ, gpa, 4, 0);
  }
  /** MOV to an MMIO address. */
  writeb(gpa: number, value: number): void {
    this.hv.mmioAccess(this.id, IOREQ_WRITE, gpa, 1, value & 0xff);
  }
  writew(gpa: number, value: number): void {
    this.hv.mmioAccess(this.id, IOREQ_WRITE, gpa, 2, value & 0xffff);
  }
  writel(gpa: number, value: number): void {
    this.hv.mmioAccess(this.id, IOREQ_WRITE, gpa, 4, value >>> 0);
  }

  /** REP INS{B,W,L}: `count` items from `port` into guest memory at `gpa`. Several exits if it crosses pages. */
  ins(port: number, size: AccessSize, gpa: number, count: number, df = false): void {
    this.rep(IOREQ_READ, port, size, gpa, count, df);
  }
  /** REP OUTS{B,W,L}: `count` items from guest memory at `gpa` to `port`. */
  outs(port: number, size: AccessSize, gpa: number, count: number, df = false): void {
    this.rep(IOREQ_WRITE, port, size, gpa, count, df);
  }
  insb(port: number, gpa: number, count: number): void {
    this.ins(port, 1, gpa, count);
  }
  insw(port: number, gpa: number, count: number): void {
    this.ins(port, 2, gpa, count);
  }
  insl(port: number, gpa: number, count: number): void {
    this.ins(port, 4, gpa, count);
  }
  outsb(port: number, gpa: number, count: number): void {
    this.outs(port, 1, gpa, count);
  }
  outsw(port: number, gpa: number, count: number): void {
    this.outs(port, 2, gpa, count);
  }
  outsl(port: number, gpa: number, count: number): void {
    this.outs(port, 4, gpa, count);
  }

  private rep(dir: 0 | 1, port: number, size: AccessSize, gpa: number, count: number, df: boolean): void {
    while (count > 0) {
      const n = this.hv.pioString(this.id, dir, port, size, gpa, count, df);
      count -= n;
      gpa += df ? -n * size : n * size;
    }
  }

  /** Level of an interrupt line as the guest's interrupt controller sees it (no exit). */
  irqRaised(line: number): boolean {
    return this.hv.irq.isRaised(line);
  }

  /**
   * True when `line` is active now, as `waitIrq` would find it before halting (pending buffered writes land
   * first): a driver then takes the interrupt at once, without a trip through the event loop.
   */
  irqPending(line: number): boolean {
    this.hv.server.drainBuffered();
    return this.hv.irq.isRaised(line);
  }

  /** HLT until `line` is active, or `timeoutMs` passes (resolves false). Pending buffered writes land first. */
  waitIrq(line: number, timeoutMs?: number): Promise<boolean> {
    this.hv.server.drainBuffered();
    return this.hv.irq.wait(line, timeoutMs);
  }

  /**
   * PAUSE in a polling loop: yields to the event loop so that asynchronous storage completions can arrive.
   * A driver polling a BSY bit must call this between polls when the device model may be asynchronous.
   */
  relax(): Promise<void> {
    return new Promise((r) => setImmediate(r));
  }
}
