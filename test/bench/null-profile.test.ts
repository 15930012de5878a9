/**
 * bench/null-profile.mjs, which the README cites for where the protocol's time goes: it drives the null-disk
 * paths through the public entry point and prints the time per I/O, the functions with the most self time and
 * the share of the groups a rewrite would address. Run here on the sources (under tsx) with few I/Os.
 */
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";

const SCRIPT = new URL("../../bench/null-profile.mjs", import.meta.url).pathname;
const ENTRY = new URL("../../src/index.ts", import.meta.url).pathname;

function profile(...args: string[]): string {
  return execFileSync(process.execPath, ["--import", "tsx", SCRIPT, ...args], {
    env: { ...process.env, XENIDE_ENTRY: ENTRY },
    encoding: "utf8",
    timeout: 60_000,
  });
}

describe("bench/null-profile.mjs", () => {
  it("profiles PV 4 KiB reads on the null disk and names the ring's share", () => {
    const out = profile("pv", "--ios", "20000", "--top", "5");
    expect(out).toMatch(/^PV 4 KiB reads on the null disk: \d+\.\d{3} us per I\/O$/m);
    expect(out).toMatch(/^self time, top 5 of \d+ functions:$/m);
    expect(out.match(/^ +\d+\.\d% {2}\S/gm)).toHaveLength(5);
    // The ring's functions run on every request: a share above zero, and below the whole.
    const m = /^ring encode\/decode and segment mapping: (\d+\.\d)% of the time/m.exec(out);
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(Number(m![1])).toBeLessThan(100);
  }, 90_000);

  it("profiles IDE DMA 64 KiB commands, and refuses a path it does not know", () => {
    const out = profile("dma", "--ios", "1000", "--top", "3");
    expect(out).toMatch(/^IDE DMA 64 KiB commands on the null disk: \d+\.\d{3} us per I\/O$/m);
    expect(out).toMatch(/^PRD table walk: \d+\.\d% of the time/m);
    expect(out).toMatch(/^ioreq handling: \d+\.\d% of the time/m);
    expect(() => profile("nvme")).toThrow(/the path is pv or dma/);
  }, 90_000);
});
