import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { xenide } from "./run.ts";

// IDENTIFY word 47 of our drive advertises 16 sectors per DRQ block (QEMU's MAX_MULT_SECTORS); SET MULTIPLE MODE
// with a count that is not a supported block size aborts (ACS-3 7.50), and the CLI names what the drive takes.
it("--multiple with a block size the drive refuses: one line naming what it takes, exit 2", () => {
  const dir = mkdtempSync(join(tmpdir(), "xenide-multiple-"));
  const img = join(dir, "d.img");
  expect(xenide(["mkimage", img, "--size", "1M"]).code).toBe(0);
  for (const n of ["3", "32"]) {
    const r = xenide(["read", img, "--lba", "0", "--count", "8", "--multiple", n, "-o", join(dir, "o.bin")]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual([
      `xenide: --multiple ${n}: the drive refused SET MULTIPLE MODE; this drive takes a power of two up to 16 (IDENTIFY word 47)`,
    ]);
  }
  const ok = xenide([
    "read",
    img,
    "--lba",
    "0",
    "--count",
    "8",
    "--multiple",
    "16",
    "-o",
    join(dir, "o.bin"),
  ]);
  expect(ok.code).toBe(0);
  expect(readFileSync(join(dir, "o.bin")).length).toBe(4096);
});
