/**
 * The ATAPI CD-ROM drive end to end inside one process: built by the machine layer, reached by the guest's ATAPI
 * driver (PIO and DMA, interrupts and polling, sync and async engines), with media change from the host (the
 * NOT READY then UNIT ATTENTION report QEMU 7.2 gives, events, the tray lock), storage errors (MEDIUM ERROR),
 * and the medium checks (an ISO must be whole 2048-byte blocks; a CD is never written).
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AtapiDrive, AtapiError, cdb } from "../../../src/guest/atapi-driver.ts";
import { CdMediumError, TrayLockedError } from "../../../src/ide/cd/tray.ts";
import { buildMachine, type Machine } from "../../../src/machine/builder.ts";
import type { MediumSpec } from "../../../src/machine/description.ts";
import { FaultInjectingBackend } from "../../../src/storage/fault.ts";
import { MemoryBackend } from "../../../src/storage/memory-backend.ts";
import type { EngineKind } from "../../../src/storage/index.ts";

/** An ISO-like medium: block b starts with b (big-endian) and a tag byte. */
function iso(blocks: number, tag: number): Uint8Array {
  const d = new Uint8Array(blocks * 2048);
  const dv = new DataView(d.buffer);
  for (let b = 0; b < blocks; b++) {
    dv.setUint32(b * 2048, b, false);
    d.fill(tag, b * 2048 + 4, b * 2048 + 2048);
  }
  return d;
}

const machines: Machine[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const m of machines.splice(0)) await m.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function cdMachine(
  medium: MediumSpec,
  engine: EngineKind = "sync",
  position = "secondary-master" as const,
): Machine {
  const m = buildMachine({ ide: [{ position, kind: "cd", medium, engine }] });
  machines.push(m);
  return m;
}

const SENSE_NOT_READY = { key: 0x2, asc: 0x3a, ascq: 0 };

describe("CD-ROM through the guest's ATAPI driver", () => {
  for (const engine of ["sync", "async"] as EngineKind[])
    for (const via of ["pio", "dma"] as const)
      for (const irq of [true, false])
        it(`reads blocks (${engine} engine, ${via}, ${irq ? "interrupts" : "polling"})`, async () => {
          const m = cdMachine({ backend: new MemoryBackend(iso(64, 0x5a), { readOnly: true }) }, engine);
          const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1, via, irq, byteCount: 5120 });
          const id = await cd.probe();
          expect(id).toMatchObject({ model: "XENIDE DVD-ROM", deviceType: 5, removable: true, dma: true });
          expect(await cd.readCapacity()).toEqual({ blocks: 64, blockSize: 2048 });
          const data = await cd.read(10, 40);
          const dv = new DataView(data.buffer, data.byteOffset);
          for (let i = 0; i < 40; i++) expect(dv.getUint32(i * 2048, false)).toBe(10 + i);
          expect(data[2047]).toBe(0x5a);
        });

  it("READ beyond the capacity: CHECK CONDITION, ILLEGAL REQUEST / LBA OUT OF RANGE (SPC-3 Annex D)", async () => {
    const m = cdMachine({ backend: new MemoryBackend(iso(16, 1), { readOnly: true }) });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    await cd.probe();
    const e = await cd.read(15, 2).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AtapiError);
    expect((e as AtapiError).sense).toEqual({ key: 0x5, asc: 0x21, ascq: 0 });
    expect((e as AtapiError).error).toBe(0x50); // sense key in Error bits 7:4
  });

  it("an unknown opcode: ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE", async () => {
    const m = cdMachine({ backend: new MemoryBackend(iso(16, 1), { readOnly: true }) });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    await cd.probe();
    const e = (await cd.packet(cdb(0xff), 0).catch((x: unknown) => x)) as AtapiError;
    expect(e.sense).toEqual({ key: 0x5, asc: 0x20, ascq: 0 });
  });

  it("a storage error while reading: MEDIUM ERROR / UNRECOVERED READ ERROR, earlier blocks delivered (PIO)", async () => {
    const inner = new MemoryBackend(iso(32, 2), { readOnly: true });
    const bad = new FaultInjectingBackend(inner, [{ op: "read", from: 20 * 4, to: 21 * 4, code: "EIO" }]);
    const m = cdMachine({ backend: bad });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1, byteCount: 2048 });
    await cd.probe();
    const e = (await cd.read(16, 8).catch((x: unknown) => x)) as AtapiError;
    expect(e).toBeInstanceOf(AtapiError);
    expect(e.sense).toEqual({ key: 0x3, asc: 0x11, ascq: 0 });
    // The channel is not wedged: the next read works.
    const ok = await cd.read(0, 2);
    expect(new DataView(ok.buffer, ok.byteOffset).getUint32(2048, false)).toBe(1);
  });

  it("an empty drive: signature and IDENTIFY PACKET DEVICE, then NOT READY / MEDIUM NOT PRESENT", async () => {
    const m = cdMachine({ empty: true });
    const handle = m.ide.get("secondary-master")!;
    expect(handle.hasMedium).toBe(false);
    expect(() => handle.engine).toThrow(/no medium/);
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    expect(await cd.probe()).not.toBeNull();
    const e = (await cd.testUnitReady().catch((x: unknown) => x)) as AtapiError;
    expect(e.sense).toEqual(SENSE_NOT_READY);
  });
});

