/**
 * What the guest was told is written survives an orderly stop of `xenide qtest`. With the write cache on, a PIO
 * WRITE SECTORS acknowledges each DRQ block (interrupt, STATUS 0x58) while the blocks wait in the drive's
 * buffer for the rest of the command (ACS-3 allows a volatile write cache to hold them). If the client goes
 * away after two of four blocks — standard input closed, or SIGTERM/SIGINT — those two sectors must be in the
 * image afterwards, as they are after QEMU 7.2 stops (it writes every block as it arrives); the exit status is
 * 0, as QEMU's on those signals.
 */
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { QtestClient } from "../../src/qtest/client.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "xenide-qtest-stop-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Sector s, word i of the data written: distinct in every sector. */
const word = (s: number, i: number) => (s * 0x101 + i * 7) & 0xffff;

async function writeTwoOfFour(stop: "eof" | "SIGTERM" | "SIGINT", engine: string): Promise<Uint8Array> {
  const path = join(dir, `${stop}-${engine}.img`);
  writeFileSync(path, new Uint8Array(64 * 512));
  const c = QtestClient.spawn(
    process.execPath,
    ["--import", "tsx", "src/cli/main.ts", "qtest", "--disk", path, "--engine", engine],
    { cwd: ROOT },
  );
  const child = c.child!;
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  // WRITE SECTORS, LBA 16, 4 sectors, one sector per DRQ block.
  expect(
    await c.batch([
      "outb 0x1f6 0xe0",
      "outb 0x1f2 0x4",
      "outb 0x1f3 0x10",
      "outb 0x1f4 0x0",
      "outb 0x1f5 0x0",
      "outb 0x1f7 0x30",
    ]),
  ).toEqual(Array(6).fill("OK"));
  for (let s = 16; s < 18; s++) {
    for (let i = 0; i < 100 && (await c.in("b", 0x3f6)) & 0x80; i++);
    expect(await c.in("b", 0x3f6)).toBe(0x58); // DRQ: the drive wants the block
    await c.batch(Array.from({ length: 256 }, (_, i) => `outw 0x1f0 0x${word(s, i).toString(16)}`));
  }
  for (let i = 0; i < 100 && (await c.in("b", 0x3f6)) & 0x80; i++);
  expect(await c.in("b", 0x3f6)).toBe(0x58); // both blocks acknowledged; the third is awaited
  if (stop === "eof") child.stdin!.end();
  else child.kill(stop);
  const [code, signal] = await exited;
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  return new Uint8Array(readFileSync(path));
}

describe("xenide qtest stops in order", () => {
  for (const stop of ["eof", "SIGTERM", "SIGINT"] as const) {
    for (const engine of ["sync", "async"]) {
      it(`acknowledged write-cache blocks reach the image on ${stop} (${engine} engine)`, async () => {
        const img = await writeTwoOfFour(stop, engine);
        const dv = new DataView(img.buffer);
        for (let s = 16; s < 18; s++) {
          for (let i = 0; i < 256; i++) expect(dv.getUint16(s * 512 + 2 * i, true)).toBe(word(s, i));
        }
        // The two blocks never sent stay as they were.
        expect(img.subarray(18 * 512, 20 * 512).every((b) => b === 0)).toBe(true);
      });
    }
  }
});
