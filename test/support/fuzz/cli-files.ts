/**
 * Property: a CLI command changes only the files it was asked to change, and never prints a stack.
 *
 * Each case makes a scratch tree of random existing files — raw images of several sizes (sector multiples and
 * not), a read-only image (mode 0444), a directory with a file in it, files of random bytes, files named like
 * the outputs commands write (`out.bin`, `sample.img`, `bench.img`, `latest.json`, `index.html`, ...), bench
 * results that are valid, truncated or hollow, symbolic links (one dangling), a character device that discards
 * what is written (a stand-in for /dev/null, which no case names) — then runs one random argument
 * vector for a random command as a child process (the bundled CLI, `node xenide.mjs ...`, with stdin closed or
 * fed a few lines, a timeout, a current directory of its own that starts empty and a TMPDIR of its own), and
 * checks:
 *
 * 1. neither stderr nor stdout holds a stack trace (`    at ...`) or "internal error";
 * 2. the exit code is 0, 1 or 2 (and a non-zero exit says something on stderr);
 * 3. every file that existed before and that the command was not explicitly asked to change has the same bytes,
 *    size, mode, mtime and inode (a symbolic link the same target, a directory the same mode); and no new entry
 *    appears anywhere in the tree (scratch files, current directory, TMPDIR) except where a flag named it.
 *
 * "Explicitly asked to change" (computed by commander's own option parser on the same argument vector, so
 * combined short flags, `--flag=value`, repeated options and defaults mean what they mean to the CLI):
 * - the image of `write`, unless `--read-only`; the FILE of `mkimage --force`;
 * - `-o FILE` of `read` (not `-`); `--trace FILE` of identify/read/write/qtest;
 * - `bench --json FILE`, `bench --out DIR` (its latest.json and latest.md), `bench/demo --image FILE --force`;
 * - `report --out DIR` (its index.html, index.md and charts/; the default `report` is documented);
 * - except that a file the same command reads (the image of read/identify/pv-keys/qtest/vm, write's `-i`, the
 *   JSON of report) is never fair game for an output flag: `read disk.img --trace disk.img` must not truncate the
 *   image it reads, as `read disk.img -o disk.img` is already refused.
 * New entries are allowed only at those paths, at `mkimage FILE`, `bench/demo --image FILE`, and as the missing
 * parents of a named output directory. A command that fails (exit != 0) may still have written its `write`
 * image (documented), its traces and its output directories, but not the files it makes in one go: a failed
 * `read -o`, `mkimage [--force]`, `bench --json` or `--image` leaves an existing file as it was and no new one
 * (as `read -o` documents).
 *
 * Commands that would run for seconds are kept on paths that fail fast: `bench` always carries a flag it must
 * refuse (or an existing non-bench `--image`), `demo` always an existing `--image` without `--force` (which it
 * must refuse), `vm` always a flag it must refuse (never a boot), `qtest --socket` only paths that are not free.
 * With `heavy` (the long run), a real quick bench and a demo with `--force` appear rarely.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import fc from "fast-check";

// ---- the project and the CLI bundle --------------------------------------------------------------------------

/** The checkout (the directory of package.json named "xenide"), from wherever this module runs (bundled or not). */
export function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg)) {
      try {
        if ((JSON.parse(fs.readFileSync(pkg, "utf8")) as { name?: string }).name === "xenide") return dir;
      } catch {
        // Not ours; keep looking.
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

export interface CliBundle {
  /** The entry point to run with `node`. */
  path: string;
  dispose(): void;
}

/**
 * Bundle the CLI as scripts/build.mjs does (same esbuild options), into a private directory under
 * node_modules/.cache, so the bundle resolves the packages and no other run's `npm run build` can swap dist/
 * under a running case. `XENIDE_FUZZ_CLI=path/to/xenide.mjs` uses an existing bundle instead (dist/xenide.mjs).
 */
export async function buildCliBundle(): Promise<CliBundle> {
  const root = projectRoot();
  const given = process.env.XENIDE_FUZZ_CLI;
  if (given) return { path: path.resolve(root, given), dispose() {} };
  const { build } = await import("esbuild");
  const cache = path.join(root, "node_modules", ".cache", "xenide-cli-files");
  fs.mkdirSync(cache, { recursive: true });
  const out = fs.mkdtempSync(path.join(cache, `cli-${process.pid}-`));
  await build({
    absWorkingDir: root,
    entryPoints: { xenide: "src/cli/main.ts" },
    outdir: out,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    sourcemap: false,
    logLevel: "warning",
  });
  return {
    path: path.join(out, "xenide.mjs"),
    dispose: () => fs.rmSync(out, { recursive: true, force: true }),
  };
}

// ---- the scratch tree ----------------------------------------------------------------------------------------

/**
 * Paths in a case are written with placeholders, so a counterexample reads the same in every run: `{F}` is the
 * scratch directory of existing files, `{R}` the case's root (holding `files/`, `cwd/` and `tmp/`). A relative
 * path is relative to the child's current directory, `{R}/cwd`, so `../files/x` names a scratch file.
 */
const F = "{F}";
const R = "{R}";

/** Entries that may exist (0 = absent, n = the n-th variant). disk.img, notes.txt and adir/ always exist. */
const OPTIONAL = {
  "small.img": [4096, 512, 65536, 0, 511, 1000],
  "odd.img": [1000, 65536 + 17, 513],
  "ro.img": [65536],
  "in.bin": [1024, 512, 4096, 700, 0],
  "out.bin": [100, 4096],
  "sample.img": [4096],
  "bench.img": [4096],
  "latest.json": ["real", "hollow", "truncated", "junk", "nulls", "empty-lists"],
  "bad.json": ["hollow", "nulls", "truncated", "junk", "real"],
  "latest.md": ["text"],
  "index.html": ["text"],
  "trace.jsonl": ["text"],
  "link.img": ["disk.img"],
  "dangling.img": ["gone.img"],
  rodir: ["x.img"],
  // A character device that discards what is written (our own node for /dev/null's device numbers when this
  // process may make one, else a link to /dev/null): no case names the real /dev/null, which a command that
  // removes what it failed to write would delete.
  "null.dev": ["device"],
} as const;
type OptionalName = keyof typeof OPTIONAL;
const OPTIONAL_NAMES = Object.keys(OPTIONAL) as OptionalName[];

export interface WorldSpec {
  /** Size of disk.img (always there). */
  disk: number;
  /** Seed of every file's bytes. */
  fill: number;
  /** Size of notes.txt, random bytes (always there). */
  notes: number;
  /** Variant (1-based) of each optional entry, 0 when absent. */
  has: Partial<Record<OptionalName, number>>;
}

const presence = (n: number): fc.Arbitrary<number> =>
  fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 4, arbitrary: fc.integer({ min: 1, max: n }) },
  );