describe("media change from the host", () => {
  it("insert into an empty drive: NOT READY once, then UNIT ATTENTION until REQUEST SENSE, then ready (QEMU 7.2)", async () => {
    const m = cdMachine({ empty: true });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    await cd.probe();
    await m.ide
      .get("secondary-master")!
      .insert({ backend: new MemoryBackend(iso(8, 3), { readOnly: true }) });
    // QEMU's ide_cd_change_cb raises the interrupt when the tray moves.
    expect(m.hv.irq.isRaised(15)).toBe(true);
    const first = (await cd.testUnitReady().catch((x: unknown) => x)) as AtapiError;
    expect(first.sense).toEqual(SENSE_NOT_READY);
    // REQUEST SENSE inside the driver consumed nothing yet: the next command reports the unit attention.
    const second = (await cd.packet(cdb(0x00), 0, false).catch((x: unknown) => x)) as AtapiError;
    expect(second.error).toBe(0x60); // UNIT ATTENTION in Error bits 7:4
    // While it is pending every command but REQUEST SENSE, INQUIRY, GET CONFIGURATION and GESN is refused
    // with Error = UNIT ATTENTION << 4 | MC (60h: MC is bit 5, already set) and Status = ERR only, Count 0.
    const third = (await cd.packet(cdb(0x25), 8, false).catch((x: unknown) => x)) as AtapiError;
    expect([third.status & 0xff, third.error]).toEqual([0x01, 0x60]);
    expect(await cd.requestSense()).toEqual({ key: 0x6, asc: 0x28, ascq: 0 });
    await cd.testUnitReady();
    expect((await cd.readCapacity()).blocks).toBe(8);
    expect((await cd.read(7, 1))[4]).toBe(3);
  });

  it("a medium change while mounted: the new contents are read after the attention; GESN reports new media once", async () => {
    const m = cdMachine({ backend: new MemoryBackend(iso(8, 1), { readOnly: true }) });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    await cd.probe();
    expect((await cd.read(0, 1))[4]).toBe(1);
    const h = m.ide.get("secondary-master")!;
    await h.eject();
    expect(h.tray()).toEqual({ open: true, locked: false, medium: false });
    const gesn = async (): Promise<Uint8Array> => cd.packet(cdb(0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8), 8);
    const open = await gesn();
    expect([open[2], open[4], open[5]]).toEqual([4, 0, 1]); // media class, no event while open, tray open
    await h.insert({ backend: new MemoryBackend(iso(12, 2), { readOnly: true }) });
    const inserted = await gesn();
    expect([inserted[4], inserted[5]]).toEqual([2, 2]); // NEW MEDIA, medium present (MMC-5 Table 141/142)
    expect((await gesn())[4]).toBe(0); // reported once
    await cd.waitReady();
    expect((await cd.readCapacity()).blocks).toBe(12);
    expect((await cd.read(11, 1))[4]).toBe(2);
  });

  it("a locked tray refuses the host's eject (eject request to the guest) unless forced", async () => {
    const m = cdMachine({ backend: new MemoryBackend(iso(8, 1), { readOnly: true }) });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    await cd.probe();
    await cd.preventRemoval(true);
    const h = m.ide.get("secondary-master")!;
    await expect(h.eject()).rejects.toBeInstanceOf(TrayLockedError);
    expect(h.tray()).toEqual({ open: false, locked: true, medium: true });
    const ev = await cd.packet(cdb(0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8), 8);
    expect(ev[4]).toBe(1); // EJECT REQUEST
    // The guest's own eject is refused too: NOT READY / MEDIUM REMOVAL PREVENTED (as QEMU).
    const e = (await cd.startStop(false).catch((x: unknown) => x)) as AtapiError;
    expect(e.sense).toEqual({ key: 0x2, asc: 0x53, ascq: 0 });
    await h.eject({ force: true });
    expect(h.tray()).toEqual({ open: true, locked: false, medium: false });
  });

  it("the guest opens and closes the tray with START STOP UNIT", async () => {
    const m = cdMachine({ backend: new MemoryBackend(iso(8, 1), { readOnly: true }) });
    const cd = new AtapiDrive(m.hv.vcpu(0), { channel: 1 });
    await cd.probe();
    await cd.startStop(false);
    expect(m.ide.get("secondary-master")!.tray().open).toBe(true);
    expect(((await cd.testUnitReady().catch((x: unknown) => x)) as AtapiError).sense).toEqual(
      SENSE_NOT_READY,
    );
    await cd.startStop(true);
    await cd.testUnitReady();
  });

  it("an image that is not whole 2048-byte blocks is refused; an ISO is opened read-only and closed on eject", async () => {
    const dir = mkdtempSync(join(tmpdir(), "xenide-cd-"));
    dirs.push(dir);
    const odd = join(dir, "odd.iso");
    writeFileSync(odd, new Uint8Array(2048 * 3 + 512));
    expect(() => cdMachine({ image: odd })).toThrow(CdMediumError);
    const good = join(dir, "good.iso");
    writeFileSync(good, iso(4, 9));
    const m = cdMachine({ empty: true });
    const h = m.ide.get("secondary-master")!;
    await expect(h.insert({ image: odd })).rejects.toThrow(/2048-byte/);
    expect(h.hasMedium).toBe(false);
    await h.insert({ image: good });
    expect(h.backend.readOnly).toBe(true);
    expect(m.engines).toContain(h.engine);
    const engine = h.engine;
    await h.eject();
    expect(m.engines).not.toContain(engine);
  });

  it("a hard disk has no tray", async () => {
    const m = buildMachine({
      ide: [{ position: "primary-master", medium: { backend: new MemoryBackend(1 << 20) } }],
    });
    machines.push(m);
    await expect(m.ide.get("primary-master")!.eject()).rejects.toThrow(/no removable medium/);
    expect(() => buildMachine({ ide: [{ position: "primary-master", medium: { empty: true } }] })).toThrow(
      /only a CD drive can be empty/,
    );
  });
});
