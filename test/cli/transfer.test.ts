/**
 * `read` and `write` move sectors in chunks: ranges larger than a chunk arrive whole and in order, through
 * files, standard input and standard output; mistakes are one line with exit code 1 (the operation failed) or
 * 2 (usage); an output file appears only complete. The pieces of src/cli/transfer.ts are tested directly too.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/errors.ts";
import { OutputFile, TransferProgress, writeStream } from "../../src/cli/transfer.ts";
import { createImage } from "../../src/storage/index.ts";
import { cli } from "./in-process.ts";
import { runXenide } from "./spawn.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-transfer-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1024 * 1024;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** An image full of distinct bytes. */
function image(name: string, bytes = 8 * MiB): string {
  const p = join(dir, name);
  writeFileSync(p, pattern(bytes, bytes + name.length));
  return p;
}

const sectorsOf = (img: string, lba: number, count: number): Buffer =>
  readFileSync(img).subarray(lba * 512, (lba + count) * 512);

const leftovers = (d: string): string[] => readdirSync(d).filter((f) => f.includes("xenide-partial"));

const oneLine = (stderr: string): string[] => stderr.trim().split("\n");

describe("read: ranges larger than a chunk", () => {
  // 1 MiB chunks: these ranges start off a chunk boundary and end in the middle of one.
  for (const [via, count] of [
    ["pio", 4500],
    ["dma", 10_000],
    ["pv", 10_000],
  ] as const) {
    it(`--via ${via}, ${count} sectors to a file and to standard output: the image's bytes`, async () => {
      const img = image(`r-${via}.img`);
      const out = join(dir, `r-${via}.bin`);
      const f = await cli("read", img, "--lba", "7", "--count", String(count), "--via", via, "-o", out);
      expect(f.stderr).toBe("");
      expect(f.code).toBe(0);
      expect(readFileSync(out).equals(sectorsOf(img, 7, count))).toBe(true);
      expect(leftovers(dir)).toEqual([]);
      const s = await cli("read", img, "--lba", "7", "--count", String(count), "--via", via, "-o", "-");
      expect(s.code).toBe(0);
      expect(s.stdout.equals(sectorsOf(img, 7, count))).toBe(true);
      expect(s.stderr).toMatch(new RegExp(`cost of reading ${count} sector`));
    });
  }

  it("the hex dump and --json's hex of a range larger than a chunk", async () => {
    const img = image("dump.img");
    const count = 2048 + 3;
    const d = await cli("read", img, "--lba", "2047", "--count", String(count), "--via", "dma");
    expect(d.code).toBe(0);
    const lines = d.stdout.toString().trimEnd().split("\n");
    expect(lines).toHaveLength((count * 512) / 16);
    const data = sectorsOf(img, 2047, count);
    const hexAt = (off: number): string =>
      Array.from({ length: 8 }, (_, i) => data.subarray(off + 2 * i, off + 2 * i + 2).toString("hex")).join(
        " ",
      );
    for (const row of [0, 1 * 32, 32 * 2048 - 1, lines.length - 1]) {
      expect(
        lines[row]!.startsWith(
          `${(2047 * 512 + row * 16).toString(16).padStart(8, "0")}: ${hexAt(row * 16)} `,
        ),
      ).toBe(true);
    }
    const j = await cli("read", img, "--lba", "2047", "--count", String(count), "--via", "pv", "--json");
    expect(j.code).toBe(0);
    const parsed = JSON.parse(j.stdout.toString()) as Record<string, unknown> & {
      hex: string;
      cost: { exits: number };
    };
    expect(Buffer.from(parsed.hex, "hex").equals(data)).toBe(true);
    expect(parsed).toMatchObject({ lba: 2047, count, bytes: count * 512, via: "pv" });
    expect(parsed.cost.exits).toBeGreaterThan(0);
  });

  it("opens the image read-only: an image the process cannot write is read without --read-only", async () => {
    const img = image("ro.img", MiB);
    const isRoot = process.getuid?.() === 0;
    if (isRoot) {
      // root writes a 0444 file anyway; an immutable one it cannot open for writing.
      if (spawnSync("chattr", ["+i", img]).status !== 0) return; // no chattr or no support: nothing to show
    } else chmodSync(img, 0o444);
    try {
      const r = await cli("read", img, "--lba", "0", "--count", "2048", "-o", "-", "--via", "dma");
      expect(r.stderr).toMatch(/cost of reading 2048 sector/);
      expect(r.code).toBe(0);
      expect(r.stdout.equals(readFileSync(img))).toBe(true);
    } finally {
      if (isRoot) spawnSync("chattr", ["-i", img]);
      else chmodSync(img, 0o644);
    }
  });
});

