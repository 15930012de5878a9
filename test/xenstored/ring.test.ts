/**
 * The guest's xenstore ring (xs_wire.h `struct xenstore_domain_interface`): blkfront negotiating over it as a
 * domU does, permissions and watches seen from a guest's ring, and a malicious guest writing garbage, wrong
 * indices and oversized messages into its own ring: its connection is cut off (`error` set as xs_wire.h
 * defines), nothing throws, and the other guest's xenstore keeps working.
 */
import { describe, expect, it } from "vitest";
import { Domain } from "../../src/hypervisor/domain.ts";
import { GuestRam } from "../../src/hypervisor/memory.ts";
import { XenHost } from "../../src/hypervisor/xen-host.ts";
import { XenStoreError } from "../../src/hypervisor/xenstore.ts";
import { xenstoredOf } from "../../src/hypervisor/xenstored-host.ts";
import {
  XENSTORE_ERROR_COMM,
  XENSTORE_ERROR_NONE,
  XENSTORE_ERROR_PROTO,
  XENSTORE_ERROR_RINGIDX,
  XENSTORE_SERVER_FEATURE_ERROR,
  XS_RING_ERROR,
  XS_RING_REQ,
  XS_RING_REQ_CONS,
  XS_RING_REQ_PROD,
  XS_RING_RSP_CONS,
  XS_RING_RSP_PROD,
  XS_RING_SERVER_FEATURES,
} from "../../src/hypervisor/xenstore-ring.ts";
import { encodeXsMessage, xsStrings, XsType } from "../../src/hypervisor/xs-wire.ts";
import { buildMachine } from "../../src/machine/builder.ts";
import { connectBlkfront } from "../../src/machine/pv.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { XsRingClient } from "../../src/xenblk/xs-ring-client.ts";

const tick = () => new Promise<void>((r) => setImmediate(r));

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof XenStoreError) return e.code;
    throw e;
  }
  return undefined;
}

/** A host with guests 1 (the hypervisor's RAM) and 2 (its own RAM), each with its xenstore ring. */
function twoGuests() {
  const host = new XenHost({ ramSize: 32 << 20 });
  host.addDomain(new Domain({ id: 2, name: "guest2", mem: new GuestRam(4 << 20) }));
  const xsd = xenstoredOf(host);
  const p1 = xsd.setupGuest(1);
  const p2 = xsd.setupGuest(2);
  return { host, xsd, p1, p2, g1: XsRingClient.connect(host, 1, p1), g2: XsRingClient.connect(host, 2, p2) };
}

/** The bytes of domain `dom`'s ring page. */
function pageOf(host: XenHost, dom: number, gfn: number): DataView {
  const v = host.domain(dom).mem!.view(gfn * 4096, 4096) as Uint8Array;
  return new DataView(v.buffer, v.byteOffset, 4096);
}