export const worldArb: fc.Arbitrary<WorldSpec> = fc.record({
  disk: fc.constantFrom(262144, 65536, 1048576, 262144 + 1536),
  fill: fc.integer({ min: 0, max: 0xffff }),
  notes: fc.constantFrom(700, 0, 4096, 1),
  has: fc.record(
    Object.fromEntries(OPTIONAL_NAMES.map((n) => [n, presence(OPTIONAL[n].length)])) as Record<
      OptionalName,
      fc.Arbitrary<number>
    >,
  ),
});

function bytesOf(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

let realBench: string | null = null;
function realBenchJson(): string {
  realBench ??= fs.readFileSync(path.join(projectRoot(), "bench", "latest.json"), "utf8");
  return realBench;
}

function benchJson(variant: string): string {
  const hollow = { schema: "xenide-bench/1", rows: [], targets: [], costs: [], checks: [], machine: {} };
  switch (variant) {
    case "real":
      return realBenchJson();
    case "hollow":
      return JSON.stringify(hollow);
    case "nulls":
      return JSON.stringify({ ...hollow, rows: [null], targets: [null], costs: [null], checks: [null] });
    case "empty-lists": {
      const real = JSON.parse(realBenchJson()) as Record<string, unknown>;
      return JSON.stringify({ ...real, rows: [], targets: [] });
    }
    case "truncated":
      return realBenchJson().slice(0, 2000);
    default:
      return '{"schema": "xenide-bench/1", "rows": "no"';
  }
}

const OLD = new Date("2001-02-03T04:05:06Z");

/** Make the tree for `w` under a fresh root; returns the root. */
export function makeWorld(base: string, w: WorldSpec): string {
  const root = fs.mkdtempSync(path.join(base, "case-"));
  const files = path.join(root, "files");
  for (const d of ["files", "cwd", "tmp"]) fs.mkdirSync(path.join(root, d));
  const put = (name: string, data: Buffer | string): void => fs.writeFileSync(path.join(files, name), data);
  put("disk.img", bytesOf(w.disk, w.fill));
  put("notes.txt", bytesOf(w.notes, w.fill + 1));
  fs.mkdirSync(path.join(files, "adir"));
  put("adir/inner.bin", bytesOf(1024, w.fill + 2));
  for (const name of OPTIONAL_NAMES) {
    const v = w.has[name] ?? 0;
    if (v === 0) continue;
    const variant = OPTIONAL[name][v - 1]!;
    const seed = w.fill + 3 + OPTIONAL_NAMES.indexOf(name);
    if (name === "link.img" || name === "dangling.img") {
      fs.symlinkSync(String(variant), path.join(files, name));
    } else if (name === "null.dev") {
      makeNullDevice(path.join(files, name));
    } else if (name === "rodir") {
      fs.mkdirSync(path.join(files, name));
      put(`${name}/${String(variant)}`, bytesOf(4096, seed));
    } else if (name.endsWith(".json")) put(name, benchJson(String(variant)));
    else if (typeof variant === "number") put(name, bytesOf(variant, seed));
    else put(name, `${name} ${seed}\n`.repeat(20));
  }
  // Old timestamps, so a rewrite within the same clock tick still shows; then the read-only modes.
  for (const e of walk(root)) if (!e.isLink) fs.utimesSync(e.abs, OLD, OLD);
  if (w.has["ro.img"]) fs.chmodSync(path.join(files, "ro.img"), 0o444);
  if (w.has.rodir) {
    fs.chmodSync(path.join(files, "rodir", "x.img"), 0o444);
    fs.chmodSync(path.join(files, "rodir"), 0o555);
  }
  return root;
}

let mknodWorks: boolean | null = null;

/** A node for the null device (1, 3), or where mknod is not allowed, a symbolic link to /dev/null. */
function makeNullDevice(at: string): void {
  if (mknodWorks !== false) {
    const r = spawnSync("mknod", ["-m", "666", at, "c", "1", "3"], { stdio: "ignore" });
    mknodWorks = r.status === 0;
    if (mknodWorks) return;
  }
  fs.symlinkSync("/dev/null", at);
}

/** Remove a case's tree, whatever modes the case left in it. */
export function removeWorld(root: string): void {
  try {
    for (const e of walk(root)) if (e.isDir) fs.chmodSync(e.abs, 0o755);
  } catch {
    // Best effort; rmSync reports what it cannot remove.
  }
  fs.rmSync(root, { recursive: true, force: true });
}

interface Walked {
  abs: string;
  isDir: boolean;
  isLink: boolean;
}

function* walk(dir: string): Generator<Walked> {
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const abs = path.join(dir, d.name);
    yield { abs, isDir: d.isDirectory(), isLink: d.isSymbolicLink() };
    if (d.isDirectory()) yield* walk(abs);
  }
}

// ---- snapshots -----------------------------------------------------------------------------------------------

interface Entry {
  type: "file" | "dir" | "link" | "other";
  mode: number;
  size: bigint;
  mtimeNs: bigint;
  ino: bigint;
  /** sha256 of a file's bytes (files of the initial tree are small), or a link's target. */
  content: string;
}

function entryOf(abs: string, hash: boolean): Entry {
  const st = fs.lstatSync(abs, { bigint: true });
  const type = st.isFile() ? "file" : st.isDirectory() ? "dir" : st.isSymbolicLink() ? "link" : "other";
  let content = "";
  if (type === "link") content = fs.readlinkSync(abs);
  else if (type === "file" && hash && st.size <= 16n << 20n)
    content = createHash("sha256").update(fs.readFileSync(abs)).digest("hex");
  return { type, mode: Number(st.mode), size: st.size, mtimeNs: st.mtimeNs, ino: st.ino, content };
}

function snapshot(root: string, hash: (abs: string) => boolean): Map<string, Entry> {
  const m = new Map<string, Entry>();
  for (const e of walk(root)) m.set(e.abs, entryOf(e.abs, hash(e.abs)));
  return m;
}

// ---- cases ---------------------------------------------------------------------------------------------------

export interface FilesCase {
  world: WorldSpec;
  /** Command first; paths with the {F}/{R} placeholders. */
  argv: string[];
  /** Lines fed to stdin (qtest), or a number of bytes (write -i -); stdin is closed at once otherwise. */
  stdin: string[] | number | null;
}

const existingNames = ["disk.img", "notes.txt", "adir", ...OPTIONAL_NAMES];
const abs = (n: string): string => `${F}/${n}`;