describe("write -i -: standard input, streamed", () => {
  it("several MiB from a pipe, the last sector padded: the bytes on the disk", async () => {
    const img = image("w-stdin.img");
    const before = readFileSync(img);
    const data = pattern(3 * MiB + 700, 9);
    const r = await runXenide(["write", img, "--lba", "33", "-i", "-", "--pad", "--via", "dma"], {
      input: data,
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const count = Math.ceil(data.length / 512);
    expect(r.stdout.toString()).toMatch(new RegExp(`^wrote ${count} sector\\(s\\) at LBA 33 and flushed`));
    const got = sectorsOf(img, 33, count);
    expect(got.subarray(0, data.length).equals(data)).toBe(true);
    expect(got.subarray(data.length).every((b) => b === 0)).toBe(true);
    expect(
      sectorsOf(img, 33 + count, 1).equals(before.subarray((33 + count) * 512, (34 + count) * 512)),
    ).toBe(true);
  });

  it("an input longer than the disk: one line, exit 2, only the whole chunks inside the disk written", async () => {
    const img = image("w-long.img", 2 * MiB); // 4096 sectors
    const before = readFileSync(img);
    const data = pattern(3 * MiB, 4);
    const r = await runXenide(["write", img, "--lba", "1000", "-i", "-", "--via", "pv"], { input: data });
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toEqual([
      "xenide: standard input runs past the end of the disk (4096 sectors); sectors 1000..3047 were written before it",
    ]);
    const after = readFileSync(img);
    expect(after.length).toBe(before.length);
    expect(after.subarray(1000 * 512, 3048 * 512).equals(data.subarray(0, MiB))).toBe(true);
    expect(after.subarray(3048 * 512).equals(before.subarray(3048 * 512))).toBe(true);
    expect(after.subarray(0, 1000 * 512).equals(before.subarray(0, 1000 * 512))).toBe(true);
  });

  it("an input that is not whole sectors without --pad, and an empty one: one line each", async () => {
    const img = image("w-odd.img", MiB);
    const odd = await runXenide(["write", img, "--lba", "0", "-i", "-"], { input: pattern(1000, 1) });
    expect(odd.code).toBe(2);
    expect(oneLine(odd.stderr)).toEqual([
      "xenide: standard input is 1000 bytes, not a multiple of 512 (add --pad to zero-fill the last sector)",
    ]);
    const empty = await runXenide(["write", img, "--lba", "0", "-i", "-"], { input: Buffer.alloc(0) });
    expect(empty.code).toBe(2);
    expect(oneLine(empty.stderr)).toEqual(["xenide: standard input is empty: nothing to write"]);
  });
});

describe("mistakes: one line naming what is wrong, exit 1 or 2", () => {
  it("-i a directory and -i a missing file name the file, exit 1", async () => {
    const img = image("m.img", MiB);
    const sub = join(dir, "a-directory");
    mkdirSync(sub, { recursive: true });
    const d = await cli("write", img, "--lba", "0", "-i", sub);
    expect(d.code).toBe(1);
    expect(oneLine(d.stderr)).toEqual([
      `xenide: cannot read ${sub}: it is a directory, not a file of bytes to write`,
    ]);
    const missing = join(dir, "missing.bin");
    const m = await cli("write", img, "--lba", "0", "-i", missing);
    expect(m.code).toBe(1);
    expect(oneLine(m.stderr)).toEqual([`xenide: cannot read ${missing}: no such file or directory`]);
  });

  it("write --lba28 past sector 2^28 - 1: one line, exit 2, nothing written; read the same; below it works", async () => {
    const img = join(dir, "big.img");
    createImage(img, 129 * 1024 * MiB); // sparse, past the 28-bit limit
    const input = join(dir, "two.bin");
    writeFileSync(input, pattern(1024, 3));
    const w = await cli("write", img, "--lba", String(2 ** 28 - 2), "-i", input, "--lba28");
    expect(w.code).toBe(2);
    expect(oneLine(w.stderr)).toEqual([
      "xenide: sectors 268435454..268435455 are beyond what LBA28 commands reach (sectors below 268435455; leave out --lba28 to use LBA48)",
    ]);
    expect(statSync(img).blocks).toBe(0);
    const r = await cli("read", img, "--lba", String(2 ** 28), "--lba28", "--via", "dma", "-o", "-");
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toEqual([
      "xenide: sector 268435456 is beyond what LBA28 commands reach (sectors below 268435455; leave out --lba28 to use LBA48)",
    ]);
    const ok = await cli("write", img, "--lba", String(2 ** 28 - 3), "-i", input, "--lba28");
    expect(ok.stderr).toBe("");
    expect(ok.code).toBe(0);
    const back = await cli("read", img, "--lba", String(2 ** 28 - 3), "--count", "2", "--lba28", "-o", "-");
    expect(back.code).toBe(0);
    expect(back.stdout.equals(readFileSync(input))).toBe(true);
  });

  it("read past the end is refused before anything is written: no output file", async () => {
    const img = image("end.img", MiB);
    const out = join(dir, "end.bin");
    const r = await cli("read", img, "--lba", "2000", "--count", "100", "-o", out);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toEqual([
      "xenide: sectors 2000..2099 are beyond the end of the disk (2048 sectors)",
    ]);
    expect(existsSync(out)).toBe(false);
    expect(leftovers(dir)).toEqual([]);
  });

  it("-o a directory (exit 1) or the image itself (exit 2): one line, nothing replaced", async () => {
    const img = image("self.img", MiB);
    const before = readFileSync(img);
    const d = await cli("read", img, "--lba", "0", "-o", dir);
    expect(d.code).toBe(1);
    expect(oneLine(d.stderr)).toEqual([`xenide: cannot write ${dir}: it is a directory`]);
    const s = await cli("read", img, "--lba", "0", "-o", img);
    expect(s.code).toBe(2);
    expect(oneLine(s.stderr)).toEqual([`xenide: cannot write ${img}: it is the image being read`]);
    expect(readFileSync(img).equals(before)).toBe(true);
  });

  it("write --via pv to a --read-only image: one line, exit 1", async () => {
    const img = image("pv-ro.img", MiB);
    const input = join(dir, "s.bin");
    writeFileSync(input, pattern(512, 2));
    const r = await cli("write", img, "--lba", "0", "-i", input, "--via", "pv", "--read-only");
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(
      /^xenide: .*pv-ro\.img is open read-only \(--read-only\): the drive refused the write/,
    );
  });
});

describe("transfer pieces", () => {
  /** A terminal-like stream that records what is drawn. */
  function tty(): { stream: NodeJS.WritableStream & { isTTY: boolean }; text: () => string } {
    let text = "";
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        text += chunk.toString();
        cb();
      },
    }) as Writable & { isTTY: boolean; columns: number };
    stream.isTTY = true;
    stream.columns = 100;
    return { stream, text: () => text };
  }

  it("the progress bar stays away for the first second, then shows bytes and percentage, and is cleared", () => {
    let clock = 0;
    const t = tty();
    const p = new TransferProgress({
      enabled: true,
      label: "read",
      total: 10 * MiB,
      stream: t.stream,
      now: () => clock,
    });
    for (let i = 1; i <= 4; i++) {
      clock += 200;
      p.update(i * MiB);
    }
    expect(p.shown).toBe(false);
    expect(t.text()).toBe("");
    clock += 300;
    p.update(5 * MiB);
    expect(p.shown).toBe(true);
    expect(t.text()).toMatch(/read \[.*\] 50% \| 5\.0 MiB of 10\.0 MiB/);
    p.stop();
    expect(t.text()).toMatch(/\x1b\[2K$/); // the line is cleared, leaving room for the result
  });

  it("no bar on a stream that is not a terminal, nor when disabled", () => {
    let clock = 0;
    for (const [enabled, isTTY] of [
      [true, false],
      [false, true],
    ]) {
      const t = tty();
      t.stream.isTTY = isTTY!;
      const p = new TransferProgress({
        enabled: enabled!,
        label: "write",
        total: undefined,
        stream: t.stream,
        now: () => clock,
      });
      clock += 5000;
      p.update(MiB);
      p.stop();
      expect(p.shown).toBe(false);
      expect(t.text()).toBe("");
    }
  });

  it("writeStream waits for 'drain' when the stream asks to", async () => {
    const pending: (() => void)[] = [];
    const slow = new Writable({
      highWaterMark: 4,
      write(_chunk, _enc, cb) {
        pending.push(cb);
      },
    });
    expect(writeStream(slow, "ab")).toBeUndefined();
    let done = false;
    const p = writeStream(slow, "cdefgh");
    expect(p).toBeInstanceOf(Promise);
    void (p as Promise<void>).then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    while (pending.length) pending.shift()!();
    await p;
    expect(done).toBe(true);
  });

  it("an OutputFile appears only on commit, keeps an existing file's mode, and abort leaves no trace", () => {
    const sub = mkdtempSync(join(dir, "of-"));
    const target = join(sub, "out.bin");
    const a = OutputFile.create(target);
    a.write(Buffer.from("partial"));
    expect(existsSync(target)).toBe(false);
    expect(leftovers(sub)).toHaveLength(1);
    a.abort();
    expect(readdirSync(sub)).toEqual([]);

    writeFileSync(target, "previous");
    chmodSync(target, 0o600);
    const b = OutputFile.create(target);
    b.write(Buffer.from("new "));
    b.write(Buffer.from("content"));
    expect(readFileSync(target, "utf8")).toBe("previous");
    b.commit();
    expect(readFileSync(target, "utf8")).toBe("new content");
    expect(statSync(target).mode & 0o777).toBe(0o600);
    expect(readdirSync(sub)).toEqual(["out.bin"]);

    const c = OutputFile.create(target);
    c.write(Buffer.from("never"));
    c.abort();
    expect(readFileSync(target, "utf8")).toBe("new content");
    expect(readdirSync(sub)).toEqual(["out.bin"]);
  });

  it("an OutputFile on a dangling symbolic link creates the file the link names; the link stays a link", () => {
    const sub = mkdtempSync(join(dir, "link-"));
    const link = join(sub, "out.link");
    // Two hops, relative targets: out.link -> mid.link -> data/out.bin (data/ exists, out.bin does not).
    mkdirSync(join(sub, "data"));
    symlinkSync("mid.link", link);
    symlinkSync("data/out.bin", join(sub, "mid.link"));
    const o = OutputFile.create(link);
    o.write(Buffer.from("through the link"));
    o.commit();
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(lstatSync(join(sub, "mid.link")).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(sub, "data", "out.bin"), "utf8")).toBe("through the link");
    expect(readdirSync(join(sub, "data"))).toEqual(["out.bin"]);
  });

  it("an OutputFile on a FIFO-like target (/dev/null) writes in place; a missing directory is one line", () => {
    const n = OutputFile.create("/dev/null");
    expect(n.tempPath).toBeNull();
    n.write(Buffer.alloc(4096));
    n.commit();
    const missing = join(dir, "no-such-dir", "x.bin");
    let err: unknown;
    try {
      OutputFile.create(missing);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(1);
    expect((err as UsageError).message).toBe(`cannot write ${missing}: no such file or directory`);
  });
});

it("leaves no temporary files behind in the test directory", () => {
  expect(leftovers(dir)).toEqual([]);
});
