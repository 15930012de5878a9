/**
 * An interrupted `read -o FILE` leaves no partial FILE (and an existing FILE as it was); a long transfer on a
 * terminal shows a progress bar (the CLI run under `script`, which gives it a pseudo-terminal).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { createImage } from "../../src/storage/index.ts";
import { runXenide } from "./spawn.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-interrupt-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const partials = (): string[] => readdirSync(dir).filter((f) => f.includes("xenide-partial"));

async function until(what: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (what()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return what();
}

describe("an interrupted read -o FILE", () => {
  const img = join(dir, "slow.img");
  createImage(img, 256 * 1024 * 1024);

  for (const [signal, existing] of [
    ["SIGTERM", "previous content\n"],
    ["SIGINT", null],
  ] as const) {
    it(`${signal} mid-transfer: ${existing ? "the existing FILE keeps its content" : "no FILE appears"}, no temporary file is left`, async () => {
      const out = join(dir, `${signal}.bin`);
      if (existing) writeFileSync(out, existing);
      let killed = false;
      // PIO by words: about 20 MiB/s, so 256 MiB is still running when the signal comes.
      const r = await runXenide(["read", img, "--lba", "0", "--count", String(512 * 1024), "-o", out], {
        onSpawn: (child) => {
          void until(() => partials().length > 0, 30_000).then((seen) => {
            killed = seen;
            child.kill(seen ? signal : "SIGKILL");
          });
        },
      });
      expect(killed).toBe(true); // the transfer was under way, into a temporary file
      expect(r.signal).toBe(signal);
      expect(r.stdout.toString()).toBe("");
      if (existing) expect(readFileSync(out, "utf8")).toBe(existing);
      else expect(existsSync(out)).toBe(false);
      expect(partials()).toEqual([]);
    }, 60_000);
  }
});

const hasScript =
  process.platform === "linux" &&
  /util-linux/.test(spawnSync("script", ["--version"], { encoding: "utf8" }).stdout ?? "");

describe.skipIf(!hasScript)("the progress bar", () => {
  it("appears on a terminal once a transfer has run for more than a second, and is cleared at the end", () => {
    // 96 MiB by 16-bit PIO (one port exit per word) runs for several seconds here: well past the bar's first
    // second on a machine three times as fast.
    const img = join(dir, "bar.img");
    createImage(img, 96 * 1024 * 1024);
    const root = fileURLToPath(new URL("../..", import.meta.url));
    const loader = new URL("../../node_modules/tsx/dist/loader.mjs", import.meta.url).href;
    const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    const cmd = [process.execPath, "--import", loader, `${root}src/cli/main.ts`, "read", img]
      .concat(["--lba", "0", "--count", "196608", "--via", "pio", "-o", "/dev/null"])
      .map(quote)
      .join(" ");
    const r = spawnSync("script", ["-qfec", cmd, "/dev/null"], { encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/read \[[^\]]*\] \d+% \| [\d.]+ MiB of 96\.0 MiB \| [\d.]+ MiB\/s/);
    expect(r.stdout).toMatch(/\x1b\[2Kwrote 100663296 bytes to \/dev\/null/);
  }, 60_000);
});
