/**
 * `xenide xenstored --socket PATH`: xenide's xenstore as a daemon on a unix socket, speaking xenstored's wire
 * protocol (xs_wire.h), so Xen's tools (`xenstore-ls`, `-read`, `-write`, `-watch`, ..., python3-pyxs) use it
 * as they use C xenstored. Clients of `--socket` act for dom0; `--guest-socket DOMID=PATH` opens a socket whose
 * clients act for a guest domain, to see the store as that guest does (its permissions, its quotas).
 */
import type { Command } from "commander";
import { XenStore } from "../../hypervisor/xenstore.ts";
import { Xenstored } from "../../hypervisor/xenstored.ts";
import { XenstoredSocketError, XenstoredSocketServer } from "../../hypervisor/xenstored-socket.ts";
import { UsageError } from "../errors.ts";

const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function register(program: Command): void {
  program
    .command("xenstored")
    .description("serve a xenstore on a unix socket in xenstored's wire protocol (for xenstore-utils, pyxs)")
    .requiredOption("--socket <path>", "the socket dom0's tools connect to (their XENSTORED_PATH)")
    .option(
      "--guest-socket <domid=path>",
      "another socket whose clients act for guest DOMID (repeatable)",
      collect,
      [],
    )
    .action(async (o: { socket: string; guestSocket: string[] }) => {
      const guests = o.guestSocket.map((g) => {
        const m = /^(\d{1,5})=(.+)$/.exec(g);
        const dom = m ? Number(m[1]) : NaN;
        if (!m || !(dom >= 1 && dom < 0x7ff0))
          throw new UsageError(`--guest-socket expects DOMID=PATH with DOMID 1..32751, got '${g}'`);
        return { dom, path: m[2]! };
      });
      const store = new XenStore();
      // What xen-init-dom0 writes at boot.
      const d0 = store.connect(0);
      d0.write("/local/domain/0/name", "Domain-0");
      d0.write("/local/domain/0/domid", "0");
      const daemon = new Xenstored(store);
      const servers: XenstoredSocketServer[] = [];
      const closeAll = () => Promise.all(servers.map((s) => s.close()));
      try {
        servers.push(await XenstoredSocketServer.listen(daemon, o.socket));
        for (const g of guests)
          servers.push(await XenstoredSocketServer.listen(daemon, g.path, { dom: g.dom }));
      } catch (e) {
        await closeAll();
        if (e instanceof XenstoredSocketError) throw new UsageError(e.message, 1);
        throw e;
      }
      process.stderr.write(`xenstored: serving on ${[o.socket, ...guests.map((g) => g.path)].join(", ")}\n`);
      const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
      await new Promise<void>((resolve) => {
        const done = () => {
          for (const s of signals) process.off(s, done);
          resolve();
        };
        for (const s of signals) process.on(s, done);
      });
      await closeAll();
    });
}
