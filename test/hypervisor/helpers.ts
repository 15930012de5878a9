/** What the exit tests share: a hypervisor that records the ioreq slot bytes its device model sees. */
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";

export const hex = (u: Uint8Array) => Buffer.from(u).toString("hex");

/**
 * A hypervisor whose transport records the slot bytes the device model receives and returns. `vpEport` is
 * vCPU 0's; the others keep the ports the hypervisor binds them.
 */
export function recording(ramSize = 1 << 20, vpEport = 5, vcpus = 1) {
  const hv = new Hypervisor({ ramSize, vcpus });
  hv.ioreqPage.setVpEport(0, vpEport);
  const seen: { request: string; response: string }[] = [];
  hv.transport = {
    kick: (v) => {
      const request = hex(hv.ioreqPage.bytes(v));
      hv.server.handle(v);
      seen.push({ request, response: hex(hv.ioreqPage.bytes(v)) });
    },
  };
  return { hv, seen };
}
