/**
 * The exit packets must be byte-identical to Xen 4.17's `ioreq_t` and `buf_ioreq_t` (xen/include/public/hvm/
 * ioreq.h). The expected bytes below were produced by a C program compiled against Debian's libxen-dev 4.17
 * headers (struct fields assigned, then the struct dumped), identical for the x86_64 and x86_32 builds.
 */
import { describe, expect, it } from "vitest";
import type { AccessSize, PortIoDevice } from "../../src/hypervisor/bus.ts";
import { GuestAccessError, Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { hex, recording } from "./helpers.ts";
import {
  BufferedIoreqPage,
  decodeIoreq,
  encodeIoreq,
  IOREQ_BUFFER_SLOT_NUM,
  IOREQ_TYPE_PIO,
  IoreqStateError,
  SharedIoreqPage,
  STATE_IOREQ_INPROCESS,
  STATE_IOREQ_NONE,
  STATE_IOREQ_READY,
  STATE_IORESP_READY,
} from "../../src/hypervisor/ioreq.ts";

class Reg implements PortIoDevice {
  value = 0;
  log: string[] = [];
  ioRead(port: number, size: AccessSize): number {
    this.log.push(`r${size}@${port.toString(16)}`);
    return this.value;
  }
  ioWrite(port: number, size: AccessSize, value: number): void {
    this.log.push(`w${size}@${port.toString(16)}=${value.toString(16)}`);
    this.value = value;
  }
}

describe("ioreq_t encoding (hvm/ioreq.h)", () => {
  it("OUT 0x3f8, AL=0x41 is published as Xen does (example ioreq_pio_write_outb_0x3f8_0x41_READY)", () => {
    const { hv, seen } = recording();
    const dev = new Reg();
    hv.bus.register(0x3f8, 8, dev, "uart");
    hv.vcpu().outb(0x3f8, 0x41);
    expect(seen[0]!.request).toBe("f803000000000000410000000000000001000000010000000500000000000100");
    expect(dev.log).toEqual(["w1@3f8=41"]);
    expect(hv.ioreqPage.state(0)).toBe(STATE_IOREQ_NONE);
  });

  it("IN AL, 0x3fd: READY request, then data=0x60 with IORESP_READY (examples ioreq_pio_read_inb_0x3fd_*)", () => {
    const { hv, seen } = recording();
    const dev = new Reg();
    dev.value = 0x60;
    hv.bus.register(0x3f8, 8, dev, "uart");
    expect(hv.vcpu().inb(0x3fd)).toBe(0x60);
    expect(seen[0]!.request).toBe("fd03000000000000000000000000000001000000010000000500000000002100");
    expect(seen[0]!.response).toBe("fd03000000000000600000000000000001000000010000000500000000002300");
  });

  it("REP OUTSW to 0x1f0, 256 words from GPA 0x12345000 is one pointer ioreq (example ioreq_pio_rep_outsw_...)", () => {
    const { hv, seen } = recording(0x12346000, 7);
    const dev = new Reg();
    hv.bus.register(0x1f0, 8, dev, "ide");
    const mem = hv.mem;
    for (let i = 0; i < 256; i++) mem.writeU16(0x12345000 + 2 * i, i);
    hv.vcpu().outsw(0x1f0, 0x12345000, 256);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.request).toBe("f001000000000000005034120000000000010000020000000700000000001100");
    // The device saw 256 word writes with the guest's data, in order (no ioString fast path here).
    expect(dev.log).toHaveLength(256);
    expect(dev.log[0]).toBe("w2@1f0=0");
    expect(dev.log[255]).toBe("w2@1f0=ff");
    expect(hv.acct.counts.stringIo).toBe(1);
  });

  it("decodes and re-encodes the MMIO df=1 example unchanged (ioreq_mmio_write_4_df1)", () => {
    const bytes = Buffer.from("0000e0fe00000000efbeadde0000000001000000040000000300000000004101", "hex");
    const r = decodeIoreq(new Uint8Array(bytes));
    expect(r).toMatchObject({ addr: 0xfee00000, data: 0xdeadbeef, count: 1, size: 4, vpEport: 3, df: true });
    expect(r.state).toBe(STATE_IOREQ_READY);
    expect(r.type).toBe(1);
    expect(hex(encodeIoreq(r))).toBe(bytes.toString("hex"));
  });
});

