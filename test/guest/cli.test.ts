import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { runCli } from "../../src/cli/main.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "xenide-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SECTORS = 4096;

function image(name: string): string {
  const p = join(dir, name);
  const d = new Uint8Array(SECTORS * 512);
  for (let i = 0; i < d.length; i++) d[i] = (i * 31 + (i >> 9)) & 0xff;
  writeFileSync(p, d);
  return p;
}

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Run the CLI in-process, capturing what it prints. */
async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((s: string | Uint8Array) => {
    out += typeof s === "string" ? s : Buffer.from(s).toString();
    return true;
  });
  const e = vi.spyOn(process.stderr, "write").mockImplementation((s: string | Uint8Array) => {
    err += typeof s === "string" ? s : Buffer.from(s).toString();
    return true;
  });
  try {
    const code = await runCli(argv);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

const bytesAt = (img: string, lba: number, count: number): Buffer =>
  readFileSync(img).subarray(lba * 512, (lba + count) * 512);

describe("xenide write + read: round trips through the emulated controller", () => {
  for (const engine of ["sync", "async"]) {
    const pairs: [string, string][] = [
      ["pio", "dma"],
      ["dma", "rep"],
      ["rep", "pio32"],
      ["pio32", "pio"],
    ];
    for (const [wvia, rvia] of pairs) {
      it(`write --via ${wvia}, read --via ${rvia} (${engine} engine): file bytes equal image bytes`, async () => {
        const img = image(`rt-${engine}-${wvia}.img`);
        const input = join(dir, `in-${engine}-${wvia}.bin`);
        const output = join(dir, `out-${engine}-${wvia}.bin`);
        const data = randomBytes(9 * 512, wvia.length + engine.length);
        writeFileSync(input, data);
        const before = readFileSync(img);
        const w = await cli("write", img, "--lba", "300", "-i", input, "--via", wvia, "--engine", engine);
        expect(w.err).toBe("");
        expect(w.code).toBe(0);
        expect(bytesAt(img, 300, 9).equals(Buffer.from(data))).toBe(true);
        // Neighbouring sectors untouched.
        expect(bytesAt(img, 299, 1).equals(before.subarray(299 * 512, 300 * 512))).toBe(true);
        expect(bytesAt(img, 309, 1).equals(before.subarray(309 * 512, 310 * 512))).toBe(true);
        const r = await cli(
          "read",
          img,
          "--lba",
          "299",
          "--count",
          "11",
          "--via",
          rvia,
          "--engine",
          engine,
          "-o",
          output,
        );
        expect(r.code).toBe(0);
        expect(readFileSync(output).equals(bytesAt(img, 299, 11))).toBe(true);
      });
    }
  }

  it("LBA48 forced and READ/WRITE MULTIPLE give the same bytes", async () => {
    const img = image("mult.img");
    const input = join(dir, "mult.bin");
    writeFileSync(input, randomBytes(20 * 512, 99));
    expect((await cli("write", img, "--lba", "0x100", "-i", input, "--multiple", "8", "--lba48")).code).toBe(
      0,
    );
    const r = await cli("read", img, "--lba", "256", "--count", "20", "--multiple", "4", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { hex: string; via: string };
    expect(Buffer.from(j.hex, "hex").equals(readFileSync(input))).toBe(true);
  });
});

describe("xenide read output", () => {
  it("prints an xxd-style dump at image offsets, and the exit costs", async () => {
    const img = image("dump.img");
    const r = await cli("read", img, "--lba", "1", "--count", "1");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines).toHaveLength(32);
    const b = bytesAt(img, 1, 1);
    const hex = (i: number): string => b[i]!.toString(16).padStart(2, "0");
    expect(lines[0]!.startsWith(`00000200: ${hex(0)}${hex(1)} ${hex(2)}${hex(3)} `)).toBe(true);
    expect(r.err).toMatch(/pioIn\s+\d/);
    expect(r.err).toMatch(/exits\/sector/);
  });

  it("--json reports counts, exits per sector and modelled cycles; --cost overrides a kind", async () => {
    const img = image("json.img");
    const a = JSON.parse((await cli("read", img, "--lba", "0", "--count", "4", "--json")).out) as {
      cost: { counts: Record<string, number>; exits: number; cycles: number; exitsPerSector: number };
    };
    expect(a.cost.counts.pioIn).toBeGreaterThan(4 * 256);
    expect(a.cost.exitsPerSector).toBeCloseTo(a.cost.exits / 4);
    const b = JSON.parse(
      (
        await cli(
          "read",
          img,
          "--lba",
          "0",
          "--count",
          "4",
          "--json",
          "--cost",
          "pioIn=0",
          "--cost",
          "pioOut=0",
        )
      ).out,
    ) as { cost: { cycles: number; counts: Record<string, number> } };
    // Only the IRQ injections are left to cost: 2,550 cycles each by default.
    expect(b.cost.cycles).toBe(b.cost.counts.irqInject! * 2550);
    expect(a.cost.cycles).toBeGreaterThan(b.cost.cycles);
  });

  it("--trace writes one JSON line per exit", async () => {
    const img = image("trace.img");
    const trace = join(dir, "t.jsonl");
    expect(
      (await cli("read", img, "--lba", "0", "--count", "1", "--via", "rep", "--trace", trace)).code,
    ).toBe(0);
    const events = readFileSync(trace, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { ev: string; dataIsPtr?: boolean; port?: number });
    expect(events.some((e) => e.ev === "ioreq" && e.dataIsPtr === true && e.port === 0x1f0)).toBe(true);
    expect(events.some((e) => e.ev === "irq")).toBe(true);
  });

  it("identify prints the drive's strings, capacity and cost", async () => {
    const img = image("id.img");
    const r = await cli("identify", img);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^model\s+\S/m);
    expect(r.out).toMatch(/capacity\s+4,096 sectors \(2 MiB\)/);
    expect(r.out).toMatch(/total exits/);
    const j = JSON.parse((await cli("identify", img, "--json")).out) as {
      identity: { sectors: number; lba48: boolean };
    };
    expect(j.identity).toMatchObject({ sectors: SECTORS, lba48: true });
  });
});

