/**
 * A live PV session watched with Xen's own `xenstore-watch` over xenide's xenstored socket: the watch is set
 * before the guest starts, and sees blkfront (over the guest's xenstore ring) and blkback publish their keys
 * and walk their xenbus states; `xenstore-ls` reads the connected device's keys.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildMachine } from "../../src/machine/builder.ts";
import { connectBlkfront } from "../../src/machine/pv.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { requireTools, runTool, tempDir, toolsMissing } from "./support.ts";

const reason = toolsMissing(false);
requireTools("the live negotiation under xenstore-watch", reason);

(reason ? describe.skip : describe)("xenstore-watch on a live PV negotiation", () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it("sees blkfront and blkback walk Initialised -> Connected -> Closing -> Closed", async () => {
    const sock = join(tmp.dir, "xs.sock");
    const machine = buildMachine({ pc: false, pv: [{ medium: { backend: new MemoryBackend(2048) } }] });
    let watch: ReturnType<typeof spawn> | undefined;
    try {
      await machine.xenstored!.listen(sock);
      watch = spawn("xenstore-watch", ["/local/domain"], {
        env: { ...process.env, XENSTORED_PATH: sock },
      });
      let out = "";
      const lines = () => out.split("\n").filter(Boolean);
      watch.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      const until = async (pred: () => boolean, what: string) => {
        for (let i = 0; i < 400 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
        if (!pred()) throw new Error(`timed out waiting for ${what}; watch saw:\n${out}`);
      };
      // The registration event: the watch is in place before the guest starts.
      await until(() => lines().length >= 1, "the registration event");
      expect(lines()).toEqual(["/local/domain"]);

      const front = await connectBlkfront(machine, { xenstoreRing: true });
      const { frontend, backend } = machine.pv[0]!.paths;
      // While connected, the tools read both ends' keys.
      const ls = await runTool(sock, "xenstore-ls", [frontend]);
      expect(ls.stdout).toMatch(/^state = "4"$/m);
      expect(ls.stdout).toMatch(/^ring-ref = "\d+"$/m);
      expect((await runTool(sock, "xenstore-read", [`${backend}/state`, `${backend}/sectors`])).stdout).toBe(
        "4\n2048\n",
      );
      await front.shutdown();
      await until(() => lines().filter((l) => l.endsWith("/state")).length >= 7, "the state changes");
      watch.kill();

      const seen = lines().slice(1);
      const states = seen
        .filter((l) => l.endsWith("/state"))
        .map((l) => (l.startsWith(frontend) ? "front" : "back"));
      // Who changed state, in order: blkfront Initialised, blkback Connected, blkfront Connected; at shutdown
      // blkfront Closing, blkback Closing, blkfront Closed, blkback Closed (the xenbus close handshake).
      expect(states).toEqual(["front", "back", "front", "front", "back", "front", "back"]);
      // blkfront's ring keys are published before its first state change, blkback's sectors before Connected.
      const idx = (p: string) => seen.indexOf(p);
      expect(idx(`${frontend}/ring-ref`)).toBeGreaterThanOrEqual(0);
      expect(idx(`${frontend}/ring-ref`)).toBeLessThan(idx(`${frontend}/state`));
      expect(idx(`${backend}/sectors`)).toBeLessThan(idx(`${backend}/state`));
    } finally {
      watch?.kill();
      await machine.close();
    }
  });
});