describe("ioreq state machine", () => {
  it("steps NONE -> READY -> INPROCESS -> IORESP_READY -> NONE and refuses anything else", () => {
    const p = new SharedIoreqPage();
    expect(() => p.setState(0, STATE_IOREQ_INPROCESS)).toThrow(IoreqStateError);
    p.setState(0, STATE_IOREQ_READY);
    expect(() => p.setState(0, STATE_IOREQ_NONE)).toThrow(/READY -> NONE/); // backwards
    p.setState(0, STATE_IOREQ_INPROCESS);
    expect(() => p.setState(0, STATE_IOREQ_READY)).toThrow(IoreqStateError); // backwards
    p.setState(0, STATE_IORESP_READY);
    expect(() => p.setState(0, STATE_IOREQ_INPROCESS)).toThrow(IoreqStateError);
    p.setState(0, STATE_IOREQ_NONE);
    expect(p.state(0)).toBe(STATE_IOREQ_NONE);
  });

  it("refuses to publish into a busy slot and the device model refuses a slot that is not READY", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    hv.ioreqPage.publish(0, IOREQ_TYPE_PIO, 0x80, 0, 1, 1, 1, false, false);
    expect(() => hv.ioreqPage.publish(0, IOREQ_TYPE_PIO, 0x80, 0, 1, 1, 1, false, false)).toThrow(
      IoreqStateError,
    );
    hv.server.handle(0);
    expect(() => hv.server.handle(0)).toThrow(IoreqStateError); // now IORESP_READY, not READY
  });

  it("keeps each vCPU in its own 32-byte slot", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16, vcpus: 3 });
    const dev = new Reg();
    hv.bus.register(0x70, 2, dev, "rtc");
    hv.vcpu(2).outb(0x70, 0x8f);
    expect(decodeIoreq(hv.ioreqPage.u8, 64)).toMatchObject({
      addr: 0x70,
      data: 0x8f,
      state: STATE_IOREQ_NONE,
    });
    expect(decodeIoreq(hv.ioreqPage.u8, 0).addr).toBe(0);
  });
});

describe("string I/O", () => {
  it("clamps a REP to one guest page per exit, as Xen does", () => {
    const { hv, seen } = recording();
    const dev = new Reg();
    dev.value = 0xabcd;
    hv.bus.register(0x1f0, 8, dev, "ide");
    hv.vcpu().insw(0x1f0, 0x1f00, 256); // 0x100 bytes to the page end, then 0x100 more
    expect(seen).toHaveLength(2);
    expect(decodeIoreq(Buffer.from(seen[0]!.request, "hex")).count).toBe(128);
    expect(decodeIoreq(Buffer.from(seen[1]!.request, "hex"))).toMatchObject({ count: 128, data: 0x2000 });
    expect(hv.mem.readU16(0x1f00)).toBe(0xabcd);
    expect(hv.mem.readU16(0x20fe)).toBe(0xabcd);
    expect(hv.mem.readU16(0x2100)).toBe(0);
  });

  it("walks downwards when DF is set", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    let n = 0;
    hv.bus.register(0x60, 1, { ioRead: () => ++n, ioWrite: () => {} }, "ctr");
    hv.vcpu().ins(0x60, 1, 0x1003, 4, true);
    expect([...(hv.mem.view(0x1000, 4) as Uint8Array)]).toEqual([4, 3, 2, 1]);
  });

  it("refuses a guest buffer outside RAM before any device sees it", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const dev = new Reg();
    hv.bus.register(0x1f0, 8, dev, "ide");
    expect(() => hv.vcpu().insw(0x1f0, 0x10000, 1)).toThrow(GuestAccessError);
    expect(dev.log).toEqual([]);
    expect(hv.acct.counts.stringIo).toBe(0);
  });

  it("stops at a guest-memory fault when the device model is handed a bad pointer", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const dev = new Reg();
    hv.bus.register(0x1f0, 8, dev, "ide");
    // A request a misbehaving hypervisor could publish: 4 words, the last two beyond RAM.
    hv.ioreqPage.publish(0, IOREQ_TYPE_PIO, 0x1f0, 0xfffc, 4, 2, 1, true, false);
    hv.server.handle(0);
    expect(hv.server.stats.faults).toBe(1);
    expect(hv.server.lastFault?.gpa).toBe(0x10000);
    expect(hv.ioreqPage.state(0)).toBe(STATE_IORESP_READY);
  });
});

