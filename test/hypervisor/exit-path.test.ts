/**
 * The port-exit path writes and reads the ioreq slot with literal offsets and whole 32-bit words
 * (`SharedIoreqPage.publishPio`, `take`, `step`, `data32`, `setData32`). Its bytes must be exactly those of the
 * general encoder, whose offsets are the named fields of Xen 4.17's `ioreq_t` (xen/include/public/hvm/ioreq.h):
 * addr u64 @0, data u64 @8, count u32 @16, size u32 @20, vp_eport u32 @24, _pad0 @28, flags byte @30 (state:4,
 * data_is_ptr:1, dir:1, df:1), type @31. The expected strings below are laid out field by field from that header.
 */
import { describe, expect, it } from "vitest";
import type { AccessSize, PortIoDevice } from "../../src/hypervisor/bus.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import {
  decodeIoreq,
  IOREQ_READ,
  IOREQ_TYPE_PIO,
  IOREQ_WRITE,
  IoreqStateError,
  SharedIoreqPage,
  STATE_IOREQ_INPROCESS,
  STATE_IOREQ_NONE,
  STATE_IOREQ_READY,
  STATE_IORESP_READY,
} from "../../src/hypervisor/ioreq.ts";
import { hex, recording } from "./helpers.ts";

/** A device that answers every read with `value` and records what it is asked. */
class Reg implements PortIoDevice {
  value = 0;
  log: string[] = [];
  ioRead(port: number, size: AccessSize): number {
    this.log.push(`r${size}@${port.toString(16)}`);
    return this.value;
  }
  ioWrite(port: number, size: AccessSize, value: number): void {
    this.log.push(`w${size}@${port.toString(16)}=${value.toString(16)}`);
  }
}

const u32le = (v: number) => hex(new Uint8Array(new Uint32Array([v >>> 0]).buffer));

/** The 32 bytes of a one-item PIO ioreq, field by field (hvm/ioreq.h). */
function slot(port: number, data: number, size: number, vpEport: number, flags: number): string {
  return (
    u32le(port) +
    u32le(0) +
    u32le(data) +
    u32le(0) +
    u32le(1) +
    u32le(size) +
    u32le(vpEport) +
    "0000" +
    hex(Uint8Array.of(flags, IOREQ_TYPE_PIO))
  );
}

