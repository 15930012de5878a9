import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { xenide } from "./run.ts";

it("read -o - writes the raw sectors to stdout and the cost report to stderr", () => {
  const dir = mkdtempSync(join(tmpdir(), "xenide-stdout-"));
  const img = join(dir, "d.img");
  const data = Buffer.alloc(1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
  writeFileSync(join(dir, "in.bin"), data);
  expect(xenide(["mkimage", img, "--size", "1M"]).code).toBe(0);
  expect(xenide(["write", img, "--lba", "5", "-i", join(dir, "in.bin")]).code).toBe(0);
  const r = xenide(["read", img, "--lba", "5", "--count", "2", "-o", "-"], { cwd: dir });
  expect(r.code).toBe(0);
  expect(Buffer.compare(r.raw, data)).toBe(0);
  expect(r.stderr).toMatch(/cost of reading 2 sector/);
});
