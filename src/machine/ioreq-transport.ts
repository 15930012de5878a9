/**
 * How a READY ioreq slot reaches the device model. The hypervisor's default (no transport) calls its
 * in-process ioreq server directly, which keeps the hottest path free of an indirect call; a transport is
 * the seam for a device model elsewhere (QEMU runs as its own process in dom0 and is told of a READY slot
 * through the slot's event channel). `DirectIoreqTransport` is the in-process one made explicit, for
 * composing with wrappers (tracing, recording, a device model on another thread).
 */

import type { Hypervisor, IoreqTransport } from "../hypervisor/hypervisor.ts";
import type { IoreqServer } from "../hypervisor/ioreq-server.ts";

export type { IoreqTransport } from "../hypervisor/hypervisor.ts";

export class DirectIoreqTransport implements IoreqTransport {
  constructor(readonly server: IoreqServer) {}
  kick(vcpu: number): void {
    this.server.handle(vcpu);
  }
}

/** Route the machine's READY slots through `t` (null: back to the direct in-process call). */
export function useIoreqTransport(machine: { hv: Hypervisor }, t: IoreqTransport | null): void {
  machine.hv.transport = t;
}
