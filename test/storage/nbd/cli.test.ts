// The command line with NBD URLs, run from the TypeScript sources in a child process as a user would: `write`
// and `read` move a file's bytes through an nbdkit export by PV and DMA, and a server that is not there is one
// line on standard error with exit status 1. Skipped with a one-line reason when nbdkit is missing,
// except under CI.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { xenide } from "../../cli/run.ts";
import { pattern, tempDir } from "../helpers.ts";
import { describeWithServers, nbdkit } from "./servers.ts";

const describeNbd = describeWithServers("the NBD command line tests");

describeNbd("xenide commands on an NBD URL", () => {
  const dir = tempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("write by PV, read back by DMA, and the bytes are in the served file", async () => {
    const disk = path.join(dir, "disk.img");
    fs.writeFileSync(disk, new Uint8Array(1024 * 1024));
    const server = await nbdkit(dir, ["file", disk]);
    try {
      const data = pattern(8 * 512, 51);
      const input = path.join(dir, "in.bin");
      fs.writeFileSync(input, data);
      const w = xenide([
        "write",
        server.url,
        "--lba",
        "100",
        "-i",
        input,
        "--via",
        "pv",
        "--engine",
        "async",
      ]);
      expect(w.stderr).toBe("");
      expect(w.code).toBe(0);
      const r = xenide(["read", server.url, "--lba", "100", "--count", "8", "--via", "dma", "-o", "-"]);
      expect(r.code).toBe(0);
      expect(new Uint8Array(r.raw)).toEqual(data);
      expect(new Uint8Array(fs.readFileSync(disk)).subarray(100 * 512, 108 * 512)).toEqual(data);
    } finally {
      await server.kill();
    }
  });

  it("a server that is not there: one line, exit status 1", () => {
    const gone = path.join(dir, "none.sock");
    const none = xenide(["identify", `nbd+unix:///?socket=${gone}`]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(
      /^xenide: cannot connect to nbd\+unix:\/\/\/\?socket=.*none\.sock: .*ENOENT.*\n$/,
    );
  });
});
