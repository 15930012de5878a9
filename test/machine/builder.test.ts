/**
 * One description, one builder: IDE drives at every position and PV disks on one machine, each reached the way
 * a guest reaches it (the ATA driver probing its position, blkfront connecting through xenstore), media the
 * machine opened closed by it and only those, and descriptions that cannot be built refused before anything
 * is opened.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { buildMachine } from "../../src/machine/builder.ts";
import { IDE_POSITIONS, MachineConfigError } from "../../src/machine/description.ts";
import { openAtaPath, openPvPath } from "../../src/machine/disk-path.ts";
import { createImage, ImageError, MemoryBackend, openImage } from "../../src/storage/index.ts";

const SECTOR = 512;

/** A disk whose sector i starts with the bytes "<tag>:<i>". */
function stamped(tag: string, sectors: number): MemoryBackend {
  const data = new Uint8Array(sectors * SECTOR);
  for (let i = 0; i < sectors; i++) data.set(Buffer.from(`${tag}:${i}`), i * SECTOR);
  return new MemoryBackend(data);
}

const text = (b: Uint8Array) => Buffer.from(b).toString("latin1").replace(/\0.*$/s, "");

let dir: string | null = null;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = null;
});

describe("buildMachine", () => {
  it("puts a drive at each IDE position and two PV disks on one hypervisor; each answers as its own medium", async () => {
    const m = buildMachine({
      ide: IDE_POSITIONS.map((position, i) => ({
        position,
        medium: { backend: stamped(position, 64 + i) },
        serial: `SER-${i}`,
      })),
      pv: [
        { medium: { backend: stamped("xvda", 128) } },
        { medium: { backend: stamped("xvdb", 96) }, devid: 51728, engine: "async" },
      ],
    });
    expect(m.pc).not.toBeNull();
    expect(m.xen?.hv).toBe(m.hv);
    expect(m.engines).toHaveLength(6);
    for (const [i, position] of IDE_POSITIONS.entries()) {
      const p = await openAtaPath(m, i % 2 ? "dma" : "pio", { position });
      expect(p.identity.serial).toBe(`SER-${i}`);
      expect(p.sectors).toBe(64 + i);
      expect(text(await p.read(5, 1))).toBe(`${position}:5`);
    }
    const a = await openPvPath(m);
    const b = await openPvPath(m, { ringPages: 2 }, m.pv[1]);
    expect([a.sectors, b.sectors]).toEqual([128, 96]);
    expect(text(await a.read(7, 1))).toBe("xvda:7");
    expect(text(await b.read(9, 1))).toBe("xvdb:9");
    expect(m.xen!.xs(0).read(`${m.pv[1]!.paths.backend}/state`)).toBe("4");
    await a.close();
    await b.close();
    await m.close();
  });

  it("a PV-only machine has no PC and no port claims; an IDE-only one has no Xen host", () => {
    const pvOnly = buildMachine({ pc: false, pv: [{ medium: { backend: new MemoryBackend(16 * SECTOR) } }] });
    expect(pvOnly.pc).toBeNull();
    expect(pvOnly.hv.bus.nameAt(0x1f7)).toBeUndefined();
    expect(pvOnly.hv.bus.nameAt(0xcf8)).toBeUndefined();
    const ideOnly = buildMachine({
      ide: [{ position: "primary-master", medium: { backend: new MemoryBackend(8 * SECTOR) } }],
    });
    expect(ideOnly.xen).toBeNull();
    expect(ideOnly.hv.bus.nameAt(0x1f7)).toBe("ide0-cmd");
  });

  it("refuses descriptions it cannot build, with the reason", () => {
    const mem = () => ({ backend: new MemoryBackend(8 * SECTOR) });
    expect(() =>
      buildMachine({
        ide: [
          { position: "secondary-slave", medium: mem() },
          { position: "secondary-slave", medium: mem() },
        ],
      }),
    ).toThrow(/two drives at the secondary-slave position/);
    expect(() => buildMachine({ pc: false, ide: [{ position: "primary-master", medium: mem() }] })).toThrow(
      MachineConfigError,
    );
    expect(() => buildMachine({ pv: [{ medium: mem() }, { medium: mem() }] })).toThrow(/two PV disks/);
    expect(() => buildMachine({ ram: 1000 })).toThrow(/multiple of 4 KiB/);
    expect(() => buildMachine({ ide: [{ position: "tertiary" as never, medium: mem() }] })).toThrow(
      /unknown IDE position/,
    );
  });

  it("closes the images it opened, not the media it was given, and releases them when building fails", async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-machine-"));
    dir = d;
    const a = path.join(d, "a.img");
    createImage(a, 64 * SECTOR);
    const given = new MemoryBackend(8 * SECTOR);
    let closedGiven = false;
    given.close = () => {
      closedGiven = true;
    };
    const m = buildMachine({
      ide: [
        { position: "primary-master", medium: { image: a } },
        { position: "primary-slave", medium: { backend: given } },
      ],
    });
    // The machine holds a's writer lock: a second writer is refused until it closes.
    expect(() => openImage(a)).toThrow(ImageError);
    await m.close();
    await m.close();
    expect(closedGiven).toBe(false);
    openImage(a).close();

    // The second image does not exist: the first, already opened, must be closed again.
    expect(() =>
      buildMachine({
        ide: [
          { position: "primary-master", medium: { image: a } },
          { position: "secondary-master", medium: { image: path.join(d, "missing.img") } },
        ],
      }),
    ).toThrow(ImageError);
    openImage(a).close();
  });

  it("opens a read-only PV disk read-only and tells the frontend so (mode r, info 4)", async () => {
    const m = buildMachine({
      pc: false,
      pv: [{ medium: { backend: new MemoryBackend(32 * SECTOR) }, readOnly: true }],
    });
    const xs = m.xen!.xs(0);
    expect(xs.read(`${m.pv[0]!.paths.backend}/mode`)).toBe("r");
    const p = await openPvPath(m);
    await expect(p.write(0, new Uint8Array(SECTOR))).rejects.toThrow();
    await p.close();
    await m.close();
  });
});