describe("xenide mistakes: one line, non-zero exit", () => {
  it("write refuses input that is not whole sectors unless --pad", async () => {
    const img = image("pad.img");
    const input = join(dir, "odd.bin");
    writeFileSync(input, randomBytes(700, 5));
    const r = await cli("write", img, "--lba", "3", "-i", input);
    expect(r.code).not.toBe(0);
    expect(r.err.trim().split("\n")).toHaveLength(1);
    expect(r.err).toMatch(/not a multiple of 512.*--pad/);
    const ok = await cli("write", img, "--lba", "3", "-i", input, "--pad");
    expect(ok.code).toBe(0);
    const got = bytesAt(img, 3, 2);
    expect(got.subarray(0, 700).equals(readFileSync(input))).toBe(true);
    expect(got.subarray(700).every((x) => x === 0)).toBe(true);
  });

  it("write to a --read-only image fails clearly and leaves it unchanged", async () => {
    const img = image("ro.img");
    const input = join(dir, "ro.bin");
    writeFileSync(input, randomBytes(512, 6));
    const before = readFileSync(img);
    const r = await cli("write", img, "--lba", "0", "-i", input, "--read-only");
    expect(r.code).not.toBe(0);
    expect(r.err.trim().split("\n")).toHaveLength(1);
    expect(r.err).toMatch(/read-only/);
    expect(readFileSync(img).equals(before)).toBe(true);
  });

  it.each([
    [["read", "IMG", "--lba", "4096"], /beyond the end/],
    [["read", "IMG", "--lba", "x"], /--lba expects/],
    [["read", "IMG", "--lba", "0", "--via", "carrier-pigeon"], /--via must be one of pio, pio32, rep, dma/],
    [["read", "IMG", "--lba", "0", "--engine", "warp"], /--engine must be sync or async/],
    [["read", "IMG", "--lba", "0", "--cost", "pioIn=fast"], /bad cost/],
    [["read", "IMG", "--lba", "0", "--lba28", "--lba48"], /exclude each other/],
    [["read", "IMG", "--lba", "0", "--multiple", "4", "--via", "dma"], /--multiple/],
    [["read", join(dir, "missing.img"), "--lba", "0"], /missing\.img/],
    // The PV ring has no addressing modes, DRQ blocks or interrupt polling; IDENTIFY moves through the data port.
    [["read", "IMG", "--lba", "0", "--via", "pv", "--multiple", "4"], /--multiple applies to the IDE paths/],
    [
      ["read", "IMG", "--lba", "0", "--via", "pv", "--lba28", "--poll"],
      /--lba28, --poll apply to the IDE paths/,
    ],
    [["read", "IMG", "--lba", "0", "--via", "pv", "--lba48"], /--lba48 applies to the IDE paths/],
    [["identify", "IMG", "--via", "pv"], /--via for identify is pio, pio32 or rep, got 'pv'/],
    [["identify", "IMG", "--via", "dma"], /--via for identify is pio, pio32 or rep, got 'dma'/],
  ])("%j", async (args, msg) => {
    const img = image("mistake.img");
    const r = await cli(...args.map((a) => (a === "IMG" ? img : a)));
    expect(r.code).not.toBe(0);
    expect(r.err.trim().split("\n")).toHaveLength(1);
    expect(r.err).toMatch(msg);
  });

  it("every command's --help has an example", async () => {
    for (const c of ["identify", "read", "write", "qtest"]) {
      const r = await cli(c, "--help");
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/Example/);
    }
  });

  it("as a real process: exit code and a single stderr line", () => {
    const img = image("proc.img");
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "read", img, "--lba", "99999"],
      {
        cwd: ROOT,
        encoding: "utf8",
      },
    );
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^xenide: .*beyond the end/);
  });
});
