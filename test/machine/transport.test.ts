/**
 * The ioreq transport seam: the hypervisor hands each READY slot to whatever transport the machine installs.
 * A second implementation (one that decodes the slot before passing it on, as a device model in another
 * process would receive it) must see every synchronous exit and change nothing the guest observes.
 */
import { describe, expect, it } from "vitest";
import { decodeIoreq, IOREQ_TYPE_PIO, STATE_IOREQ_READY } from "../../src/hypervisor/ioreq.ts";
import { buildMachine, type Machine } from "../../src/machine/builder.ts";
import { openAtaPath } from "../../src/machine/disk-path.ts";
import {
  DirectIoreqTransport,
  type IoreqTransport,
  useIoreqTransport,
} from "../../src/machine/ioreq-transport.ts";
import { MemoryBackend } from "../../src/storage/index.ts";

function disk(): MemoryBackend {
  const data = new Uint8Array(256 * 512);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
  return new MemoryBackend(data);
}

/** What a guest sees reading 16 sectors by each transfer method, and what it cost. */
async function workload(m: Machine) {
  const seen: string[] = [];
  for (const via of ["pio", "rep", "dma"] as const) {
    const p = await openAtaPath(m, via);
    seen.push(Buffer.from(await p.read(8, 16)).toString("hex"));
  }
  return { seen, counts: m.hv.acct.snapshot() };
}

class DecodingTransport implements IoreqTransport {
  readonly kinds = new Map<string, number>();
  readonly notReady: number[] = [];
  constructor(
    private readonly inner: IoreqTransport,
    private readonly m: Machine,
  ) {}
  kick(vcpu: number): void {
    const r = decodeIoreq(this.m.hv.ioreqPage.bytes(vcpu));
    if (r.state !== STATE_IOREQ_READY) this.notReady.push(r.state);
    const k = `${r.type === IOREQ_TYPE_PIO ? "pio" : r.type}/${r.dataIsPtr ? "string" : r.dir ? "in" : "out"}`;
    this.kinds.set(k, (this.kinds.get(k) ?? 0) + 1);
    this.inner.kick(vcpu);
  }
}

describe("ioreq transports", () => {
  it("a decoding transport sees every synchronous exit as a READY slot and changes nothing the guest sees", async () => {
    const direct = buildMachine({ ide: [{ position: "primary-master", medium: { backend: disk() } }] });
    const a = await workload(direct);

    const m = buildMachine({ ide: [{ position: "primary-master", medium: { backend: disk() } }] });
    const t = new DecodingTransport(new DirectIoreqTransport(m.hv.server), m);
    useIoreqTransport(m, t);
    const b = await workload(m);

    expect(b.seen).toEqual(a.seen);
    expect(b.counts).toEqual(a.counts);
    expect(t.notReady).toEqual([]);
    expect(t.kinds.get("pio/in")).toBe(a.counts.pioIn);
    expect(t.kinds.get("pio/out") ?? 0).toBe(a.counts.pioOut);
    expect(t.kinds.get("pio/string")).toBe(a.counts.stringIo);
    expect(a.counts.stringIo).toBeGreaterThan(0);

    useIoreqTransport(m, null);
    const before = [...t.kinds.values()].reduce((x, y) => x + y, 0);
    await workload(m);
    expect([...t.kinds.values()].reduce((x, y) => x + y, 0)).toBe(before);
  });
});