describe("the guest's xenstore ring", () => {
  it("carries blkfront's negotiation: the disk connects and reads, every byte through the ring", async () => {
    const disk = new MemoryBackend(64);
    disk.data.set(new TextEncoder().encode("over the ring"), 5 * 512);
    const machine = buildMachine({ pc: false, pv: [{ medium: { backend: disk } }] });
    try {
      const front = await connectBlkfront(machine, { xenstoreRing: true });
      const buf = await front.read(5, 1);
      expect(new TextDecoder().decode(buf.subarray(0, 13))).toBe("over the ring");
      const ring = machine.xenstored!.ring(1)!;
      expect(ring.failure).toBeNull();
      // xenstored took every request and the guest every reply: both rings are empty, and many bytes passed.
      const gfn = machine.xenstored!.setupGuest(1).gfn;
      const dv = pageOf(machine.xen!, 1, gfn);
      const u32 = (o: number) => dv.getUint32(o, true);
      expect(u32(XS_RING_REQ_PROD)).toBeGreaterThan(1000);
      expect(u32(XS_RING_REQ_CONS)).toBe(u32(XS_RING_REQ_PROD));
      expect(u32(XS_RING_RSP_CONS)).toBe(u32(XS_RING_RSP_PROD));
      expect(u32(XS_RING_SERVER_FEATURES)).toBe(XENSTORE_SERVER_FEATURE_ERROR);
      // The keys blkfront wrote over the ring are in the store.
      expect(machine.xen!.xs(0).read(`${machine.pv[0]!.paths.frontend}/state`)).toBe("4");
      await front.shutdown();
    } finally {
      await machine.close();
    }
  });

  it("applies permissions, watches and transactions to a guest on its ring", async () => {
    const { host, g1, g2 } = twoGuests();
    g1.write("data/secret", "one");
    expect(g1.read("/local/domain/1/data/secret")).toBe("one");
    expect(code(() => g2.read("/local/domain/1/data/secret"))).toBe("EACCES");
    expect(code(() => g2.write("/local/domain/1/data/x", "y"))).toBe("EACCES");
    expect(code(() => g2.read("missing"))).toBe("ENOENT");
    expect(g2.getDomainPath(2)).toBe("/local/domain/2");
    g1.setPerms("data/secret", [
      { dom: 1, perm: "n" },
      { dom: 2, perm: "r" },
    ]);
    expect(g2.read("/local/domain/1/data/secret")).toBe("one");
    expect(g1.directory("data")).toEqual(["secret"]);

    // A watch fires once on registration and then on changes, delivered through the ring.
    const events: string[] = [];
    g1.watch("/local/domain/1/data", "tok", (p) => events.push(p));
    await tick();
    host.xs(0).write("/local/domain/1/data/from-dom0", "z");
    await tick();
    await tick();
    expect(events).toEqual(["/local/domain/1/data", "/local/domain/1/data/from-dom0"]);

    // A transaction conflicts when dom0 changes what it read, and the retry helper runs it again.
    const t = g1.transactionStart();
    g1.read("data/secret", t);
    host.xs(0).write("/local/domain/1/data/secret", "changed");
    g1.write("data/secret", "mine", t);
    expect(code(() => g1.transactionEnd(t))).toBe("EAGAIN");
    let runs = 0;
    g1.transaction((tx) => {
      runs++;
      g1.write("data/secret", `${g1.read("data/secret", tx)}+1`, tx);
    });
    expect(runs).toBe(1);
    expect(g1.read("data/secret")).toBe("changed+1");
    // xenstored's quota: ten open transactions per domain.
    const open = Array.from({ length: 10 }, () => g2.transactionStart());
    expect(code(() => g2.transactionStart())).toBe("ENOSPC");
    for (const tx of open) g2.transactionEnd(tx, false);
  });

  it("survives a malicious guest writing garbage into its ring, and serves the other guest meanwhile", async () => {
    let seed = 0x5eed1234;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const { host, xsd, g1 } = twoGuests();
    const kinds = { garbage: 0, indices: 0, oversized: 0, rspIndices: 0, valid: 0 };
    for (let round = 0; round < 200; round++) {
      // A fresh ring for domain 2 each round (released and introduced again, as after a guest reboot).
      if (round > 0) xsd.release(2);
      const p = xsd.setupGuest(2);
      const dv = pageOf(host, 2, p.gfn);
      const bytes = new Uint8Array(dv.buffer, dv.byteOffset, 4096);
      const cons = dv.getUint32(XS_RING_REQ_CONS, true);
      const kind = (["garbage", "indices", "oversized", "rspIndices", "valid"] as const)[rand(5)]!;
      kinds[kind]++;
      let expectError: number | null = null;
      if (kind === "garbage") {
        const n = rand(1025);
        for (let i = 0; i < 1024; i++) bytes[XS_RING_REQ + i] = rand(256);
        dv.setUint32(XS_RING_REQ_PROD, cons + n, true);
      } else if (kind === "indices") {
        dv.setUint32(XS_RING_REQ_PROD, cons + 1025 + rand(0xffff_0000), true);
        expectError = XENSTORE_ERROR_RINGIDX;
      } else if (kind === "oversized") {
        const m = encodeXsMessage({ type: XsType.WRITE, reqId: 1, txId: 0, payload: new Uint8Array(0) });
        new DataView(m.buffer).setUint32(12, 4097 + rand(100_000), true);
        bytes.set(m, XS_RING_REQ);
        dv.setUint32(XS_RING_REQ_PROD, cons + 16, true);
        expectError = XENSTORE_ERROR_PROTO;
      } else {
        // XS_WRITE "path\0value": the value has no terminating NUL.
        const payload = new TextEncoder().encode(`k${round}\0v`);
        const m = encodeXsMessage({ type: XsType.WRITE, reqId: 7, txId: 0, payload });
        bytes.set(m, XS_RING_REQ);
        dv.setUint32(XS_RING_REQ_PROD, cons + m.length, true);
        if (kind === "rspIndices") {
          // The reply cannot be written: the guest claims to have consumed replies never produced.
          dv.setUint32(XS_RING_RSP_CONS, 5000 + rand(1000), true);
          expectError = XENSTORE_ERROR_RINGIDX;
        }
      }
      host.evtchn.send(2, p.port);
      await tick();
      const ring = xsd.ring(2)!;
      if (expectError !== null) {
        expect(dv.getUint32(XS_RING_ERROR, true)).toBe(expectError);
        expect(ring.failure).not.toBeNull();
      }
      if (kind === "valid") {
        expect(ring.failure).toBeNull();
        expect(host.xs(0).read(`/local/domain/2/k${round}`)).toBe("v");
        expect(dv.getUint32(XS_RING_ERROR, true)).toBe(XENSTORE_ERROR_NONE);
      }
      // Whatever domain 2 did, domain 1's xenstore works.
      g1.write("alive", String(round));
      expect(g1.read("alive")).toBe(String(round));
    }
    expect(Object.values(kinds).every((n) => n > 10)).toBe(true);
  });

  it("gives up on a guest that never reads its responses, without holding its events unbounded", async () => {
    const { host, xsd, p2, g1 } = twoGuests();
    const dv = pageOf(host, 2, p2.gfn);
    const bytes = new Uint8Array(dv.buffer, dv.byteOffset, 4096);
    // XS_WATCH on its home, written straight into the ring; the guest then never consumes a response.
    const m = encodeXsMessage({
      type: XsType.WATCH,
      reqId: 1,
      txId: 0,
      payload: xsStrings("/local/domain/2", "t"),
    });
    bytes.set(m, XS_RING_REQ + dv.getUint32(XS_RING_REQ_PROD, true));
    dv.setUint32(XS_RING_REQ_PROD, dv.getUint32(XS_RING_REQ_PROD, true) + m.length, true);
    host.evtchn.send(2, p2.port);
    await tick();
    for (let i = 0; i < 2000; i++) host.xs(0).write(`/local/domain/2/k`, String(i));
    await tick();
    expect(dv.getUint32(XS_RING_ERROR, true)).toBe(XENSTORE_ERROR_COMM);
    expect(xsd.ring(2)!.failure).toMatch(/not read/);
    g1.write("still", "here");
    expect(g1.read("still")).toBe("here");
  });
});
