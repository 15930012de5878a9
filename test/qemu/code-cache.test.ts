/**
 * The launcher's start path (bin/xenide-system-x86_64 with dist/xenide-system-x86_64.cjs and its V8 code cache,
 * made by scripts/build-launcher.mjs): the cache is used when it matches the bundle and this Node, and a missing,
 * stale, damaged or V8-rejected cache falls back to compiling the bundle's text, which then runs (never the code
 * the cache was made from). Built into a directory of its own (bin/ and dist/ side by side, as installed), so the
 * checkout's dist/ is never touched.
 */
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN, ROOT, START } from "./launch.ts";

interface BuildLauncher {
  LAUNCHER_BUNDLE: string;
  LAUNCHER_CACHE: string;
  buildLauncher(outDir: string, bin: string): Promise<void>;
}

let dir = "";
let bin = "";
let bundle = "";
let cache = "";
let original: { bundle: Buffer; cache: Buffer };

/** Run the installed launcher with `args`; its stdout, and the code-cache verdict it printed on stderr. */
function start(args: string[]): { status: number | null; stdout: string; verdict: string; stderr: string } {
  const r = spawnSync(bin, args, {
    encoding: "utf8",
    input: "",
    env: { ...process.env, XENIDE_FROM_SOURCES: "0", XENIDE_CODE_CACHE_DEBUG: "1" },
    timeout: 30_000,
  });
  const verdict = /code cache (.*)/.exec(r.stderr)?.[1] ?? "(none)";
  return { status: r.status, stdout: r.stdout, verdict, stderr: r.stderr };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "xenide-code-cache-"));
  mkdirSync(join(dir, "bin"));
  mkdirSync(join(dir, "dist"));
  bin = join(dir, "bin", "xenide-system-x86_64");
  copyFileSync(BIN, bin);
  copyFileSync(START, `${bin}.cjs`);
  const m = (await import(join(ROOT, "scripts", "build-launcher.mjs"))) as BuildLauncher;
  await m.buildLauncher(join(dir, "dist"), bin);
  bundle = join(dir, "dist", m.LAUNCHER_BUNDLE);
  cache = join(dir, "dist", m.LAUNCHER_CACHE);
  original = { bundle: readFileSync(bundle), cache: readFileSync(cache) };
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function restore(): void {
  writeFileSync(bundle, original.bundle);
  writeFileSync(cache, original.cache);
}

