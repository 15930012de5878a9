// The connection's worker thread is started from the source text of one function, so it must survive what a
// bundler does to that function: esbuild as scripts/build.mjs runs it (which rewrites a bare `require`), and
// with keepNames (as tsx runs the sources, wrapping local functions in `__name`). Each bundle of the NBD medium
// opens an nbdkit export and moves data. Skipped with a one-line reason when nbdkit is missing, except under CI.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { build } from "esbuild";
import { afterAll, describe, expect, it } from "vitest";

import type * as Nbd from "../../../src/storage/nbd/index.ts";
import { pattern } from "../helpers.ts";
import { describeWithServers, nbdkit } from "./servers.ts";

const describeNbd = describeWithServers("the NBD bundle tests");

const ENTRY = fileURLToPath(new URL("../../../src/storage/nbd/index.ts", import.meta.url));

describeNbd("the NBD medium, bundled", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-nbd-bundle-"));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const keepNames of [false, true]) {
    it(`connects and moves data from an esbuild bundle${keepNames ? " with keepNames (as tsx)" : ""}`, async () => {
      const out = path.join(dir, `nbd-${keepNames}.mjs`);
      await build({
        entryPoints: [ENTRY],
        outfile: out,
        bundle: true,
        format: "esm",
        platform: "node",
        target: "node20",
        keepNames,
        logLevel: "silent",
      });
      const text = fs.readFileSync(out, "utf8");
      if (keepNames) expect(text).toMatch(/__name\(/); // the transformation this test is about happened
      const mod = (await import(pathToFileURL(out).href)) as typeof Nbd;
      const server = await nbdkit(dir, ["memory", "1M"]);
      try {
        const m = mod.NbdBackend.open(server.url, { timeoutMs: 5000 });
        const data = pattern(4096, keepNames ? 2 : 1);
        m.write(8, [data]);
        const back = new Uint8Array(4096);
        m.read(8, [back]);
        m.close();
        expect(back).toEqual(data);
      } finally {
        await server.kill();
      }
    });
  }
});