describe("the port-exit encoder against the general one", () => {
  for (const atomic of [false, true]) {
    it(`publishPio writes the bytes publish writes, for IN and OUT of 1, 2 and 4 bytes on any vCPU (atomic ${atomic})`, () => {
      const a = new SharedIoreqPage();
      const b = new SharedIoreqPage();
      a.atomic = atomic;
      b.atomic = atomic;
      for (const vcpu of [0, 1, 5, 127]) {
        a.setVpEport(vcpu, vcpu + 1);
        b.setVpEport(vcpu, vcpu + 1);
        for (const dir of [IOREQ_READ, IOREQ_WRITE] as const) {
          for (const size of [1, 2, 4]) {
            const port = 0x1f0 + vcpu;
            const data = dir === IOREQ_READ ? 0 : 0xfedcba98 >>> (32 - size * 8);
            a.publishPio(vcpu, port, size, dir, data);
            b.publish(vcpu, IOREQ_TYPE_PIO, port, data, 1, size, dir, false, false);
            expect(hex(a.bytes(vcpu))).toBe(hex(b.bytes(vcpu)));
            expect(a.state(vcpu)).toBe(STATE_IOREQ_READY);
            // Back to NONE through the same steps the exit takes.
            expect(a.take(vcpu) >>> 24).toBe(IOREQ_TYPE_PIO);
            expect(a.state(vcpu)).toBe(STATE_IOREQ_INPROCESS);
            a.step(vcpu, STATE_IOREQ_INPROCESS);
            expect(a.state(vcpu)).toBe(STATE_IORESP_READY);
            a.step(vcpu, STATE_IORESP_READY);
            b.setState(vcpu, STATE_IOREQ_INPROCESS);
            b.setState(vcpu, STATE_IORESP_READY);
            b.setState(vcpu, STATE_IOREQ_NONE);
            expect(hex(a.bytes(vcpu))).toBe(hex(b.bytes(vcpu)));
          }
        }
      }
      // Nothing outside the four slots was touched.
      const others = [...a.u8].filter((x, i) => x !== 0 && ![0, 1, 5, 127].includes(i >> 5));
      expect(others).toEqual([]);
    });
  }

  it("IN AX, 0x1f0 and OUT 0x1f2, EAX on vCPU 1: the request and response bytes, field by field", () => {
    const { hv, seen } = recording(1 << 16, 5, 2);
    const dev = new Reg();
    dev.value = 0x12345678; // wider than the access: the bus keeps the low 2 bytes
    hv.bus.register(0x1f0, 8, dev, "ide");
    expect(hv.vcpu(1).inw(0x1f0)).toBe(0x5678);
    hv.vcpu(1).outl(0x1f2, 0xdeadbeef);
    // vp_eport of vCPU 1 is 2 (set as Xen's hvm_update_ioreq_evtchn does); flags = state | dir<<5.
    expect(seen[0]!.request).toBe(slot(0x1f0, 0, 2, 2, 0x21));
    expect(seen[0]!.response).toBe(slot(0x1f0, 0x5678, 2, 2, 0x23));
    expect(seen[1]!.request).toBe(slot(0x1f2, 0xdeadbeef, 4, 2, 0x01));
    expect(seen[1]!.response).toBe(slot(0x1f2, 0xdeadbeef, 4, 2, 0x03));
    expect(dev.log).toEqual(["r2@1f0", "w4@1f2=deadbeef"]);
    expect(hv.ioreqPage.state(1)).toBe(STATE_IOREQ_NONE);
    expect(hv.acct.counts.pioIn).toBe(1);
    expect(hv.acct.counts.pioOut).toBe(1);
    expect(hv.server.stats.handled).toBe(2);
  });

  it("the same exits through an atomic page give the same bytes", () => {
    const run = (atomic: boolean) => {
      const { hv, seen } = recording();
      hv.ioreqPage.atomic = atomic;
      const dev = new Reg();
      dev.value = 0xa5;
      hv.bus.register(0x60, 4, dev, "kbd");
      const got = [hv.vcpu().inb(0x60), hv.vcpu().inl(0x60)];
      hv.vcpu().outw(0x62, 0x1234);
      return { got, seen, log: dev.log };
    };
    const plain = run(false);
    expect(run(true)).toEqual(plain);
    expect(plain.got).toEqual([0xa5, 0xa5]);
  });

  it("unclaimed ports float high at every width and drop writes", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    const v = hv.vcpu();
    expect([v.inb(0x2f8), v.inw(0x2f8), v.inl(0x2f8)]).toEqual([0xff, 0xffff, 0xffffffff]);
    v.outl(0x2f8, 0x12345678);
    expect(hv.ioreqPage.state(0)).toBe(STATE_IOREQ_NONE);
    expect(hv.acct.counts.pioIn + hv.acct.counts.pioOut).toBe(4);
  });

  it("a device whose read throws still gets its slot answered (all-ones) and returned to NONE", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    hv.bus.register(
      0x80,
      1,
      {
        ioRead: () => {
          throw new Error("device bug");
        },
        ioWrite: () => {},
      },
      "bad",
    );
    expect(() => hv.vcpu().inb(0x80)).toThrow(/device bug/);
    expect(decodeIoreq(hv.ioreqPage.u8, 0)).toMatchObject({ data: 0xff, state: STATE_IOREQ_NONE });
    // The vCPU is not wedged: the next exit goes through.
    hv.bus.unregister(0x80);
    expect(hv.vcpu().inb(0x80)).toBe(0xff);
  });

  it("take and step refuse a slot in the wrong state or out of the page", () => {
    const p = new SharedIoreqPage();
    expect(() => p.take(0)).toThrow(IoreqStateError); // NONE, not READY
    p.publishPio(0, 0x70, 1, IOREQ_READ, 0);
    expect(() => p.publishPio(0, 0x70, 1, IOREQ_READ, 0)).toThrow(IoreqStateError); // busy
    expect(() => p.step(0, STATE_IOREQ_INPROCESS)).toThrow(IoreqStateError); // READY, not INPROCESS
    p.take(0);
    expect(() => p.take(0)).toThrow(IoreqStateError);
    expect(() => p.take(128)).toThrow(RangeError);
    expect(() => p.step(-1, STATE_IOREQ_NONE)).toThrow(RangeError);
    expect(() => p.publishPio(128, 0x70, 1, IOREQ_READ, 0)).toThrow(RangeError);
  });
});

describe("interrupt already pending", () => {
  it("irqPending lands pending buffered writes first, then reports the line as waitIrq would find it", () => {
    const hv = new Hypervisor({ ramSize: 1 << 16 });
    // A device whose buffered write raises IRQ 5: only visible once the buffered page is drained.
    hv.bus.register(0x3c0, 0x20, { ioRead: () => 0, ioWrite: (_p, _s, v) => hv.irq.set(5, v !== 0) }, "vga", {
      bufferedWrites: true,
    });
    const v = hv.vcpu();
    v.outb(0x3c4, 1);
    expect(hv.bufPage.pending).toBe(1);
    expect(v.irqRaised(5)).toBe(false);
    expect(v.irqPending(5)).toBe(true);
    expect(hv.bufPage.pending).toBe(0);
    v.outb(0x3c4, 0);
    expect(v.irqPending(5)).toBe(false);
  });
});