describe("the launcher's code cache", () => {
  it("is made by the build and used by a start that matches it", () => {
    restore();
    // The cache holds the bundle's bytes after its header line, then V8's data.
    const nl = original.cache.indexOf(10);
    expect(original.cache.subarray(nl + 1, nl + 1 + original.bundle.length).equals(original.bundle)).toBe(
      true,
    );
    expect(original.cache.length).toBeGreaterThan(nl + 1 + original.bundle.length);
    const r = start(["--version"]);
    expect(r.verdict).toBe("used");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("QEMU emulator version 7.2");
  });

  it("serves a machine on the cached path (IDENTIFY's status)", () => {
    restore();
    const image = join(dir, "disk.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const r = spawnSync(
      bin,
      [
        "-machine",
        "pc",
        "-qtest",
        "stdio",
        "-qtest-log",
        "none",
        "-drive",
        `file=${image},if=ide,format=raw`,
      ],
      {
        encoding: "utf8",
        input: "outb 0x1f6 0xe0\noutb 0x1f7 0xec\ninb 0x1f7\n",
        env: { ...process.env, XENIDE_FROM_SOURCES: "0", XENIDE_CODE_CACHE_DEBUG: "1" },
        timeout: 30_000,
      },
    );
    expect(r.stderr).toContain("code cache used");
    expect(r.status).toBe(0);
    // DRDY | DSC | DRQ: the IDENTIFY block is ready (ATA8-ACS, PIO data-in; QEMU qtest prints 0x%04x).
    expect(r.stdout.split("\n").filter((l) => l.startsWith("OK"))).toEqual(["OK", "OK", "OK 0x0058"]);
  });

  it("falls back to the bundle's text when the cache is missing", () => {
    restore();
    rmSync(cache);
    const r = start(["--version"]);
    expect(r.verdict).toBe("missing");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("QEMU emulator version 7.2");
  });

  it("runs the bundle as it is now, not as the cache saw it, when the bundle changed", () => {
    restore();
    // A changed bundle: the version line of the bundle is not the one the cache was made from.
    const text = original.bundle.toString("utf8");
    expect(text).toContain("QEMU emulator version 7.2.22");
    writeFileSync(bundle, text.replace("QEMU emulator version 7.2.22", "QEMU emulator version 7.2.99"));
    const r = start(["--version"]);
    expect(r.verdict).toBe("stale (another bundle)");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("7.2.99");
  });

  it("reads a bundle that is not ASCII as UTF-8 (the build's is ASCII, read as Latin-1)", () => {
    restore();
    expect(original.bundle.every((b) => b < 0x80)).toBe(true);
    const text = original.bundle.toString("utf8");
    writeFileSync(
      bundle,
      text.replace("QEMU emulator version 7.2.22", "QEMU emulator version 7.2.22 \u00e9\u00b5"),
    );
    const r = start(["--version"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("7.2.22 \u00e9\u00b5)");
  });

  it("ignores a cache made by another Node or in another format", () => {
    restore();
    const nl = original.cache.indexOf(10);
    const header = original.cache.toString("latin1", 0, nl);
    const other = header.replace(process.version, "v19.0.0");
    expect(other).not.toBe(header);
    writeFileSync(cache, Buffer.concat([Buffer.from(other, "latin1"), original.cache.subarray(nl)]));
    const r = start(["--version"]);
    expect(r.verdict).toBe("stale (another format or Node)");
    expect(r.status).toBe(0);
    writeFileSync(cache, "garbage");
    expect(start(["--version"]).verdict).toBe("stale (another format or Node)");
  });

  it("compiles the text when V8 rejects damaged cache data", () => {
    restore();
    const nl = original.cache.indexOf(10);
    const data = Buffer.from(original.cache.subarray(nl + 1 + original.bundle.length));
    data.fill(0x5a, 0, 64); // V8's header (magic, version and flag hashes, checksum)
    writeFileSync(cache, Buffer.concat([original.cache.subarray(0, nl + 1 + original.bundle.length), data]));
    const r = start(["--version"]);
    expect(r.verdict).toBe("rejected by V8");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("QEMU emulator version 7.2");
  });
});

describe("bin/xenide-system-x86_64 (a shell script running the start file with Node)", () => {
  it("finds its start file through the symbolic links npm makes (node_modules/.bin/NAME -> ../pkg/bin/NAME)", () => {
    restore();
    // A relative link to a relative link, from another directory, as npm's .bin and a user's own link would be.
    const links = join(dir, "node_modules", ".bin");
    mkdirSync(links, { recursive: true });
    symlinkSync(join("..", "..", "bin", "xenide-system-x86_64"), join(links, "xenide-system-x86_64"));
    const outer = join(dir, "qemu");
    symlinkSync(join("node_modules", ".bin", "xenide-system-x86_64"), outer);
    const r = spawnSync(outer, ["--version"], {
      encoding: "utf8",
      env: { ...process.env, XENIDE_FROM_SOURCES: "0", XENIDE_CODE_CACHE_DEBUG: "1" },
      timeout: 30_000,
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("QEMU emulator version 7.2");
    // The copy's own bundle and cache ran (not the checkout's): the cache matched the bundle beside it.
    expect(r.stderr).toContain("code cache used");
  });

  it("starts Node without NODE_EXTRA_CA_CERTS (no TLS in the launcher; Node would read the file first)", () => {
    // Node warns on stderr when it cannot load NODE_EXTRA_CA_CERTS: the warning's absence shows it never looked.
    const env = {
      ...process.env,
      XENIDE_FROM_SOURCES: "0",
      NODE_EXTRA_CA_CERTS: join(dir, "no-such-certs.pem"),
    };
    const plain = spawnSync(process.execPath, ["-e", "0"], { encoding: "utf8", env, timeout: 30_000 });
    expect(plain.stderr).toContain("extra certs");
    const r = spawnSync(bin, ["--version"], { encoding: "utf8", env, timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stderr).not.toContain("extra certs");
    expect(r.stdout).toContain("QEMU emulator version 7.2");
  });
});
