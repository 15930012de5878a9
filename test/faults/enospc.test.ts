/**
 * A real full disk: a sparse 4 MiB image on a 512 KiB tmpfs, written through each disk path until the host
 * filesystem runs out of blocks. The write that hits ENOSPC fails cleanly (IDE: ERR with DF and ABRT; PV:
 * BLKIF_RSP_ERROR), and every write acknowledged before it reads back intact. Needs permission to mount a tmpfs
 * (root in a container that allows it); skipped with a reason otherwise.
 */
import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AtaDrive, AtaError } from "../../src/guest/ata-driver.ts";
import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { createPc } from "../../src/machine/pc.ts";
import { AsyncEngine, RawImageBackend, SyncEngine } from "../../src/storage/index.ts";
import { BLKIF_RSP_ERROR } from "../../src/xenblk/abi.ts";
import { BlkfrontIoError } from "../../src/xenblk/blkfront.ts";
import { createPvMachine } from "../../src/machine/pv.ts";

const mnt = mkdtempSync(join(tmpdir(), "xenide-enospc-"));
let mounted = false;
let why = "";
try {
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt], { stdio: "pipe" });
  mounted = true;
} catch (e) {
  why = (e as { stderr?: Buffer }).stderr?.toString().trim() || String(e);
}
if (!mounted) console.log(`enospc: skipped, cannot mount a tmpfs here (${why.split("\n")[0]})`);

afterAll(() => {
  if (mounted) execFileSync("umount", [mnt]);
  rmdirSync(mnt);
});

function sparseImage(name: string): string {
  const p = join(mnt, name);
  const fd = openSync(p, "w");
  closeSync(fd);
  execFileSync("truncate", ["-s", "4M", p]);
  return p;
}

const block = (i: number) => new Uint8Array(64 * 512).fill((i % 250) + 1);

describe.skipIf(!mounted)("a full host filesystem (ENOSPC on a sparse image)", () => {
  it("IDE: the write that finds no space ends in ERR+DF+ABRT; everything acknowledged before reads back", async () => {
    const p = sparseImage("ide.img");
    const b = RawImageBackend.open(p);
    const hv = new Hypervisor({ ramSize: 8 * 1024 * 1024 });
    createPc({ hv, firmwareInit: true, primary: { master: { engine: new SyncEngine(b) } } });
    const d = new AtaDrive(hv.vcpu(0), { via: "dma", bufferSectors: 128 });
    await d.probe();
    let acked = 0;
    let err: unknown;
    for (let i = 0; i < 128 && !err; i++) {
      try {
        await d.write(i * 64, block(i));
        await d.flush();
        acked++;
      } catch (e) {
        err = e;
      }
    }
    expect(err).toBeInstanceOf(AtaError);
    const e = err as AtaError;
    expect(e.status & 0x21).toBe(0x21); // DF | ERR
    expect(e.error & 0x04).toBe(0x04); // ABRT
    expect(acked).toBeGreaterThan(0);
    for (let i = 0; i < acked; i++) expect(Buffer.compare(await d.read(i * 64, 64), block(i))).toBe(0);
    b.close();
    rmSync(p);
  });

  it("PV: BLKIF_RSP_ERROR for the write that finds no space; everything acknowledged before reads back", async () => {
    const p = sparseImage("pv.img");
    const b = RawImageBackend.open(p);
    const m = await createPvMachine({ engine: new AsyncEngine(b) });
    let acked = 0;
    let err: unknown;
    for (let i = 0; i < 128 && !err; i++) {
      try {
        await m.front.write(i * 64, block(i));
        acked++;
      } catch (e) {
        err = e;
      }
    }
    expect(err).toBeInstanceOf(BlkfrontIoError);
    expect((err as BlkfrontIoError).status).toBe(BLKIF_RSP_ERROR);
    expect(acked).toBeGreaterThan(0);
    for (let i = 0; i < acked; i++) expect(Buffer.compare(await m.front.read(i * 64, 64), block(i))).toBe(0);
    await m.close();
    b.close();
    rmSync(p);
  });
});