/** Any path a user might type: scratch files (absolute and relative), missing ones, odd ones. */
const pathArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...existingNames.map(abs)) },
  { weight: 1, arbitrary: fc.constantFrom(...existingNames.map((n) => `../files/${n}`)) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      abs("missing.img"),
      abs("new.bin"),
      abs("adir/new.img"),
      abs("adir/inner.bin"),
      abs("no/such/x.img"),
      abs("disk.img/x"),
      abs("rodir/x.img"),
      abs("rodir/new.img"),
      F,
      `${F}/`,
    ),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom("out.bin", "new.img", "sub/x.bin", ".", "..", "", "-", R, "./"),
  },
);

/** An image argument: mostly one that opens. */
const imageArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(abs("disk.img")) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(abs("small.img"), abs("ro.img"), abs("link.img"), "../files/disk.img"),
  },
  { weight: 4, arbitrary: pathArb },
);

/** An output argument: any path, now and then a file the same command may be reading. */
const outArb = fc.oneof(
  { weight: 5, arbitrary: pathArb },
  { weight: 1, arbitrary: fc.constantFrom(abs("disk.img"), abs("in.bin"), "../files/disk.img") },
);

/** A path that exists in every world. */
const alwaysThere = fc.constantFrom(abs("disk.img"), abs("notes.txt"), abs("adir"), "../files/disk.img");

/** A first sector: mostly inside the smaller images, now and then past the end or not a number. */
const lbaArb = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: 120 }).map(String) },
  { weight: 2, arbitrary: fc.integer({ min: 121, max: 2100 }).map(String) },
  { weight: 1, arbitrary: fc.constantFrom("0x10", "0x1fffffffffffff", "2048", "2049") },
  { weight: 1, arbitrary: fc.constantFrom("-1", "0x", "1.5", "abc", "", "9007199254740993") },
);

/** A sector count: mostly a few. */
const countArb = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1, max: 16 }).map(String) },
  { weight: 2, arbitrary: fc.integer({ min: 17, max: 600 }).map(String) },
  { weight: 1, arbitrary: fc.constantFrom("0", "0x10", "abc", "-1") },
);

const sizeArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom("64K", "1M", "512", "4k", "1G", "2048") },
  { weight: 1, arbitrary: fc.constantFrom("1000", "0", "-1M", "1.5M", "2X", "", "9999999T") },
);

const textArb = fc.oneof(
  fc.string({ maxLength: 6 }),
  fc.constantFrom("pio", "pio32", "rep", "dma", "pv", "sync", "async", "exit=5", "=", "x86_32-abi"),
);

type Item = fc.Arbitrary<string[]>;

/** `--flag value`, now and then `--flag=value`. */
function opt(names: string[], value: fc.Arbitrary<string>): Item {
  return fc
    .tuple(fc.constantFrom(...names), value, fc.integer({ min: 0, max: 4 }))
    .map(([n, v, eq]) => (eq === 4 && n.startsWith("--") ? [`${n}=${v}`] : [n, v]));
}

const flags = (...f: string[]): Item => fc.constantFrom(...f.map((x) => [x]));

/** Tokens that are no option of any command, or mean something to commander itself. */
const junk: Item = fc.oneof(
  { weight: 3, arbitrary: flags("--bogus", "-x", "--", "-", "--bogus", "-x", "--", "-", "--json", "-h") },
  { weight: 1, arbitrary: textArb.map((t) => [t]) },
  { weight: 1, arbitrary: pathArb.map((p) => [p]) },
);

const tracingItems: Item[] = [
  opt(["--engine"], fc.constantFrom("sync", "async", "sync", "async", "sync", "async", "bogus")),
  opt(["--trace"], outArb),
  opt(
    ["--cost"],
    fc.constantFrom("pioIn=1", "grantMap=100", "pioOut=0", "hypercall=7", "irqInject=1", "=", "pioOut=-1"),
  ),
  flags("--read-only"),
];
const diskItems: Item[] = [...tracingItems, flags("--json", "--poll", "--read-only")];
const viaItem = opt(["--via"], fc.constantFrom("pio", "pio32", "rep", "dma", "pv", "dma", "pv", "bogus"));
const multipleItem = opt(
  ["--multiple"],
  fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom("1", "2", "4", "16") },
    { weight: 1, arbitrary: fc.constantFrom("5", "0", "abc") },
  ),
);

const MAX_ITEMS = 10;

/**
 * An argument vector: the command, its positionals, every `required` item (left out now and then), a few
 * `optional` ones and now and then a junk token, in a random order.
 */
function assemble(
  command: string,
  positionals: fc.Arbitrary<string[]>,
  required: Item[],
  optional: Item[],
  maxOptional = 4,
): fc.Arbitrary<string[]> {
  const req = required.map((r) =>
    fc.oneof({ weight: 1, arbitrary: fc.constant([] as string[]) }, { weight: 20, arbitrary: r }),
  );
  return fc
    .record({
      pos: positionals,
      required: req.length ? fc.tuple(...req) : fc.constant([] as string[][]),
      optional: optional.length
        ? fc.array(fc.oneof(...optional), { maxLength: maxOptional })
        : fc.constant([]),
      junk: fc.oneof(
        { weight: 7, arbitrary: fc.constant([] as string[][]) },
        { weight: 1, arbitrary: fc.tuple(junk) },
      ),
      order: fc.array(fc.nat({ max: 99 }), { minLength: MAX_ITEMS, maxLength: MAX_ITEMS }),
    })
    .map(({ pos, required, optional, junk, order }) => {
      const groups = [pos, ...required, ...optional, ...junk].filter((g) => g.length > 0);
      const keyed = groups.map((g, i) => ({ g, k: order[i % MAX_ITEMS]! * 100 + i }));
      keyed.sort((a, b) => a.k - b.k);
      return [command, ...keyed.flatMap((x) => x.g)];
    });
}

const onePath = (a: fc.Arbitrary<string>) =>
  fc.oneof(
    { weight: 12, arbitrary: a.map((p) => [p]) },
    { weight: 1, arbitrary: fc.constant([] as string[]) },
  );

const lbaItem = opt(["--lba"], lbaArb);

const mkimageArb = assemble(
  "mkimage",
  onePath(pathArb),
  [opt(["-s", "--size"], sizeArb)],
  [flags("-f", "--force", "-f", "--force"), opt(["-s", "--size"], sizeArb)],
  1,
);

const identifyArb = assemble(
  "identify",
  onePath(imageArb),
  [],
  [...diskItems, opt(["--via"], fc.constantFrom("pio", "pio32", "rep", "pio", "pio32", "rep", "dma", "pv"))],
);

