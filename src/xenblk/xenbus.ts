/**
 * Xenbus helpers shared by split drivers (Linux drivers/xen/xenbus/xenbus_client.c in spirit): state switches,
 * waiting for the other end's state through a watch, fatal errors, and the toolstack's device setup
 * (libxl `device_disk_add`): the two directories, their ownership and the keys written before any driver runs.
 */

import type { XenHost } from "../hypervisor/xen-host.ts";
import type { XsClient } from "../hypervisor/xenstore.ts";
import { XenbusState, type XenbusStateValue } from "./abi.ts";

export { XenbusState, type XenbusStateValue };

export const XENBUS_STATE_NAMES = [
  "Unknown",
  "Initialising",
  "InitWait",
  "Initialised",
  "Connected",
  "Closing",
  "Closed",
  "Reconfiguring",
  "Reconfigured",
] as const;

/** xenbus_read_driver_state: the `state` key of a device directory (Unknown if missing or garbage). */
export function readState(xs: XsClient, dir: string): number {
  return xs.readInt(`${dir}/state`) ?? XenbusState.Unknown;
}

/** xenbus_switch_state: write our `state` key (a write, so the other end's watch fires). */
export function switchState(xs: XsClient, dir: string, state: XenbusStateValue): void {
  xs.write(`${dir}/state`, String(state));
}

/** xenbus_dev_fatal: record the error under /local/domain/<dom>/error/<dir> and move to Closing. */
export function devFatal(xs: XsClient, dir: string, message: string): void {
  try {
    const rel = dir.replace(/^\/local\/domain\/\d+\//, "");
    xs.write(`/local/domain/${xs.dom}/error/${rel}/error`, message);
  } catch {
    // Best effort, as in Linux: the state change below is what the other end acts on.
  }
  switchState(xs, dir, XenbusState.Closing);
}

export class XenbusTimeoutError extends Error {
  constructor(path: string, ms: number) {
    super(`timed out after ${ms} ms waiting on ${path}`);
    this.name = "XenbusTimeoutError";
  }
}

let tokenSeq = 0;

/**
 * Watch a `state` key and resolve with its value once `pred` accepts it (the first check happens on the watch's
 * initial event, so a state reached before the call is seen). Rejects after `timeoutMs`.
 */
export function waitForState(
  xs: XsClient,
  dir: string,
  pred: (state: number) => boolean,
  timeoutMs = 10_000,
): Promise<number> {
  const path = `${dir}/state`;
  const token = `wait-state-${++tokenSeq}`;
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => finish(() => reject(new XenbusTimeoutError(path, timeoutMs))), timeoutMs);
    const finish = (f: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        xs.unwatch(path, token);
      } catch {
        /* already gone */
      }
      f();
    };
    xs.watch(path, token, () => {
      if (done) return;
      const s = readState(xs, dir);
      if (pred(s)) finish(() => resolve(s));
    });
  });
}

/** The two directories of one virtual block device. */
export interface VbdPaths {
  frontend: string;
  backend: string;
}

export function vbdPaths(frontDom: number, backDom: number, devid: number, type = "vbd"): VbdPaths {
  return {
    frontend: `/local/domain/${frontDom}/device/vbd/${devid}`,
    backend: `/local/domain/${backDom}/backend/${type}/${frontDom}/${devid}`,
  };
}

/** xvda = 202<<8 | 0<<4 (docs/misc/vbd-interface.txt). */
export const XVDA = 51712;

/** `virtual-device` number of xvd<letter> for disks 0..15 (202<<8 | disk<<4). */
export function xvdDevid(disk: number): number {
  if (!(Number.isInteger(disk) && disk >= 0 && disk < 16)) throw new RangeError(`xvd disk index ${disk}`);
  return (202 << 8) | (disk << 4);
}

export interface ToolstackDiskOptions {
  frontDom: number;
  backDom?: number;
  devid?: number;
  /** "w" or "r" (the backend key `mode`). */
  mode?: "w" | "r";
  /** Backend key `params` (what the disk is), e.g. "aio:/path/disk.img". */
  params?: string;
  /** Backend key `discard-enable` (default true). */
  discardEnable?: boolean;
  /** Backend type directory: "vbd" (Linux blkback) or "qdisk". */
  type?: string;
}

/**
 * The toolstack's part (libxl `device_disk_add`), before any driver runs: the backend directory owned by the
 * backend domain and readable by the frontend, the frontend directory owned by the guest and readable by the
 * backend, and their initial keys, both ends in state Initialising.
 */
export function toolstackAddDisk(host: XenHost, o: ToolstackDiskOptions): VbdPaths {
  const back = o.backDom ?? 0;
  const devid = o.devid ?? XVDA;
  const type = o.type ?? "vbd";
  const p = vbdPaths(o.frontDom, back, devid, type);
  const xs = host.xs(0);
  const name =
    devid >= 202 << 8 && devid < (202 << 8) + 256
      ? `xvd${String.fromCharCode(97 + ((devid >> 4) & 15))}`
      : `${devid}`;
  xs.transaction((t) => {
    xs.mkdir(p.backend, t);
    xs.setPerms(
      p.backend,
      [
        { dom: back, perm: "n" },
        { dom: o.frontDom, perm: "r" },
      ],
      t,
    );
    xs.write(`${p.backend}/frontend`, p.frontend, t);
    xs.write(`${p.backend}/frontend-id`, String(o.frontDom), t);
    xs.write(`${p.backend}/online`, "1", t);
    xs.write(`${p.backend}/removable`, "0", t);
    xs.write(`${p.backend}/bootable`, "1", t);
    xs.write(`${p.backend}/state`, String(XenbusState.Initialising), t);
    xs.write(`${p.backend}/dev`, name, t);
    xs.write(`${p.backend}/type`, "phy", t);
    xs.write(`${p.backend}/mode`, o.mode ?? "w", t);
    xs.write(`${p.backend}/device-type`, "disk", t);
    xs.write(`${p.backend}/params`, o.params ?? "", t);
    xs.write(`${p.backend}/discard-enable`, o.discardEnable === false ? "0" : "1", t);
    xs.mkdir(p.frontend, t);
    xs.setPerms(
      p.frontend,
      [
        { dom: o.frontDom, perm: "n" },
        { dom: back, perm: "r" },
      ],
      t,
    );
    xs.write(`${p.frontend}/backend`, p.backend, t);
    xs.write(`${p.frontend}/backend-id`, String(back), t);
    xs.write(`${p.frontend}/state`, String(XenbusState.Initialising), t);
    xs.write(`${p.frontend}/virtual-device`, String(devid), t);
    xs.write(`${p.frontend}/device-type`, "disk", t);
  });
  return p;
}
