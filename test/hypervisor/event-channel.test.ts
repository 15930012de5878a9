import { describe, expect, it } from "vitest";
import {
  DOMID_SELF,
  ECS_FREE,
  ECS_INTERDOMAIN,
  ECS_UNBOUND,
  EventChannelError,
  XenHost,
} from "../../src/hypervisor/index.ts";

const tick = () => new Promise<void>((r) => setImmediate(r));

function pair() {
  const host = new XenHost({ ramSize: 16 * 1024 * 1024 });
  const ev = host.evtchn;
  const fePort = ev.allocUnbound(1, 0);
  const bePort = ev.bindInterdomain(0, 1, fePort);
  return { host, ev, fePort, bePort };
}

describe("event channels", () => {
  it("alloc_unbound + bind_interdomain connect both ends", () => {
    const { ev, fePort, bePort } = pair();
    expect(ev.status(1, fePort)).toEqual({ state: ECS_INTERDOMAIN, remoteDom: 0, remotePort: bePort });
    expect(ev.status(0, bePort)).toEqual({ state: ECS_INTERDOMAIN, remoteDom: 1, remotePort: fePort });
  });

  it("binding refuses a port that is not unbound for the binder", () => {
    const { host, ev, fePort } = pair();
    // Already bound.
    expect(() => ev.bindInterdomain(0, 1, fePort)).toThrow(EventChannelError);
    // Unbound, but reserved for another domain (DOMID_SELF = the guest itself).
    const p = ev.allocUnbound(1, DOMID_SELF);
    expect(ev.status(1, p).remoteDom).toBe(1);
    expect(() => ev.bindInterdomain(0, 1, p)).toThrow(/not unbound for domain 0/);
    expect(() => ev.bindInterdomain(0, 1, 999)).toThrow(EventChannelError);
    expect(() => ev.bindInterdomain(0, 7, 1)).toThrow(/no domain 7/);
    void host;
  });

  it("send sets pending and upcalls once; sends before the upcall coalesce", async () => {
    const { host, ev, fePort, bePort } = pair();
    const got: number[] = [];
    ev.bindHandler(0, bePort, (p) => got.push(p));
    await tick(); // bind_interdomain leaves the new port pending (Xen does): one upcall for that
    got.length = 0;
    const c0 = host.hv.acct.snapshot();
    ev.send(1, fePort);
    ev.send(1, fePort);
    ev.send(1, fePort);
    expect(ev.isPending(0, bePort)).toBe(true);
    expect(got).toEqual([]); // delivery is asynchronous
    await tick();
    expect(got).toEqual([bePort]);
    expect(ev.isPending(0, bePort)).toBe(false);
    const d = host.hv.acct.since(c0);
    expect(d.evtchnNotify).toBe(3);
    expect(d.hypercall).toBe(3);
  });

  it("a masked port stays pending until unmasked", async () => {
    const { ev, fePort, bePort, host } = pair();
    const got: number[] = [];
    ev.bindHandler(0, bePort, (p) => got.push(p));
    await tick();
    got.length = 0;
    ev.mask(0, bePort);
    ev.send(1, fePort);
    await tick();
    expect(got).toEqual([]);
    expect(ev.isPending(0, bePort)).toBe(true);
    const c0 = host.hv.acct.snapshot();
    ev.unmask(0, bePort);
    expect(host.hv.acct.since(c0).hypercall).toBe(1); // EVTCHNOP_unmask only because it was pending
    await tick();
    expect(got).toEqual([bePort]);
    const c1 = host.hv.acct.snapshot();
    ev.mask(0, bePort);
    ev.unmask(0, bePort);
    expect(host.hv.acct.since(c1).hypercall).toBe(0);
  });

  it("close returns the peer to unbound; sends there are dropped", async () => {
    const { ev, fePort, bePort } = pair();
    ev.close(0, bePort);
    expect(ev.status(0, bePort).state).toBe(ECS_FREE);
    expect(ev.status(1, fePort)).toEqual({ state: ECS_UNBOUND, remoteDom: 0, remotePort: 0 });
    expect(() => ev.send(1, fePort)).not.toThrow();
    expect(() => ev.send(0, bePort)).toThrow(EventChannelError);
    // The guest's port can be bound again (reconnect).
    const again = ev.bindInterdomain(0, 1, fePort);
    expect(ev.status(0, again).state).toBe(ECS_INTERDOMAIN);
  });

  it("state lives in shared memory: another view sees and raises the same bits", async () => {
    const { host, ev, fePort, bePort } = pair();
    const other = (await import("../../src/hypervisor/event-channel.ts")).EventChannels.attach(
      host.hv,
      ev.sharedBuffers(),
    );
    other.send(1, fePort);
    expect(ev.isPending(0, bePort)).toBe(true);
  });

  it("an upcall raised by a handler runs in the same delivery, after the handler returns", async () => {
    const { ev, fePort, bePort } = pair();
    const log: string[] = [];
    await tick(); // the bind's pending event, delivered to no handler yet
    ev.bindHandler(0, bePort, () => {
      log.push("back");
      ev.send(0, bePort); // answer: raises the frontend's port
      log.push("back returns");
    });
    ev.bindHandler(1, fePort, () => log.push("front"));
    ev.send(1, fePort);
    void Promise.resolve().then(() => log.push("later microtask"));
    expect(log).toEqual([]); // never inside the sender's call
    await tick();
    // The frontend's upcall is taken by the same drain, not queued behind other microtasks.
    expect(log).toEqual(["back", "back returns", "front", "later microtask"]);
  });

  it("a handler's exception stays uncaught and later upcalls are still delivered", async () => {
    const { ev, fePort, bePort } = pair();
    await tick();
    const errors: unknown[] = [];
    const onErr = (e: unknown) => errors.push(e);
    process.prependListener("uncaughtException", onErr);
    try {
      let n = 0;
      ev.bindHandler(0, bePort, () => {
        n++;
        throw new Error("handler failed");
      });
      const got: number[] = [];
      ev.bindHandler(1, fePort, (p) => got.push(p));
      ev.send(1, fePort);
      ev.send(0, bePort);
      await tick();
      expect(n).toBe(1);
      expect(got).toEqual([fePort]);
      expect(errors).toHaveLength(1);
      ev.send(1, fePort);
      await tick();
      expect(n).toBe(2);
    } finally {
      process.removeListener("uncaughtException", onErr);
    }
  });
});