const readOptional: Item[] = [
  opt(["--count"], countArb),
  opt(["--count"], countArb),
  opt(["-o", "--output"], outArb),
  opt(["-o", "--output"], pathArb),
  viaItem,
  ...diskItems,
  flags("--lba48", "--lba28", "--no-progress"),
  multipleItem,
];
const readArb = assemble("read", onePath(imageArb), [lbaItem], readOptional, 5);
/** read into a file: the output flag is there (and may be repeated). */
const readOutArb = assemble(
  "read",
  onePath(imageArb),
  [lbaItem, opt(["-o", "--output"], outArb)],
  readOptional,
  3,
);

const writeArb = assemble(
  "write",
  onePath(imageArb),
  [
    lbaItem,
    opt(
      ["-i", "--input"],
      fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(abs("in.bin"), "../files/in.bin", "-", abs("small.img")) },
        { weight: 2, arbitrary: pathArb },
      ),
    ),
  ],
  [
    viaItem,
    ...diskItems,
    flags("--pad", "--no-flush", "--read-only", "--lba48", "--lba28", "--no-progress", "--pad"),
    multipleItem,
  ],
);

/**
 * Socket paths that are not free in any tree (files and a directory every tree has, a missing parent): a
 * qtest that listened there would serve until killed.
 */
const busySocket = fc.constantFrom(
  abs("disk.img"),
  abs("notes.txt"),
  abs("adir"),
  abs("adir/inner.bin"),
  "../files/notes.txt",
  abs("no/such/sock"),
  abs("disk.img/sock"),
);

const qtestArb = assemble(
  "qtest",
  fc.oneof(
    { weight: 9, arbitrary: fc.constant([] as string[]) },
    { weight: 1, arbitrary: pathArb.map((p) => [p]) },
  ),
  [opt(["--disk"], imageArb)],
  [
    opt(["--disk"], imageArb),
    opt(["--slave", "--secondary", "--secondary-slave"], imageArb),
    opt(["--socket"], busySocket),
    opt(["--connect"], pathArb),
    opt(["--ram"], fc.constantFrom("128M", "1M", "4K", "1000", "0", "abc", "64M")),
    opt(["--model", "--firmware", "--serial"], textArb),
    ...tracingItems,
  ],
);

const qtestLines = fc.array(
  fc.constantFrom(
    "inb 0x1f7",
    "outb 0x1f6 0xa0",
    "outb 0x1f6 0xe0",
    "outb 0x1f7 0xec",
    "inw 0x1f0",
    "inl 0x1f0",
    "outb 0x1f2 0x01",
    "outb 0x1f3 0x00",
    "outb 0x1f7 0x20",
    "outb 0x1f7 0xe7",
    "outb 0x3f6 0x04",
    "outb 0x3f6 0x00",
    "outl 0xcf8 0x80000900",
    "inl 0xcfc",
    "readl 0x1000",
    "writel 0x1000 0x12345678",
    "irq_intercept_in ioapic",
    "clock_step",
    "bogus 1 2 3",
    "",
  ),
  { maxLength: 8 },
);

const pvKeysArb = assemble(
  "pv-keys",
  onePath(imageArb),
  [],
  [
    opt(["--ring-pages"], fc.constantFrom("1", "2", "16", "3", "0", "abc")),
    opt(["--queues"], fc.constantFrom("1", "4", "5", "0")),
    opt(["--indirect"], fc.constantFrom("0", "32", "256", "7")),
    opt(["--protocol"], fc.constantFrom("x86_64-abi", "x86_32-abi", "arm")),
    flags("--no-persistent", "--json"),
  ],
);

/** One flag that `bench` must refuse, appended last so it wins over any earlier copy. */
const benchPoison: Item = fc.oneof(
  opt(["--repeats", "--budget"], fc.constantFrom("0", "-1", "abc", "1.5", "")),
  opt(["--threadpool"], fc.constantFrom("0", "abc")),
  opt(["--rss-probe"], fc.constantFrom("0", "abc")),
  flags("--bogus"),
);

const benchCommon: Item[] = [
  opt(["--json"], outArb),
  opt(["--json"], pathArb),
  flags("--json", "--quick", "--no-rss", "--no-qtest", "--no-save"),
  opt(["--out"], pathArb),
  opt(["--out"], pathArb),
  opt(["--only"], fc.constantFrom("ide-dma", "pv", "x")),
  opt(["--repeats", "--budget"], fc.constantFrom("1", "0", "abc")),
  opt(["--threadpool"], fc.constantFrom("16", "4", "0")),
];

/** bench that must fail before it measures: a refused flag last, or an existing --image it did not make. */
const benchArb: fc.Arbitrary<string[]> = fc.oneof(
  fc
    .tuple(
      assemble("bench", fc.constant([]), [], [...benchCommon, opt(["--image"], pathArb), flags("-f")]),
      benchPoison,
    )
    .map(([a, p]) => [...a, ...p]),
  fc
    .tuple(assemble("bench", fc.constant([]), [], benchCommon, 3), alwaysThere)
    .map(([a, img]) => [...a.filter((t) => !/^--rss-probe/.test(t)), "--image", img]),
);

const reportArb = assemble(
  "report",
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.constantFrom(abs("latest.json"), abs("bad.json"), "../files/latest.json").map((p) => [p]),
    },
    { weight: 3, arbitrary: pathArb.map((p) => [p]) },
    { weight: 1, arbitrary: fc.constant([] as string[]) },
  ),
  [opt(["--out"], fc.oneof(pathArb, fc.constantFrom(abs("rep"), "rep", abs("adir"), abs("no/such/rep"))))],
  [opt(["--out"], pathArb), opt(["--guests", "--v86"], pathArb)],
  2,
);

/** demo with an existing --image and no --force: refused before any work. */
const demoArb = fc
  .tuple(
    fc.oneof(
      { weight: 5, arbitrary: fc.constant([] as string[]) },
      { weight: 1, arbitrary: flags("--bogus", "-x") },
    ),
    alwaysThere,
  )
  .map(([j, img]) => ["demo", ...j, "--image", img]);

/** vm with a flag it must refuse last: never a boot. */
const vmArb = fc
  .tuple(
    assemble(
      "vm",
      onePath(imageArb),
      [],
      [
        opt(["--bios", "--vga-bios", "--kernel", "--initrd"], pathArb),
        opt(["--memory"], fc.constantFrom("128", "0", "abc")),
        opt(["--append"], textArb),
        flags("--read-only", "--no-bus-master"),
      ],
    ),
    fc.oneof(
      opt(["--memory", "--timeout"], fc.constantFrom("0", "-5", "abc")),
      opt(["--engine"], fc.constantFrom("bogus", "")),
      opt(["--bios"], fc.constantFrom(abs("missing.bin"), abs("no/such/bios.bin"))),
      opt(["--until"], fc.constantFrom("(", "[a-", "*")),
      flags("--bogus"),
    ),
  )
  .map(([a, p]) => [...a, ...p]);

