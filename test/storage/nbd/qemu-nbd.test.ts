// The NBD medium against Debian's qemu-nbd 7.2 serving raw and qcow2 images on a Unix socket: data written
// through the medium (sync and async engines, many requests in flight, and a guest's IDE and PV drivers through
// the machine layer) is what `qemu-img convert -O raw` finds in the image afterwards, qcow2 images stay clean
// for `qemu-img check`, and what qemu-img wrote reads back through the medium. Skipped with a one-line reason
// when qemu-utils or nbdkit is missing, except under CI.
import fs from "node:fs";
import path from "node:path";

import { expect, it } from "vitest";

import { buildMachine, openAtaPath, openPvPath } from "../../../src/machine/index.ts";
import { AsyncEngine, SyncEngine } from "../../../src/storage/engine.ts";
import { NbdBackend, NbdError } from "../../../src/storage/nbd/index.ts";
import { openMedium } from "../../../src/storage/open.ts";
import type { IoCompletion, IoEngine } from "../../../src/storage/types.ts";
import { pattern, run, sameBytes } from "../helpers.ts";
import {
  describeWithServers,
  qemuImgCheck,
  qemuImgCreate,
  qemuImgRaw,
  type Server,
  serverScope,
} from "./servers.ts";

const describeNbd = describeWithServers("the qemu-nbd interop tests");

const S = 512;
const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

