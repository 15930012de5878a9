/**
 * The machine behind `xenide qtest`: up to four raw images on the PC's two IDE channels, each through its own
 * storage engine, and a qtest server whose `settle` lets those engines' completions land between input
 * chunks. Used by the CLI command and, in-process, by tests.
 */

import type { CounterKind } from "../hypervisor/accounting.ts";
import { Hypervisor } from "../hypervisor/hypervisor.ts";
import type { Tracer } from "../hypervisor/trace.ts";
import { type DriveConfig, createPc } from "../machine/pc.ts";
import { type EngineKind, makeEngine, openImage } from "../storage/index.ts";
import type { BlockBackend, IoEngine } from "../storage/types.ts";
import { QtestServer } from "./server.ts";

export interface QtestMachineOptions {
  /** Images by QEMU's IDE `index=`: 0 primary master, 1 primary slave, 2 secondary master, 3 secondary slave. */
  images: readonly (string | undefined)[];
  engine?: EngineKind;
  ramSize?: number;
  readOnly?: boolean;
  /** IDENTIFY strings (model and firmware for every drive; serials per drive in index order). */
  model?: string;
  serials?: readonly string[];
  firmware?: string;
  costs?: Partial<Record<CounterKind, number>>;
  tracer?: Tracer | null;
}

export interface QtestMachine {
  hv: Hypervisor;
  server: QtestServer;
  engines: IoEngine[];
  /** Let pending requests finish, close the images. */
  close(): Promise<void>;
}

export function openQtestMachine(opts: QtestMachineOptions): QtestMachine {
  const backends: BlockBackend[] = [];
  const engines: IoEngine[] = [];
  const configs: (DriveConfig | undefined)[] = [];
  let serialIdx = 0;
  try {
    for (let i = 0; i < 4; i++) {
      const img = opts.images[i];
      if (!img) {
        configs.push(undefined);
        continue;
      }
      const b = openImage(img, { readOnly: opts.readOnly === true });
      backends.push(b);
      const engine = makeEngine(b, opts.engine ?? "sync");
      engines.push(engine);
      const cfg: DriveConfig = { engine };
      if (opts.model !== undefined) cfg.model = opts.model;
      const serial = opts.serials?.[serialIdx++];
      if (serial !== undefined) cfg.serial = serial;
      if (opts.firmware !== undefined) cfg.firmware = opts.firmware;
      configs.push(cfg);
    }
  } catch (e) {
    for (const b of backends) b.close();
    throw e;
  }
  const hv = new Hypervisor({
    ramSize: opts.ramSize ?? 128 * 1024 * 1024,
    costs: opts.costs,
    tracer: opts.tracer,
  });
  const channel = (m: DriveConfig | undefined, s: DriveConfig | undefined) => {
    const c: { master?: DriveConfig; slave?: DriveConfig } = {};
    if (m) c.master = m;
    if (s) c.slave = s;
    return c;
  };
  // No firmware ran: BAR4 unassigned and PCI command 0, as QEMU leaves a `-S` machine.
  createPc({
    hv,
    primary: channel(configs[0], configs[1]),
    secondary: channel(configs[2], configs[3]),
  });
  const server = new QtestServer({
    hv,
    vcpu: hv.vcpu(0),
    settle: () => settleEngines(engines),
    busy: () => enginesBusy(engines),
  });
  return {
    hv,
    server,
    engines,
    async close() {
      await settleEngines(engines);
      for (const b of backends) b.close();
    },
  };
}

/** Whether any engine has a request submitted and not yet reaped by its device. */
export function enginesBusy(engines: readonly IoEngine[]): boolean {
  for (const e of engines) if (e.inflight > 0) return true;
  return false;
}

/**
 * Let every engine's submitted requests complete and their completions reach the device model (which reaps
 * them from the engine's onReady callback on the event loop), bounded so a stuck request cannot hang the server.
 */
export async function settleEngines(engines: readonly IoEngine[]): Promise<void> {
  for (let round = 0; round < 10_000; round++) {
    let busy = false;
    for (const e of engines) {
      if (e.inflight > 0) {
        busy = true;
        await e.drain();
      }
    }
    if (!busy) return;
    await new Promise<void>((r) => setImmediate(r));
  }
}