/** Long-run only: the commands that really run for seconds. */
const heavyArb: fc.Arbitrary<string[]> = fc.oneof(
  fc
    .tuple(
      fc.array(
        fc.oneof(
          opt(["--out"], pathArb),
          opt(["--json"], pathArb),
          flags("--json"),
          opt(["--image"], pathArb),
          flags("--force"),
        ),
        { maxLength: 3 },
      ),
    )
    .map(([items]) => [
      "bench",
      "--quick",
      "--no-rss",
      "--no-qtest",
      "--only",
      "ide-dma",
      "--repeats",
      "1",
      "--budget",
      "5",
      ...items.flat(),
    ]),
  fc
    .tuple(pathArb, fc.boolean())
    .map(([img, force]) => ["demo", "--image", img, ...(force ? ["--force"] : [])]),
);

export function cliFilesCaseArb(o: { heavy?: boolean } = {}): fc.Arbitrary<FilesCase> {
  const argv = fc.oneof(
    { weight: 2, arbitrary: readArb },
    { weight: 2, arbitrary: readOutArb },
    { weight: 4, arbitrary: writeArb },
    { weight: 3, arbitrary: mkimageArb },
    { weight: 2, arbitrary: identifyArb },
    { weight: 2, arbitrary: qtestArb },
    { weight: 1, arbitrary: pvKeysArb },
    { weight: 2, arbitrary: benchArb },
    { weight: 2, arbitrary: reportArb },
    { weight: 1, arbitrary: demoArb },
    { weight: 1, arbitrary: vmArb },
    ...(o.heavy ? [{ weight: 1, arbitrary: heavyArb }] : []),
  );
  return fc
    .record({ world: worldArb, argv, stdinPick: fc.nat(), lines: qtestLines })
    .map(({ world, argv, stdinPick, lines }) => {
      let stdin: FilesCase["stdin"] = null;
      if (argv[0] === "qtest" && stdinPick % 3 !== 0) stdin = lines;
      else if (argv[0] === "write" && argv.includes("-")) stdin = [0, 512, 700, 1024][stdinPick % 4]!;
      return { world, argv, stdin };
    });
}

// ---- what the command was asked to change ---------------------------------------------------------------------

/** Commander's reading of `argv`: the subcommand's option values (defaults included) and its operands. */
async function parseLikeTheCli(
  argv: string[],
): Promise<{ opts: Record<string, unknown>; operands: string[] } | null> {
  // A fresh program each time: option values stay on the Command objects.
  const { buildProgram } = await import("../../../src/cli/main.ts");
  const p: Command = await buildProgram();
  const sub = p.commands.find((c) => c.name() === argv[0]);
  if (!sub) return null;
  sub.configureOutput({ writeErr: () => {}, writeOut: () => {}, outputError: () => {} });
  try {
    const { operands, unknown } = sub.parseOptions(argv.slice(1));
    // Help among the unknown arguments (commander's _outputHelpIfRequested): the action does not run.
    if (unknown.some((a) => a === "-h" || a === "--help")) return null;
    return { opts: sub.opts(), operands };
  } catch {
    // Commander (or an option's own parser) refuses the vector: the action never runs, nothing may change.
    return null;
  }
}

/**
 * What a command may do to the tree. Each allowance says whether it holds when the command fails (exit != 0)
 * too: a failed `write` keeps what it wrote (documented), a trace is written whatever happens and an output
 * directory is made before the work; but a failed `read -o` leaves no partial file and keeps an existing one
 * (documented), and the same is expected of the other files a command makes in one go (`mkimage FILE`,
 * `bench --json FILE`, `--image FILE`): a run that fails must not have replaced or removed them.
 */
export interface Permissions {
  /** Existing paths the command may change (or remove, or replace); the value: also when it fails. */
  change: Map<string, boolean>;
  /** Paths where a new entry may appear; the value: also when it fails. */
  create: Map<string, boolean>;
  /** Directories whose listed children (or any child, for "*") may appear or change. */
  dirs: { dir: string; names: string[] | "*" }[];
  /** What each allowance came from, for the failure message. */
  why: string[];
  /**
   * Checks of what a command was asked to write, run after it with whether it failed: `write` may change only
   * the sectors it was asked to write (and with the input's bytes), `read -o` must write exactly the sectors.
   */
  checks: ((failed: boolean) => string[])[];
}

const SECTOR = 512;
/** Files read for the content checks: the images and inputs of the tree are small. */
const CHECK_LIMIT = 4 << 20;

/** A regular file's bytes (through links), or null: missing, not a regular file, too large. */
function bytesIfFile(p: string): Buffer | null {
  try {
    const st = fs.statSync(p);
    return st.isFile() && st.size <= CHECK_LIMIT ? fs.readFileSync(p) : null;
  } catch {
    return null;
  }
}