/** A small deterministic generator for request positions. */
function lcg(seed: number): () => number {
  let x = seed;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describeNbd("the NBD medium against qemu-nbd", () => {
  const scope = serverScope();
  const { dir, open } = scope;
  let imageNo = 0;
  function image(format: "raw" | "qcow2", opts: string[] = []): string {
    const f = path.join(dir, `img${imageNo++}.${format}`);
    qemuImgCreate(f, format, String(SIZE), opts);
    return f;
  }
  const serve = scope.qemuNbd;
  /** Close the medium and stop qemu-nbd (SIGTERM: it flushes and exits), so qemu-img sees the final image. */
  async function finish(m: NbdBackend, s: Server): Promise<void> {
    m.close();
    await s.kill("SIGTERM");
  }

  /** Random writes and discards through `e` into a medium, mirrored in `shadow`; reads checked on the way. */
  async function storm(e: IoEngine, shadow: Uint8Array, requests: number, seed: number): Promise<void> {
    const rnd = lcg(seed);
    const sectors = shadow.length / S;
    const out: IoCompletion[] = [];
    for (let round = 0; round < requests / 32; round++) {
      // 32 at once: writes to disjoint ranges (one per slice of the disk), so their order does not matter.
      const slice = Math.floor(sectors / 32);
      for (let i = 0; i < 32; i++) {
        const count = 1 + Math.floor(rnd() * 64);
        const sector = i * slice + Math.floor(rnd() * (slice - count));
        if (rnd() < 0.15) {
          e.submit({ op: "discard", tag: i, sector, count });
          shadow.fill(0, sector * S, (sector + count) * S);
        } else {
          const data = pattern(count * S, seed * 1000 + round * 32 + i);
          e.submit({ op: "write", tag: i, sector, bufs: [data] });
          shadow.set(data, sector * S);
        }
      }
      await e.drain();
      out.length = 0;
      e.reap(out);
      expect(out.filter((c) => c.error)).toEqual([]);
      if (round % 4 === 3) expect(await run(e, { op: "flush", tag: 99, sector: 0 })).toEqual({ tag: 99 });
    }
    const back = new Uint8Array(shadow.length);
    expect(await run(e, { op: "read", tag: 100, sector: 0, bufs: [back] })).toEqual({ tag: 100 });
    expect(sameBytes(back, shadow)).toBe("same");
  }

  for (const format of ["raw", "qcow2"] as const) {
    for (const kind of ["sync", "async"] as const) {
      it(`${format}: writes and discards through the ${kind} engine are what qemu-img reads from the image`, async () => {
        const img = image(format);
        const s = await serve(img, { format });
        const m = open(s.url);
        expect(m.sectorCount * S).toBe(SIZE);
        expect(m.exportInfo.structuredReplies).toBe(true);
        expect(m.exportInfo.minBlock).toBeLessThanOrEqual(S);
        const shadow = new Uint8Array(SIZE);
        await storm(
          kind === "sync" ? new SyncEngine(m) : new AsyncEngine(m),
          shadow,
          256,
          format === "raw" ? 1 : 2,
        );
        await finish(m, s);
        expect(sameBytes(qemuImgRaw(img, format, dir), shadow)).toBe("same");
        if (format === "qcow2") {
          const check = qemuImgCheck(img);
          expect(check.out).toMatch(/No errors were found on the image/);
          expect(check.status).toBe(0);
        }
      });
    }
  }

  it("reads a compressed qcow2 that qemu-img wrote, byte for byte, from a read-only export", async () => {
    const rawFile = path.join(dir, "source.raw");
    const data = new Uint8Array(SIZE);
    for (let at = 0; at < SIZE; at += 256 * 1024) data.set(pattern(64 * 1024, at / 1024 + 1), at); // data and holes
    fs.writeFileSync(rawFile, data);
    const qcow = path.join(dir, "compressed.qcow2");
    const conv = (await import("node:child_process")).spawnSync(
      "qemu-img",
      ["convert", "-c", "-f", "raw", "-O", "qcow2", rawFile, qcow],
      { encoding: "utf8" },
    );
    expect(conv.status, conv.stderr).toBe(0);
    const s = await serve(qcow, { format: "qcow2", readOnly: true, exportName: "base" });
    const m = open(s.url);
    expect(m.readOnly).toBe(true);
    const back = new Uint8Array(SIZE);
    await run(new AsyncEngine(m), { op: "read", tag: 1, sector: 0, bufs: [back] });
    expect(sameBytes(back, data)).toBe("same");
    const w = await run(new SyncEngine(m), { op: "write", tag: 2, sector: 0, bufs: [new Uint8Array(S)] });
    expect(w.error?.code).toBe("EROFS");
  });

  it("names a missing export in one line (NBD_REP_ERR_UNKNOWN)", async () => {
    const s = await serve(image("raw"), { format: "raw", exportName: "disk" });
    const wrong = s.url.replace("///disk?", "///other?");
    let err: unknown;
    try {
      NbdBackend.open(wrong);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).reason).toBe("export");
    expect((err as NbdError).message).toMatch(/no export named 'other'/);
    expect(open(s.url).sectorCount).toBe(SIZE / S);
  });

  it("openMedium and a machine description open an export by its URL; the machine closes what it opened", async () => {
    const img = image("qcow2");
    const s = await serve(img, { format: "qcow2", exportName: "vm disk" });
    expect(s.url).toContain("///vm disk?");
    const url = s.url.replace("vm disk", "vm%20disk");
    const ro = openMedium(url, { readOnly: true });
    expect(ro).toBeInstanceOf(NbdBackend);
    expect(ro.readOnly).toBe(true);
    ro.close();
    expect(() => openMedium(url, { format: "qcow2" })).toThrow(/qcow2 over NBD is not supported/);

    // A PV disk on the export: the toolstack's params key holds the URL as given (not made a file path).
    const pvMachine = buildMachine({ pc: false, pv: [{ medium: { image: url, readOnly: true } }] });
    try {
      const disk = pvMachine.pv[0]!;
      expect(pvMachine.xen!.xenstore.read(0, `${disk.paths.backend}/params`)).toBe(url);
    } finally {
      await pvMachine.close();
    }

    const machine = buildMachine({
      ide: [{ position: "primary-master", medium: { image: url }, engine: "async" }],
    });
    const data = pattern(16 * S, 41);
    try {
      const dma = await openAtaPath(machine, "dma");
      await dma.write(77, data);
      await dma.flush();
      expect(await dma.read(77, 16)).toEqual(data);
    } finally {
      await machine.close();
    }
    // The machine's close sent NBD_CMD_DISC: qemu-nbd (-e 2) takes a new client, which sees the data.
    const again = open(url);
    const back = new Uint8Array(16 * S);
    again.read(77, [back]);
    expect(back).toEqual(data);
    await finish(again, s);
    const shadow = new Uint8Array(SIZE);
    shadow.set(data, 77 * S);
    expect(sameBytes(qemuImgRaw(img, "qcow2", dir), shadow)).toBe("same");
  });

  for (const format of ["raw", "qcow2"] as const) {
    it(`${format}: a guest writes through IDE (DMA, PIO) and PV and reads the other's data back; qemu-img agrees`, async () => {
      const img = image(format);
      const s = await serve(img, { format });
      const m = open(s.url);
      // One export, one connection, two controllers: the IDE drive on the sync engine, the PV disk on the async one.
      const machine = buildMachine({
        ide: [{ position: "primary-master", medium: { backend: m }, engine: "sync" }],
        pv: [{ medium: { backend: m }, engine: "async" }],
      });
      try {
        const dma = await openAtaPath(machine, "dma");
        const pio = await openAtaPath(machine, "pio");
        const pv = await openPvPath(machine);
        expect(dma.sectors).toBe(SIZE / S);
        expect(pv.sectors).toBe(SIZE / S);
        const a = pattern(64 * S, 31);
        const b = pattern(40 * S, 32);
        const c = pattern(7 * S, 33);
        await dma.write(1000, a);
        await pv.write(5000, b);
        await pio.write(9000, c);
        await dma.flush();
        await pv.flush();
        expect(await pv.read(1000, 64)).toEqual(a);
        expect(await dma.read(5000, 40)).toEqual(b);
        expect(await pv.read(9000, 7)).toEqual(c);
        await pv.close();
        const shadow = new Uint8Array(SIZE);
        shadow.set(a, 1000 * S);
        shadow.set(b, 5000 * S);
        shadow.set(c, 9000 * S);
        await machine.close();
        await finish(m, s);
        expect(sameBytes(qemuImgRaw(img, format, dir), shadow)).toBe("same");
      } finally {
        await machine.close();
      }
    });
  }
});
