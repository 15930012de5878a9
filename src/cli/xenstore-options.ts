/**
 * `--xenstore-socket PATH` and its companions, for the commands that build a PV machine: serve the machine's
 * xenstore on a unix socket in xenstored's wire protocol, so Xen's own tools watch and read a live session
 * (`XENSTORED_PATH=PATH xenstore-watch /local/domain`, `xenstore-ls`).
 */

import type { Command } from "commander";
import type { XenstoredSocketServer } from "../hypervisor/xenstored-socket.ts";
import { XenstoredSocketError } from "../hypervisor/xenstored-socket.ts";
import type { Machine } from "../machine/builder.ts";
import { UsageError } from "./errors.ts";

export interface XenstoreFlags {
  xenstoreSocket?: string;
  xenstoreWait?: boolean;
  xenstoreHold?: boolean;
}

export const XENSTORE_SOCKET_OPTION = [
  "--xenstore-socket <path>",
  "serve the PV session's xenstore on a unix socket (XENSTORED_PATH for xenstore-utils)",
] as const;
export const XENSTORE_WAIT_OPTION = [
  "--xenstore-wait",
  "with --xenstore-socket: start the guest only once a client has set a watch",
] as const;
export const XENSTORE_HOLD_OPTION = [
  "--xenstore-hold",
  "with --xenstore-socket: keep serving after the work, until SIGINT or SIGTERM",
] as const;

export function addXenstoreOptions(cmd: Command): Command {
  return cmd
    .option(...XENSTORE_SOCKET_OPTION)
    .option(...XENSTORE_WAIT_OPTION)
    .option(...XENSTORE_HOLD_OPTION);
}

/** Refuse the companions without the socket, before anything is opened. */
export function checkXenstoreFlags(f: XenstoreFlags): void {
  if (!f.xenstoreSocket && (f.xenstoreWait || f.xenstoreHold))
    throw new UsageError(`${f.xenstoreWait ? "--xenstore-wait" : "--xenstore-hold"} needs --xenstore-socket`);
}

/** Listen (and with --xenstore-wait, wait for a watcher) before the guest's drivers start. */
export async function startXenstore(
  machine: Machine,
  f: XenstoreFlags,
): Promise<XenstoredSocketServer | null> {
  if (!f.xenstoreSocket) return null;
  if (!machine.xenstored) throw new UsageError("--xenstore-socket needs a PV disk");
  let server: XenstoredSocketServer;
  try {
    server = await machine.xenstored.listen(f.xenstoreSocket);
  } catch (e) {
    if (e instanceof XenstoredSocketError) throw new UsageError(e.message, 1);
    throw e;
  }
  process.stderr.write(`xenstored: serving on ${f.xenstoreSocket}\n`);
  if (f.xenstoreWait) {
    process.stderr.write(
      `xenstored: waiting for a watch (XENSTORED_PATH=${f.xenstoreSocket} xenstore-watch ...)\n`,
    );
    await server.firstWatch();
  }
  return server;
}

/** With --xenstore-hold: keep the session (and the socket) up until SIGINT, SIGTERM or SIGHUP. */
export async function holdXenstore(f: XenstoreFlags): Promise<void> {
  if (!f.xenstoreSocket || !f.xenstoreHold) return;
  process.stderr.write(`xenstored: holding the session on ${f.xenstoreSocket} until interrupted\n`);
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  await new Promise<void>((resolve) => {
    const done = () => {
      for (const s of signals) process.off(s, done);
      resolve();
    };
    for (const s of signals) process.on(s, done);
  });
}