/** A sector number as the CLI reads one (decimal or 0x hex), or null. */
function sectorNumber(v: unknown): number | null {
  if (typeof v !== "string") return null;
  const t = v.trim();
  const n = /^0x[0-9a-f]+$/i.test(t) ? parseInt(t, 16) : /^\d+$/.test(t) ? Number(t) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

function sectorList(s: number[]): string {
  const shown = s.slice(0, 6).join(", ");
  return s.length > 6 ? `${shown}, ... (${s.length} sectors)` : shown;
}

async function permissions(argv: string[], cwd: string, stdin: Buffer | null): Promise<Permissions> {
  const p: Permissions = { change: new Map(), create: new Map(), dirs: [], why: [], checks: [] };
  const parsed = await parseLikeTheCli(argv);
  if (!parsed) return p;
  const { opts: o, operands } = parsed;
  const cmd = argv[0]!;
  const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
  /** The path as typed, and where it leads: its real path, or the targets of a chain of (dangling) links. */
  const resolveAll = (token: string): string[] => {
    const out = [path.resolve(cwd, token)];
    try {
      out.push(fs.realpathSync(out[0]!));
    } catch {
      // Missing, or a dangling link: writing through the link creates its target, as `> link` would.
      let at = out[0]!;
      for (let hop = 0; hop < 8; hop++) {
        let target: string;
        try {
          target = fs.readlinkSync(at);
        } catch {
          break;
        }
        at = path.resolve(path.dirname(at), target);
        out.push(at);
      }
    }
    return out;
  };

  // Files the command reads: no output flag may name them.
  const inputs = new Set<string>();
  const addInput = (t: string | undefined): void => {
    if (t && t !== "-") for (const a of resolveAll(t)) inputs.add(a);
  };
  if (["read", "identify", "pv-keys", "vm"].includes(cmd)) addInput(operands[0]);
  if (cmd === "report") addInput(operands[0] ?? "bench/latest.json");
  if (cmd === "write") addInput(str(o.input));
  if (cmd === "qtest") for (const k of ["disk", "slave", "secondary", "secondarySlave"]) addInput(str(o[k]));

  // What the command itself is for: these may change even when they are read too.
  const own = (
    t: string | undefined,
    what: string,
    o: { create: boolean; change: boolean; onFailure: boolean },
  ): void => {
    if (!t) return;
    p.why.push(`${what} ${t}${o.onFailure ? "" : " (if it succeeds)"}`);
    // Only the file itself: no flag naming a file asks for its missing parents to be made.
    for (const a of resolveAll(t)) {
      if (o.change) p.change.set(a, o.onFailure || (p.change.get(a) ?? false));
      if (o.create) p.create.set(a, o.onFailure || (p.create.get(a) ?? false));
    }
  };
  // Output flags: never over an input of the same command.
  const output = (t: string | undefined, what: string, onFailure: boolean): void => {
    // `-o -` is standard output; `--trace -` and `--json -` name a file called "-".
    if (!t || (t === "-" && what === "-o")) return;
    const all = resolveAll(t);
    if (all.some((a) => inputs.has(a))) {
      p.why.push(`${what} ${t} (NOT allowed: it is an input of ${cmd})`);
      return;
    }
    own(t, what, { create: true, change: true, onFailure });
  };
  const outDir = (t: string | undefined, what: string, names: string[], sub: string[] = []): void => {
    if (!t) return;
    p.why.push(`${what} ${t} (${[...names, ...sub.map((s) => `${s}/`)].join(", ")})`);
    for (const d of resolveAll(t)) {
      p.dirs.push({ dir: d, names });
      for (const s of sub) p.dirs.push({ dir: path.join(d, s), names: "*" });
      p.create.set(d, true);
      for (const s of sub) p.create.set(path.join(d, s), true);
    }
    addParents(p, path.resolve(cwd, t));
  };

  switch (cmd) {
    case "mkimage":
      own(operands[0], o.force ? "mkimage --force" : "mkimage", {
        create: true,
        change: o.force === true,
        onFailure: false,
      });
      break;
    case "write":
      if (!o.readOnly) {
        own(operands[0], "write image", { create: false, change: true, onFailure: true });
        if (operands[0]) checkWrite(p, path.resolve(cwd, operands[0]), o, cwd, stdin);
      }
      output(str(o.trace), "--trace", true);
      break;
    case "read":
      output(str(o.output), "-o", false);
      output(str(o.trace), "--trace", true);
      if (operands[0] && str(o.output) && o.output !== "-")
        checkRead(p, path.resolve(cwd, operands[0]), path.resolve(cwd, o.output as string), o, cwd);
      break;
    case "identify":
    case "qtest":
      output(str(o.trace), "--trace", true);
      break;
    case "bench":
      if (typeof o.json === "string") output(str(o.json), "--json", false);
      if (o.save !== false) outDir(str(o.out), "--out", ["latest.json", "latest.md"]);
      own(str(o.image), o.force ? "--image --force" : "--image", {
        create: true,
        change: o.force === true,
        onFailure: false,
      });
      break;
    case "demo":
      own(str(o.image), o.force ? "--image --force" : "--image", {
        create: true,
        change: o.force === true,
        onFailure: false,
      });
      break;
    case "report":
      outDir(str(o.out), "--out", ["index.html", "index.md", "charts"], ["charts"]);
      break;
  }
  return p;
}

/**
 * `write IMG --lba N -i IN`: the image keeps its size; after a success it is the old image with IN (zero-filled
 * to a whole sector with --pad) at sector N; after a failure each sector is either as it was or IN's sector
 * (the whole chunks before a failure stay written, as documented). Anything else changed bytes that the
 * command was not asked to change — a trace written over the image, say.
 */
function checkWrite(
  p: Permissions,
  image: string,
  o: Record<string, unknown>,
  cwd: string,
  stdin: Buffer | null,
): void {
  const old = bytesIfFile(image);
  const lba = sectorNumber(o.lba);
  const input =
    o.input === "-"
      ? (stdin ?? Buffer.alloc(0))
      : typeof o.input === "string"
        ? bytesIfFile(path.resolve(cwd, o.input))
        : null;
  if (!old || lba === null || !input) return;
  const data = Buffer.alloc(o.pad ? Math.ceil(input.length / SECTOR) * SECTOR : input.length);
  input.copy(data);
  let real = image;
  try {
    real = fs.realpathSync(image);
  } catch {
    return;
  }
  p.checks.push((failed) => {
    const now = bytesIfFile(real);
    if (!now) return [`write image ${path.basename(image)}: no longer a regular file it could check`];
    if (now.length !== old.length)
      return [`write image ${path.basename(image)}: size ${old.length} -> ${now.length}`];
    const outside: number[] = [];
    const wrong: number[] = [];
    for (let s = 0; s < old.length / SECTOR; s++) {
      const at = s * SECTOR;
      const was = old.subarray(at, at + SECTOR);
      const is = now.subarray(at, at + SECTOR);
      const inRange = s >= lba && (s - lba) * SECTOR < data.length;
      const want = inRange ? data.subarray((s - lba) * SECTOR, (s - lba + 1) * SECTOR) : null;
      if (!inRange) {
        if (!is.equals(was)) outside.push(s);
      } else if (!is.equals(want!) && !(failed && is.equals(was))) wrong.push(s);
    }
    const out: string[] = [];
    if (outside.length)
      out.push(
        `write image ${path.basename(image)}: sectors outside ${lba}.. changed: ${sectorList(outside)}`,
      );
    if (wrong.length)
      out.push(
        `write image ${path.basename(image)}: sectors that do not hold the input: ${sectorList(wrong)}`,
      );
    return out;
  });
}

/** `read IMG --lba N --count K -o OUT` that succeeds: OUT holds exactly those sectors of the image. */
function checkRead(
  p: Permissions,
  image: string,
  out: string,
  o: Record<string, unknown>,
  cwd: string,
): void {
  const img = bytesIfFile(image);
  const lba = sectorNumber(o.lba);
  const count = sectorNumber(o.count ?? "1");
  if (!img || lba === null || count === null) return;
  // A trace to the same file, or an output that is not a regular file, is not the bytes alone.
  if (typeof o.trace === "string" && path.resolve(cwd, o.trace) === out) return;
  p.checks.push((failed) => {
    if (failed) return [];
    let st: fs.Stats;
    try {
      st = fs.statSync(out);
    } catch {
      return [`read -o ${path.basename(out)}: succeeded but the file is not there`];
    }
    if (!st.isFile()) return [];
    const got = bytesIfFile(out);
    const want = img.subarray(lba * SECTOR, (lba + count) * SECTOR);
    return got && got.equals(want)
      ? []
      : [
          `read -o ${path.basename(out)}: ${st.size} bytes that are not sectors ${lba}..${lba + count - 1} of the image`,
        ];
  });
}

/** The missing parents of an output directory may be made (mkdir -p, as ensureWritableDir does). */
function addParents(p: Permissions, abs: string): void {
  let d = path.dirname(abs);
  while (d !== path.dirname(d)) {
    p.create.set(d, true);
    d = path.dirname(d);
  }
}

function allowed(p: Permissions, abs: string, kind: "change" | "create", failed: boolean): boolean {
  const a = (kind === "change" ? p.change : p.create).get(abs);
  if (a !== undefined && (a || !failed)) return true;
  return p.dirs.some(({ dir, names }) => {
    if (path.dirname(abs) !== dir) return false;
    return names === "*" || names.includes(path.basename(abs));
  });
}

// ---- running a case ------------------------------------------------------------------------------------------

export class CliFilesFailure extends Error {}

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

const CAP = 1 << 20;

function runChild(
  cli: string,
  args: string[],
  o: { cwd: string; tmp: string; stdin: Buffer | null; timeoutMs: number },
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: o.tmp, NO_COLOR: "1" };
    delete env.NODE_OPTIONS;
    delete env.VITEST;
    const child: ChildProcess = spawn(process.execPath, [cli, ...args], {
      cwd: o.cwd,
      env,
      stdio: ["pipe", "pipe", "pipe"],
      // Its own process group: a bench re-executes itself, and a timeout must end both.
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout!.on("data", (b: Buffer) => {
      if (outBytes < CAP) out.push(b);
      outBytes += b.length;
    });
    child.stderr!.on("data", (b: Buffer) => {
      if (errBytes < CAP) err.push(b);
      errBytes += b.length;
    });
    child.stdin!.on("error", () => {});
    child.stdin!.end(o.stdin ?? undefined);
    let timedOut = false;
    const kill = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill("SIGTERM");
      setTimeout(() => kill("SIGKILL"), 3000).unref();
    }, o.timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // Anything the child's group left running (a re-executed bench) goes with it.
      kill("SIGKILL");
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        timedOut,
        ms: performance.now() - t0,
      });
    });
  });
}

