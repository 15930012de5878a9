/**
 * blkfront under grant-table pressure: more data in flight than the guest's grant table can reference at once.
 * Linux blkfront reserves its grants before building a request and requeues it when too few are free; ours must
 * do the same (wait for completions), never fail a request the table could hold once others complete.
 */
import { describe, expect, it } from "vitest";
import { AsyncEngine, MemoryBackend, SyncEngine } from "../../src/storage/index.ts";
import { createPvMachine } from "../../src/machine/pv.ts";

const MiB_SECTORS = 2048;

describe("blkfront grant pressure", () => {
  it.each([
    ["async, fresh grants per request", false, "async"],
    ["async, persistent grants", true, "async"],
    ["sync, fresh grants per request", false, "sync"],
  ] as const)(
    "64 reads of 1 MiB at once on a 16-page ring all complete (%s)",
    async (_n, persistent, kind) => {
      const disk = new MemoryBackend(256 * MiB_SECTORS);
      for (let i = 0; i < disk.data.length; i += 512) disk.data[i] = (i / 512) & 0xff;
      const engine = kind === "async" ? new AsyncEngine(disk) : new SyncEngine(disk);
      const m = await createPvMachine({ engine, ringPages: 16, persistent });
      try {
        const lbas = Array.from({ length: 64 }, (_, i) => ((i * 37) % 200) * MiB_SECTORS);
        const results = await Promise.allSettled(lbas.map((lba) => m.front.read(lba, MiB_SECTORS)));
        expect(results.filter((r) => r.status === "rejected")).toEqual([]);
        results.forEach((r, i) => {
          const data = (r as PromiseFulfilledResult<Uint8Array>).value;
          expect(data.length).toBe(MiB_SECTORS * 512);
          expect(data[0]).toBe(lbas[i]! & 0xff);
          expect(data[512 * 7]).toBe((lbas[i]! + 7) & 0xff);
        });
      } finally {
        await m.close();
      }
    },
  );
});
