/**
 * The neighbour domain of the PV ring fuzzing (test/fuzz/pv-peer.ts) must be able to fail: its foreign refs are
 * live in its own table and refused in domain 1's, its I/O rounds complete and check their data, and a single
 * byte changed in its RAM or on its disk outside its own I/O is reported.
 */
import { expect, it } from "vitest";
import { DOM0, GNTMAP_host_map, GNTST_okay, XenHost } from "../../src/hypervisor/index.ts";
import { tick } from "../xenblk/helpers.ts";
import { PEER_DOM, PeerGuest, PeerIsolationError } from "../support/fuzz/pv-peer.ts";

async function peerOnHost(async: boolean) {
  const host = new XenHost({ ramSize: 512 * 1024 });
  const table = host.guestGrantTable(1, 8).table;
  const peer = await PeerGuest.attach(host, async, table);
  return { host, peer };
}

it("the foreign refs map from domain 2 and are refused as domain 1's", async () => {
  const { host, peer } = await peerOnHost(false);
  const grants = host.grants(DOM0);
  for (const ref of peer.foreignRefs) {
    const [as1] = grants.mapBatch([{ dom: 1, ref, flags: GNTMAP_host_map }]);
    expect(as1!.status).not.toBe(GNTST_okay);
    const [as2] = grants.mapBatch([{ dom: PEER_DOM, ref, flags: GNTMAP_host_map }]);
    // The canary grants and the ring (mapped by its blkback too) are live in domain 2's table. The read-only
    // canary refuses a writable map: that is still "live", only read-only.
    if (as2!.status === GNTST_okay) grants.unmapBatch([as2!.handle]);
    else expect(ref).toBe(peer.foreignRefs[1]);
  }
});

for (const async of [false, true]) {
  it(`rounds complete and any stray byte in domain 2's RAM or disk is reported (${async ? "async" : "sync"})`, async () => {
    const { peer } = await peerOnHost(async);
    for (let n = 1; n <= 20; n++) {
      peer.startRound(n);
      await peer.finish(tick);
      peer.checkUntouched(`round ${n}`, false);
      peer.checkUntouched(`after round ${n}`, true);
    }
    expect(peer.stats.rounds).toBe(20);
    expect(peer.stats.sectorsWritten).toBeGreaterThan(20);

    // A byte of RAM outside the canary pages (only the whole-RAM check sees it).
    const at = 0x3_0000 + 17;
    peer.ram.u8[at]! ^= 0x01;
    expect(() => peer.checkUntouched("stray RAM write", true)).toThrow(PeerIsolationError);
    peer.ram.u8[at]! ^= 0x01;
    peer.checkUntouched("restored", true);

    // A byte of a canary page: seen after a round too.
    peer.ram.u8[peer.canaryGpa + 4096 + 9]! ^= 0xff;
    expect(() => peer.checkUntouched("stray canary write", false)).toThrow(/granted to dom0 but never used/);
    peer.ram.u8[peer.canaryGpa + 4096 + 9]! ^= 0xff;

    // A byte on its disk.
    peer.disk.data[200 * 512 + 3]! ^= 0x80;
    expect(() => peer.checkUntouched("stray disk write", false)).toThrow(/its disk changed at sector 200/);
    peer.disk.data[200 * 512 + 3]! ^= 0x80;
    peer.checkUntouched("restored", true);
  });
}