/** A stack frame line as V8 prints it, in output that is not meant to hold one. */
const STACK_LINE = /^\s+at (?:.+ \()?(?:file:|node:|\/|<anonymous>|native|async ).*$/m;

export interface FilesWorldOptions {
  /** Where case trees go (default: the OS temporary directory). */
  base?: string;
  /** After the first failure, shrink for at most this long, then treat further cases as passing. */
  shrinkBudgetMs?: number;
  /** Child timeout for a command that ends by itself; qtest gets `qtestTimeoutMs`. */
  timeoutMs?: number;
  qtestTimeoutMs?: number;
  /** Record failures and keep going instead of throwing (surveys). */
  survey?: boolean;
  /** Keep the tree of a failing case for inspection. */
  keepFailed?: boolean;
}

export class CliFilesWorld {
  readonly stats = {
    cases: 0,
    exit: {} as Record<string, number>,
    commands: {} as Record<string, number>,
    /** Cases in which an allowed output appeared or changed (the property is not vacuous). */
    wrote: 0,
    slowestMs: 0,
  };
  readonly first = { message: null as string | null };
  readonly failures: { argv: string[]; message: string }[] = [];
  /** The last case's exit and first stderr line (for a progress log). */
  last: { exit: string; stderr: string } | null = null;
  private failedAt: number | null = null;
  private readonly base: string;

  constructor(
    readonly cli: string,
    readonly o: FilesWorldOptions = {},
  ) {
    this.base = o.base ?? os.tmpdir();
  }

  async run(c: FilesCase): Promise<void> {
    if (
      this.failedAt !== null &&
      performance.now() - this.failedAt > (this.o.shrinkBudgetMs ?? Number.POSITIVE_INFINITY)
    )
      return;
    this.stats.cases++;
    const cmd = c.argv[0]!;
    this.stats.commands[cmd] = (this.stats.commands[cmd] ?? 0) + 1;
    const root = makeWorld(this.base, c.world);
    let keep = false;
    try {
      const files = path.join(root, "files");
      const cwd = path.join(root, "cwd");
      const sub = (t: string): string => t.replaceAll(F, files).replaceAll(R, root);
      const args = c.argv.map(sub);
      const before = snapshot(root, () => true);
      const stdin =
        c.stdin === null
          ? null
          : typeof c.stdin === "number"
            ? bytesOf(c.stdin, c.world.fill + 99)
            : Buffer.from(c.stdin.map((l) => l + "\n").join(""));
      const perm = await permissions(args, cwd, stdin);
      const r = await runChild(this.cli, args.slice(0), {
        cwd,
        tmp: path.join(root, "tmp"),
        stdin,
        timeoutMs: cmd === "qtest" ? (this.o.qtestTimeoutMs ?? 8000) : (this.o.timeoutMs ?? 45_000),
      });
      this.stats.slowestMs = Math.max(this.stats.slowestMs, Math.round(r.ms));
      const key = r.timedOut ? "timeout" : r.signal ? r.signal : String(r.code);
      this.stats.exit[key] = (this.stats.exit[key] ?? 0) + 1;
      this.last = { exit: key, stderr: r.stderr.split("\n")[0] ?? "" };
      const failed = r.code !== 0;
      const after = snapshot(root, (a) => before.has(a) && !allowed(perm, a, "change", failed));

      const problems: string[] = [];
      if (r.timedOut) problems.push(`did not finish within its timeout (killed)`);
      else if (r.code === null) problems.push(`ended by signal ${r.signal}`);
      else if (![0, 1, 2].includes(r.code)) problems.push(`exit code ${r.code} (expected 0, 1 or 2)`);
      if (/internal error/i.test(r.stderr) || /^\s+at /m.test(r.stderr))
        problems.push(`stack trace or internal error on stderr`);
      if (STACK_LINE.test(r.stdout) || /internal error/i.test(r.stdout))
        problems.push(`stack trace on stdout`);
      if (r.code !== 0 && !r.timedOut && r.stderr.trim() === "")
        problems.push(`exit ${r.code} with nothing on stderr`);

      let wrote = false;
      const gone: string[] = [];
      for (const [p, e] of before) {
        const a = after.get(p);
        if (allowed(perm, p, "change", failed)) {
          if (!a || a.mtimeNs !== e.mtimeNs || a.size !== e.size || a.ino !== e.ino) wrote = true;
          continue;
        }
        // What was inside a directory that went (or became something else) is reported with it.
        if (gone.some((d) => p.startsWith(d + path.sep))) continue;
        const name = rel(root, p);
        if (!a) {
          problems.push(`${name}: removed`);
          gone.push(p);
          continue;
        }
        if (a.type !== e.type) {
          problems.push(`${name}: was a ${e.type}, now a ${a.type}`);
          gone.push(p);
          continue;
        }
        const diffs: string[] = [];
        if (a.mode !== e.mode)
          diffs.push(`mode ${(e.mode & 0o7777).toString(8)} -> ${(a.mode & 0o7777).toString(8)}`);
        if (e.type === "file") {
          if (a.size !== e.size) diffs.push(`size ${e.size} -> ${a.size}`);
          else if (a.content !== e.content) diffs.push(`bytes changed`);
          if (a.mtimeNs !== e.mtimeNs) diffs.push(`mtime changed`);
          if (a.ino !== e.ino) diffs.push(`replaced by a new file (inode)`);
        }
        if (e.type === "link" && a.content !== e.content)
          diffs.push(`link target ${e.content} -> ${a.content}`);
        if (diffs.length) problems.push(`${name}: ${diffs.join(", ")}`);
      }
      for (const [p, a] of after) {
        if (before.has(p)) continue;
        if (allowed(perm, p, "create", failed)) {
          wrote = true;
          continue;
        }
        problems.push(`${rel(root, p)}: new ${a.type} (${a.size} bytes) that no flag named`);
      }
      if (wrote) this.stats.wrote++;
      for (const check of perm.checks) problems.push(...check(failed));

      if (problems.length) {
        keep = this.o.keepFailed === true;
        const msg =
          `argv ${JSON.stringify(c.argv)}\n` +
          `  run as: cd {R}/cwd && TMPDIR={R}/tmp node xenide.mjs ${c.argv.map(shellQuote).join(" ")}` +
          (c.stdin === null
            ? " </dev/null"
            : typeof c.stdin === "number"
              ? ` (stdin: ${c.stdin} bytes)`
              : ` (stdin: ${JSON.stringify(c.stdin)})`) +
          `\n  files: ${describeWorld(c.world)}\n` +
          `  exit ${key} after ${(r.ms / 1000).toFixed(1)} s; allowed: ${perm.why.join("; ") || "nothing"}\n` +
          problems.map((l) => `  - ${l}`).join("\n") +
          `\n  stderr: ${JSON.stringify(r.stderr.slice(0, 1200))}` +
          (r.stdout && problems.some((l) => l.includes("stdout"))
            ? `\n  stdout: ${JSON.stringify(r.stdout.slice(0, 600))}`
            : "") +
          (keep ? `\n  tree kept at ${root}` : "");
        this.failedAt ??= performance.now();
        this.first.message ??= msg;
        if (this.o.survey) {
          this.failures.push({ argv: c.argv, message: msg });
          return;
        }
        throw new CliFilesFailure(msg);
      }
    } finally {
      if (!keep) removeWorld(root);
    }
  }
}

function rel(root: string, p: string): string {
  return `{R}/${path.relative(root, p)}`;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./{}-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

export function describeWorld(w: WorldSpec): string {
  const parts = [`disk.img ${w.disk} B`, `notes.txt ${w.notes} B`, `adir/inner.bin`];
  for (const n of OPTIONAL_NAMES) {
    const v = w.has[n] ?? 0;
    if (v === 0) continue;
    const variant = OPTIONAL[n][v - 1]!;
    parts.push(
      n === "link.img" || n === "dangling.img"
        ? `${n} -> ${String(variant)}`
        : n === "rodir"
          ? `rodir/x.img (0555 dir)`
          : n === "null.dev"
            ? `null.dev (${mknodWorks === false ? "link to /dev/null" : "char device 1,3"})`
            : typeof variant === "number"
              ? `${n} ${variant} B${n === "ro.img" ? " (0444)" : ""}`
              : `${n} (${String(variant)})`,
    );
  }
  return `${parts.join(", ")} (fill ${w.fill})`;
}

export function cliFilesProperty(world: CliFilesWorld, o: { heavy?: boolean } = {}) {
  return fc.asyncProperty(cliFilesCaseArb(o), async (c) => {
    await world.run(c);
  });
}

/**
 * Run the property `numRuns` times from `seed` (printed), as runSurface does for the other surfaces, with a
 * replay line that names this test: `FUZZ_SEED=S FUZZ_PATH=P npx vitest run test/fuzz/cli-args.test.ts`.
 */
export async function runCliFiles(
  world: CliFilesWorld,
  o: { numRuns: number; seed: number; path?: string; heavy?: boolean; log?: (l: string) => void },
): Promise<{ cases: number; ms: number }> {
  const log = o.log ?? ((l: string) => process.stdout.write(l + "\n"));
  log(`fuzz cli-files: seed ${o.seed}, ${o.numRuns} cases`);
  const t0 = performance.now();
  const details = await fc.check(cliFilesProperty(world, { heavy: o.heavy }), {
    numRuns: o.numRuns,
    seed: o.seed,
    endOnFailure: false,
    ...(o.path ? { path: o.path } : {}),
  });
  const ms = performance.now() - t0;
  if (details.failed) {
    const why =
      details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    throw new Error(
      `fuzz cli-files FAILED (seed ${o.seed}; replay: FUZZ_SEED=${o.seed} FUZZ_PATH=${details.counterexamplePath} ` +
        `npx vitest run test/fuzz/cli-args.test.ts -t 'random commands')\n` +
        `Shrunk (${details.numShrinks} steps) to:\n${why}` +
        (world.first.message && world.first.message !== why
          ? `\nFirst failure (before shrinking):\n${world.first.message}`
          : ""),
    );
  }
  log(`fuzz cli-files: ${details.numRuns} cases passed in ${(ms / 1000).toFixed(1)} s (seed ${o.seed})`);
  return { cases: details.numRuns, ms };
}
