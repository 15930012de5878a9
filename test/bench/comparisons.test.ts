/**
 * The bench's comparisons with QEMU's own programs and its CD-ROM rows: the result fields they fill, how
 * their outputs are read, and the targets checked against them. Structure and exact counts only; no timing
 * is asserted.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { CD_COMMAND_BYTES, measureCd } from "../../src/bench/cd.ts";
import { cdTable, formatsLine, formatsTable, ideTestLine, ideTestTable } from "../../src/bench/compare.ts";
import { measureFormats, parseQemuImgBench, qemuImgArgs } from "../../src/bench/formats.ts";
import {
  casePassed,
  combineRounds,
  measureIdeTest,
  packageRoot,
  parseCaseList,
} from "../../src/bench/idetest.ts";
import { directSupported, prepareImage } from "../../src/bench/image.ts";
import { checkTargets } from "../../src/bench/targets.ts";
import type { FormatsResult, IdeTestResult, Spread } from "../../src/bench/types.ts";

let dir = "";
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xenide-bench-compare-"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const s = (median: number): Spread => ({ median, min: median, max: median });
const none = { rows: [], dispatch: null, rss: null, qtest: null };

describe("qemu-img bench: arguments and output", () => {
  it("matches xenide's workload: the image's format, -t none, the depth, 4 KiB, the count", () => {
    expect(qemuImgArgs("qcow2", "/i.qcow2", 32, 5000)).toEqual([
      "bench",
      "-f",
      "qcow2",
      "-t",
      "none",
      "-d",
      "32",
      "-s",
      "4K",
      "-c",
      "5000",
      "/i.qcow2",
    ]);
    // An NBD export is a raw disk whatever the server decodes behind it.
    const url = "nbd+unix:///bench?socket=/s";
    expect(qemuImgArgs("nbd", url, 1, 9)).toEqual([
      "bench",
      "-f",
      "raw",
      "-t",
      "none",
      "-d",
      "1",
      "-s",
      "4K",
      "-c",
      "9",
      url,
    ]);
  });

  it("reads the run time from its output, and nothing from output without one", () => {
    const out =
      "Sending 5000 read requests, 4096 bytes each, 32 in parallel (starting at offset 0, step size 4096)\n" +
      "Run completed in 0.215 seconds.\n";
    expect(parseQemuImgBench(out)).toBe(0.215);
    expect(parseQemuImgBench("qemu-img: Could not open 'x': No such file or directory\n")).toBeNull();
  });
});

describe("targets from the format and ide-test comparisons", () => {
  const formats = (raw: number, qcow2: number, nbd: number, q = 10000): FormatsResult => ({
    status: "ok",
    qemuImgVersion: "qemu-img version 7.2",
    imageBytes: 1 << 20,
    repeats: 1,
    budgetMs: 10,
    rows: (
      [
        ["raw", raw],
        ["qcow2", qcow2],
        ["nbd", nbd],
      ] as const
    ).map(([medium, x]) => ({
      medium,
      qd: 32,
      blockSize: 4096,
      direct: medium !== "nbd",
      status: "ok" as const,
      xenideRandIops: s(x),
      xenideSeqIops: s(x),
      qemuImgIops: s(q),
      ratio: x / q,
      seqRatio: x / q,
      qemuImg: `qemu-img bench ... ${medium}`,
    })),
  });

  it("qcow2 and NBD against qemu-img bench (>= 0.8x), qcow2 against raw (>= 0.9x)", () => {
    const t = checkTargets({ ...none, formats: formats(10000, 8500, 7000) });
    const by = (id: string) => t.find((x) => x.id === id)!;
    expect(by("raw-vs-qemu-img")).toMatchObject({ measured: 1, met: true });
    expect(by("qcow2-vs-qemu-img")).toMatchObject({ measured: 0.85, met: true });
    expect(by("qcow2-vs-raw")).toMatchObject({ measured: 0.85, threshold: 0.9, met: false });
    expect(by("nbd-vs-qemu-img")).toMatchObject({ measured: 0.7, met: false });
    expect(by("nbd-vs-qemu-img").detail).toMatch(/missed by 13%/);
  });

  it("qcow2 against raw comes from the alternating rounds when the run has them, not from the two rows", () => {
    const f = { ...formats(10000, 6000, 7000), qcow2OfRaw: { raw: s(20000), qcow2: s(19000), ratio: 0.95 } };
    const t = checkTargets({ ...none, formats: f });
    expect(t.find((x) => x.id === "qcow2-vs-raw")).toMatchObject({ measured: 0.95, met: true });
    expect(t.find((x) => x.id === "qcow2-vs-raw")!.detail).toMatch(/19\.0k vs raw 20\.0k IOPS.*alternating/);
    expect(formatsLine(f)).toMatch(/alternating rounds: 19\.0k vs 20\.0k IOPS random, 0\.95x/);
  });

  it("a medium that did not run is not measured, with its reason; a run without the comparison says so", () => {
    const f = formats(10000, 9000, 9000);
    f.rows[2] = { ...f.rows[2]!, status: "unavailable", note: "qemu-nbd not installed", ratio: null };
    const t = checkTargets({ ...none, formats: f });
    expect(t.find((x) => x.id === "nbd-vs-qemu-img")).toMatchObject({ measured: null, met: null });
    expect(t.find((x) => x.id === "nbd-vs-qemu-img")!.detail).toMatch(/qemu-nbd not installed/);
    const absent = checkTargets(none);
    for (const id of ["qcow2-vs-qemu-img", "nbd-vs-qemu-img", "ide-test-vs-qemu"])
      expect(absent.find((x) => x.id === id)!.met, id).toBeNull();
  });

  const ideTest = (ratio: number | null, qemu: boolean): IdeTestResult => ({
    status: "ok",
    cases: 2,
    launcher: {
      passed: 2,
      seconds: 3,
      cases: [
        { name: "/x86_64/ide/identify", ok: true, seconds: 1 },
        { name: "/x86_64/ide/flush", ok: true, seconds: 2 },
      ],
    },
    qemu: qemu
      ? {
          version: "QEMU emulator version 7.2.22",
          passed: 1,
          seconds: 2,
          cases: [
            { name: "/x86_64/ide/identify", ok: true, seconds: 1.25 },
            { name: "/x86_64/ide/flush", ok: false, seconds: 0.75, note: "not ok" },
          ],
        }
      : null,
    ...(qemu ? {} : { qemuNote: "Debian's QEMU has no accel-qtest module" }),
    compared: qemu ? 1 : 0,
    ratio,
  });

  it("the launcher's ide-test time against QEMU's: lower is better, at most 1x", () => {
    const t = (r: IdeTestResult) =>
      checkTargets({ ...none, ideTest: r }).find((x) => x.id === "ide-test-vs-qemu")!;
    expect(t(ideTest(0.8, true))).toMatchObject({ measured: 0.8, met: true });
    expect(t(ideTest(1.13, true))).toMatchObject({ measured: 1.13, met: false });
    const notMeasured = t(ideTest(null, false));
    expect(notMeasured.met).toBeNull();
    expect(notMeasured.detail).toMatch(/QEMU not measured: Debian's QEMU has no accel-qtest module/);
  });

  it("the ide-test table and line: case by case, the ratio only where both passed", () => {
    const r = ideTest(0.8, true);
    const tb = ideTestTable(r);
    expect(tb.rows).toEqual([
      ["/ide/identify", "pass 1.00 s", "pass 1.25 s", "0.80x"],
      ["/ide/flush", "pass 2.00 s", "FAIL 0.75 s", "-"],
    ]);
    expect(ideTestLine(r)).toMatch(/launcher 2\/2 passed.*1\/2 passed.*1 cases both passed/);
    expect(ideTestLine(ideTest(null, false))).toMatch(/QEMU not measured/);
  });

  it("the formats table: a row per medium and depth, a failed one with its reason", () => {
    const f = formats(10000, 9000, 8000, 10000);
    f.rows.push({ ...f.rows[0]!, qd: 1, status: "error", note: "boom", ratio: null });
    const tb = formatsTable(f);
    expect(tb.rows.map((r) => r.slice(0, 2))).toEqual([
      ["raw (O_DIRECT)", "32"],
      ["qcow2 (O_DIRECT)", "32"],
      ["nbd", "32"],
      ["raw", "1"],
    ]);
    expect(tb.rows[1]!.slice(5)).toEqual(["0.90x", "0.90x"]);
    expect(tb.rows[3]![2]).toBe("error: boom");
  });
});

describe("ide-test runner", () => {
  it("reads glib's case list and TAP verdicts", () => {
    expect(
      parseCaseList(
        "# random seed: R02S\n/x86_64/ide/identify\n# Start of bmdma tests\n/x86_64/ide/bmdma/trim\n",
      ),
    ).toEqual(["/x86_64/ide/identify", "/x86_64/ide/bmdma/trim"]);
    expect(casePassed("ok 1 /x86_64/ide/flush\n", "/x86_64/ide/flush", 0)).toBe(true);
    // The parent path's "ok" line is not the sub-case's, and a failing exit status outweighs the line.
    expect(casePassed("ok 1 /x86_64/ide/flush/nodev\n", "/x86_64/ide/flush", 0)).toBe(false);
    expect(casePassed("ok 1 /x86_64/ide/flush\n", "/x86_64/ide/flush", 1)).toBe(false);
    expect(casePassed("ok 1 /x86_64/ide/flush\nnot ok 2 /x86_64/ide/flush\n", "/x86_64/ide/flush", 0)).toBe(
      false,
    );
  });

  it("a case over rounds passes only if every round did, with the median round's time", () => {
    const c = combineRounds([
      { name: "/a", ok: true, seconds: 3 },
      { name: "/a", ok: false, seconds: 1, note: "timed out" },
      { name: "/a", ok: true, seconds: 2 },
    ]);
    expect(c).toEqual({ name: "/a", ok: false, seconds: 2, rounds: [3, 1, 2], note: "timed out" });
  });

  it("finds the package root from a module inside it", () => {
    const root = packageRoot(path.join(process.cwd(), "src", "bench"));
    expect(root).not.toBeNull();
    expect(JSON.parse(fs.readFileSync(path.join(root!, "package.json"), "utf8")).name).toBe("xenide");
  });

  it("says 'ide-test not built' when the binary is missing", async () => {
    const root = path.join(dir, "no-ide-test");
    fs.mkdirSync(path.join(root, "bin"), { recursive: true });
    const old = process.env.XENIDE_IDE_TEST;
    delete process.env.XENIDE_IDE_TEST;
    try {
      const r = await measureIdeTest(1, root);
      expect(r).toMatchObject({ status: "unavailable", qemu: null, ratio: null });
      expect(r.note).toMatch(/^ide-test not built/);
    } finally {
      if (old !== undefined) process.env.XENIDE_IDE_TEST = old;
    }
  });

  // A stand-in for ide-test that records how it was run: the case list, one case per process with its
  // deeper cases skipped, QEMU with QEMU_MODULE_DIR, the launcher without, and the two interleaved.
  const qemuThere = spawnSync(process.env.XENIDE_QEMU ?? "qemu-system-x86_64", ["--version"]).status === 0;
  (qemuThere || process.env.CI === "true" ? it : it.skip)(
    "runs each case against both programs, interleaved, QEMU with the rebuilt module's directory",
    async () => {
      const root = path.join(dir, "fake");
      const modules = path.join(root, "modules");
      fs.mkdirSync(path.join(root, "bin"), { recursive: true });
      fs.mkdirSync(modules);
      fs.writeFileSync(path.join(root, "bin", "xenide-system-x86_64"), "");
      fs.writeFileSync(path.join(modules, "accel-qtest-x86_64.so"), "");
      const log = path.join(root, "log");
      const fake = path.join(root, "ide-test");
      fs.writeFileSync(
        fake,
        [
          "#!/bin/sh",
          `if [ "$1" = -l ]; then printf '# seed\\n/x86_64/ide/a\\n/x86_64/ide/b\\n/x86_64/ide/b/c\\n'; exit 0; fi`,
          `case "$QTEST_QEMU_BINARY" in *xenide-system-x86_64) who=launcher ;; *) who=qemu ;; esac`,
          `echo "$who $* module=$QEMU_MODULE_DIR" >> ${log}`,
          `if [ "$2" = /x86_64/ide/b ] && [ $who = launcher ]; then echo "not ok 1 $2"; echo "ERROR: wrong status"; exit 1; fi`,
          `echo "ok 1 $2"`,
        ].join("\n") + "\n",
        { mode: 0o755 },
      );
      process.env.XENIDE_IDE_TEST = fake;
      process.env.XENIDE_QEMU_MODULE_DIR = modules;
      try {
        const r = await measureIdeTest(1, root);
        expect(r.status).toBe("ok");
        expect(r.cases).toBe(3);
        expect(r.launcher.passed).toBe(2);
        expect(r.launcher.cases.find((c) => c.name === "/x86_64/ide/b")).toMatchObject({
          ok: false,
          note: "ERROR: wrong status",
        });
        expect(r.qemu?.passed).toBe(3);
        expect(r.compared).toBe(2);
        expect(r.ratio).toBeGreaterThan(0);
        const lines = fs.readFileSync(log, "utf8").trim().split("\n");
        expect(lines).toEqual([
          `launcher -p /x86_64/ide/a module=`,
          `qemu -p /x86_64/ide/a module=${modules}`,
          `qemu -p /x86_64/ide/b -s /x86_64/ide/b/c module=${modules}`,
          `launcher -p /x86_64/ide/b -s /x86_64/ide/b/c module=`,
          `launcher -p /x86_64/ide/b/c module=`,
          `qemu -p /x86_64/ide/b/c module=${modules}`,
        ]);
        // Without the module, QEMU is not measured, and the reason names the script that builds it.
        fs.rmSync(path.join(modules, "accel-qtest-x86_64.so"));
        const r2 = await measureIdeTest(1, root);
        expect(r2.qemu).toBeNull();
        expect(r2.qemuNote).toMatch(/scripts\/build-qemu-accel-qtest\.sh/);
        expect(r2.launcher.cases).toHaveLength(3);
      } finally {
        delete process.env.XENIDE_IDE_TEST;
        delete process.env.XENIDE_QEMU_MODULE_DIR;
      }
    },
  );
});

describe("CD-ROM rows", () => {
  it("PIO and DMA for the CD and the disk at each command size, exits per 2 KiB and per MiB consistent", async () => {
    const r = await measureCd();
    expect(r.status, r.note).toBe("ok");
    expect(r.rows.map((x) => `${x.device} ${x.via} ${x.bytesPerCommand}`).sort()).toEqual(
      (["cd", "disk"] as const)
        .flatMap((d) =>
          (["pio", "dma"] as const).flatMap((v) => CD_COMMAND_BYTES.map((b) => `${d} ${v} ${b}`)),
        )
        .sort(),
    );
    for (const x of r.rows) {
      expect(x.exitsPer2KiB).toBeCloseTo(x.exitsPerCommand / (x.bytesPerCommand / 2048), 9);
      expect(x.exitsPerMiB).toBeCloseTo(x.exitsPerCommand * (2 ** 20 / x.bytesPerCommand), 6);
    }
    const at = (d: string, v: string, b: number) =>
      r.rows.find((x) => x.device === d && x.via === v && x.bytesPerCommand === b)!;
    // By DMA a command costs the same exits whatever it moves; by PIO every 16-bit word is an exit.
    expect(at("cd", "dma", 32768).exitsPerCommand).toBe(at("cd", "dma", 2048).exitsPerCommand);
    expect(at("cd", "pio", 32768).exitsPerCommand).toBeGreaterThan(16384);
    // Interrupts (QEMU's ide_atapi_cmd_reply_end: one per DRQ block and one at the end; a 32 KiB reply fits
    // one DRQ block under the 65534-byte limit): CD PIO 2 per command, the disk's READ SECTORS one per sector.
    expect(at("cd", "pio", 32768).irqPerCommand).toBe(2);
    expect(at("disk", "pio", 32768).irqPerCommand).toBe(64);
    expect(at("cd", "dma", 32768).irqPerCommand).toBe(1);
    expect(cdTable(r).rows).toHaveLength(8);
  });
});

const qemuUtils = ["qemu-img", "qemu-nbd"].find((p) => spawnSync(p, ["--version"]).status !== 0);
if (qemuUtils && process.env.CI !== "true")
  console.log(`skipping the qemu-img comparison: ${qemuUtils} not found`);

describe("raw, qcow2 and NBD against qemu-img bench", () => {
  (qemuUtils && process.env.CI !== "true" ? it.skip : it)(
    "measures every medium at QD1 and QD32 after checking its bytes, beside qemu-img bench",
    async () => {
      const image = path.join(dir, "bench.img");
      prepareImage(image, 8 << 20);
      // The bench's write cells run before this comparison: the image's bytes are whatever they left, and every
      // medium must read the file's bytes (here: a block overwritten where the comparison checks).
      const fd = fs.openSync(image, "r+");
      fs.writeSync(fd, new Uint8Array(4096).fill(0xa5), 0, 4096, 4 << 20);
      fs.closeSync(fd);
      const r = await measureFormats({
        image,
        workingSet: 8 << 20,
        direct: directSupported(image),
        repeats: 1,
        budgetMs: 30,
      });
      expect(r.status, r.note).toBe("ok");
      expect(r.qemuImgVersion).toMatch(/qemu-img/);
      expect(r.checked).toEqual(["raw", "qcow2", "nbd"]);
      expect(r.rows.map((x) => `${x.medium}/${x.qd}/${x.status}`)).toEqual([
        "raw/1/ok",
        "raw/32/ok",
        "qcow2/1/ok",
        "qcow2/32/ok",
        "nbd/1/ok",
        "nbd/32/ok",
      ]);
      for (const x of r.rows) {
        expect(x.ratio).toBeCloseTo(x.xenideRandIops!.median / x.qemuImgIops!.median, 9);
        expect(x.seqRatio).toBeCloseTo(x.xenideSeqIops!.median / x.qemuImgIops!.median, 9);
        expect(x.qemuImg).toMatch(
          x.medium === "qcow2"
            ? /-f qcow2 -t none -d \d+ -s 4K/
            : x.medium === "nbd"
              ? /-f raw .*nbd\+unix:\/\/\/bench\?socket=/
              : /-f raw -t none/,
        );
      }
      expect(r.rows.find((x) => x.medium === "nbd")!.direct).toBe(false);
      // qcow2 against raw in alternating rounds, beside the rows.
      const alt = r.qcow2OfRaw!;
      expect(alt.raw.median).toBeGreaterThan(0);
      expect(alt.ratio).toBeCloseTo(alt.qcow2.median / alt.raw.median, 9);
      // The bench image itself is left as it was: the NBD export is read-only and the qcow2 copy is removed.
      expect(fs.statSync(image).size).toBe((8 << 20) + 512);
    },
    60_000,
  );
});