describe("buffered ioreqs", () => {
  it("encodes a 2-byte port write 0x0f02 -> 0x3c4 as Xen does (example buf_ioreq_pio_write_2byte_0x3c4)", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const vga = new Reg();
    hv.bus.register(0x3c0, 0x20, vga, "vga", { bufferedWrites: true });
    hv.vcpu().outw(0x3c4, 0x0f02);
    expect(hex(hv.bufPage.slotBytes(0))).toBe("00443c00020f0000");
    expect(vga.log).toEqual([]); // not performed yet: fire-and-forget
    expect(hv.acct.counts.bufferedWrite).toBe(1);
    expect(hv.acct.counts.pioOut).toBe(0);
  });

  it("encodes an 8-byte write as two slots (examples buf_ioreq_timeoffset_8byte_slot0/1)", () => {
    const b = new BufferedIoreqPage();
    expect(b.push(7, 0, 8, 0x89abcdef, 0x01234567)).toBe(true);
    expect(hex(b.slotBytes(0))).toBe("070c0000efcdab89");
    expect(hex(b.slotBytes(1))).toBe("070c000067452301");
    expect(b.writePointer).toBe(2);
    expect(b.pop()).toMatchObject({ type: 7, size: 8, data: 0x89abcdef, dataHi: 0x01234567 });
    expect(b.readPointer).toBe(2);
  });

  it("performs buffered writes before the next synchronous ioreq, in order", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const log: string[] = [];
    hv.bus.register(
      0x3c0,
      0x20,
      { ioRead: () => 0, ioWrite: (p, _s, v) => void log.push(`${p}=${v}`) },
      "vga",
      {
        bufferedWrites: true,
      },
    );
    hv.bus.register(0x80, 1, { ioRead: () => (log.push("sync"), 0), ioWrite: () => {} }, "post");
    const v = hv.vcpu();
    v.outb(0x3c4, 1);
    v.outb(0x3c5, 2);
    v.inb(0x80);
    expect(log).toEqual([`${0x3c4}=1`, `${0x3c5}=2`, "sync"]);
  });

  it("falls back to a synchronous exit when the page is full or the address is too high", () => {
    const b = new BufferedIoreqPage();
    for (let i = 0; i < IOREQ_BUFFER_SLOT_NUM; i++) expect(b.push(0, 0x3c4, 1, i)).toBe(true);
    expect(b.push(0, 0x3c4, 1, 0)).toBe(false); // 511 slots in use
    expect(new BufferedIoreqPage().push(1, 0x100000, 4, 0)).toBe(false); // beyond 20 bits
    // An 8-byte write needs two free slots.
    const c = new BufferedIoreqPage();
    for (let i = 0; i < IOREQ_BUFFER_SLOT_NUM - 1; i++) c.push(0, 0x3c4, 1, i);
    expect(c.push(7, 0, 8, 1, 2)).toBe(false);
  });

  it("keeps working when the free-running pointers wrap past 2^32", () => {
    const b = new BufferedIoreqPage();
    const ptrs = new Uint32Array(b.buffer, 0, 2);
    ptrs[0] = 0xffffffff;
    ptrs[1] = 0xffffffff;
    expect(b.push(0, 0x80, 1, 0x11)).toBe(true);
    expect(b.push(0, 0x80, 1, 0x22)).toBe(true);
    expect(b.writePointer).toBe(1);
    expect(b.pending).toBe(2);
    expect(b.pop()?.data).toBe(0x11);
    expect(b.pop()?.data).toBe(0x22);
    expect(b.pop()).toBeUndefined();
  });
});

describe("a device model that throws", () => {
  it("still gets its slot answered, so the vCPU's next exit works", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    let broken = true;
    hv.bus.register(
      0x1f0,
      8,
      {
        ioRead: () => {
          if (broken) throw new Error("device bug");
          return 0x50;
        },
        ioWrite: () => {},
      },
      "ide",
    );
    const v = hv.vcpu();
    expect(() => v.inb(0x1f7)).toThrow("device bug");
    expect(hv.ioreqPage.state(0)).toBe(STATE_IOREQ_NONE);
    broken = false;
    expect(v.inb(0x1f7)).toBe(0x50);
  });
});
