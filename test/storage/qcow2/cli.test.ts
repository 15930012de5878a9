// `xenide mkimage --format qcow2` and `xenide info`, judged by qemu-img: the images it makes are qcow2 as
// qemu-img info and check read them (size, cluster size, compat, backing file and format), and info reports
// format, size, allocation and the backing chain; mistakes are one line with exit status 2 (usage) or 1.
import fs from "node:fs";
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { cli } from "../../cli/in-process.ts";
import { xenide } from "../../cli/run.ts";
import { fastTempDir, qemuCheck, qemuImg, requireQemuUtils } from "./qemu.ts";

const ok = requireQemuUtils("the qcow2 CLI tests");

(ok ? describe : describe.skip)("xenide mkimage --format qcow2 and xenide info", () => {
  const dir = fastTempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("makes a 10G qcow2 image qemu-img reads as such, sparse", () => {
    const img = path.join(dir, "big.qcow2");
    const r = xenide(["mkimage", img, "--format", "qcow2", "--size", "10G"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const info = JSON.parse(qemuImg(["info", "--output=json", img]).out) as Record<string, unknown>;
    expect(info["format"]).toBe("qcow2");
    expect(info["virtual-size"]).toBe(10 * 1024 ** 3);
    expect(info["cluster-size"]).toBe(65536);
    expect((info["format-specific"] as { data: { compat: string } }).data.compat).toBe("1.1");
    expect(qemuCheck(img).status).toBe(0);
    expect(fs.statSync(img).blocks * 512).toBeLessThan(1 << 20);
  });

  it("makes an overlay of a relative base; info shows the chain and what the overlay holds", async () => {
    const base = path.join(dir, "base.img");
    expect((await cli("mkimage", base, "--size", "4M")).code).toBe(0);
    const top = path.join(dir, "top.qcow2");
    const r = await cli(
      "mkimage",
      top,
      "--format",
      "qcow2",
      "--backing",
      "base.img",
      "--cluster-size",
      "4K",
      "--compat",
      "0.10",
    );
    expect(r.code).toBe(0);
    const q = JSON.parse(qemuImg(["info", "--output=json", top]).out) as Record<string, unknown>;
    expect(q["backing-filename"]).toBe("base.img");
    expect(q["backing-filename-format"]).toBe("raw");
    expect(q["virtual-size"]).toBe(4 << 20);
    expect(q["cluster-size"]).toBe(4096);
    expect((q["format-specific"] as { data: { compat: string } }).data.compat).toBe("0.10");

    const data = path.join(dir, "data.bin");
    fs.writeFileSync(data, Buffer.alloc(6000 - (6000 % 512), 0x42));
    expect((await cli("write", top, "--lba", "9", "-i", data, "--via", "dma")).code).toBe(0);
    const info = await cli("info", top, "--json");
    expect(info.code).toBe(0);
    const chain = JSON.parse(info.stdout.toString()) as {
      format: string;
      allocated: number;
      backingFile?: string;
    }[];
    expect(chain.map((l) => l.format)).toEqual(["qcow2", "raw"]);
    expect(chain[0]!.backingFile).toBe("base.img");
    // Sectors 9..19 touch 4 KiB clusters 1 and 2: two clusters of this image hold guest data.
    expect(chain[0]!.allocated).toBe(8192);
    const text = (await cli("info", top)).stdout.toString();
    expect(text).toMatch(/^file format: qcow2$/m);
    expect(text).toMatch(/^virtual size: 4 MiB \(4194304 bytes\)$/m);
    expect(text).toMatch(/^backing file: base\.img/m);
    expect(text).toMatch(/^file format: raw$/m);
    expect(qemuCheck(top).status).toBe(0);
    expect(fs.readFileSync(base).every((b) => b === 0)).toBe(true);
  });

  it.each([
    [["--format", "qcow2"], 2, /required option '-s, --size <size>'/],
    [["--format", "qcow2", "--size", "1M", "--cluster-size", "3K"], 2, /power of two from 512 to 2M/],
    [["--format", "qcow2", "--size", "1M", "--cluster-size", "4M"], 2, /power of two from 512 to 2M/],
    [["--format", "qcow2", "--size", "1M", "--compat", "2"], 2, /--compat must be 1.1 or 0.10/],
    [["--format", "vmdk", "--size", "1M"], 2, /--format must be raw or qcow2/],
    [["--size", "1M", "--backing", "x.img"], 2, /applies to --format qcow2/],
    [["--format", "qcow2", "--backing", "missing.img"], 1, /cannot open the backing image missing\.img/],
  ])("mkimage %j: one line, exit %i", async (args, code, msg) => {
    const img = path.join(dir, `bad${Math.random().toString(36).slice(2)}.qcow2`);
    const r = await cli("mkimage", img, ...(args as string[]));
    expect(r.code).toBe(code);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(msg);
    expect(fs.existsSync(img)).toBe(false);
  });

  it("info of a missing image or a bad --format is one line", async () => {
    const r = await cli("info", path.join(dir, "none.qcow2"));
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    const f = await cli("info", path.join(dir, "big.qcow2"), "--format", "qcow");
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/--format must be raw or qcow2/);
  });
});
