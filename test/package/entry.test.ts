/**
 * The package as a program outside the repository's sources uses it: `import ... from "xenide"` resolves
 * through package.json `exports` to the bundle in dist/, with declarations a TypeScript program type-checks
 * against without any loader or `.ts` import settings. The README's library example is run as written.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The README's first ```js block after the "Use xenide as a library" heading. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
  const at = readme.indexOf("## Use xenide as a library");
  if (at < 0) throw new Error("README has no 'Use xenide as a library' section");
  const m = /```js\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!m) throw new Error("the library section has no js example");
  return m[1]!;
}

/** The newest modification time of the files under `p` (or of `p` itself). */
function newest(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...fs.readdirSync(p).map((e) => newest(path.join(p, e))));
}

/** When the bundle or its declarations are older than a source or the build script, or missing. */
function distStale(): boolean {
  const built = ["dist/index.mjs", "dist/types/index.d.ts"].map((f) => path.join(ROOT, f));
  if (!built.every((f) => fs.existsSync(f))) return true;
  const sources = Math.max(newest(path.join(ROOT, "src")), newest(path.join(ROOT, "scripts/build.mjs")));
  return Math.min(...built.map((f) => fs.statSync(f).mtimeMs)) < sources;
}

let dir: string;
beforeAll(() => {
  // Build as `npm ci` does (bundle and declarations) when dist/ is older than the sources, so the test sees the
  // sources as they are now. A fresh dist/ (npm ci just built it) is left alone: other test files run the
  // bundle at the same time, and rebuilding it under them would pull files from under running processes.
  if (distStale())
    execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], { cwd: ROOT, stdio: "pipe" });
  // Inside the package directory, so that "xenide" resolves to this package by its own name.
  fs.mkdirSync(path.join(ROOT, "tmp"), { recursive: true });
  dir = fs.mkdtempSync(path.join(ROOT, "tmp", "entry-"));
  return () => fs.rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('import from "xenide"', () => {
  it("runs the README example: one sector through IDE DMA and through PV, with the exits", () => {
    const file = path.join(dir, "example.mjs");
    fs.writeFileSync(file, readmeExample());
    const out = execFileSync(process.execPath, [file], { cwd: dir, encoding: "utf8", timeout: 60_000 });
    const lines = out.trim().split("\n");
    expect(lines[0]).toMatch(/^IDE DMA: "hello from sector 7" in \d+ exits$/);
    expect(lines[1]).toMatch(/^PV: +"hello from sector 7" in \d+ exits \(\d+ event-channel kicks\)$/);
    // DMA costs a handful of register exits per command; PV none beyond its event-channel hypercalls.
    const ideExits = Number(/in (\d+) exits/.exec(lines[0]!)![1]);
    const pvExits = Number(/in (\d+) exits/.exec(lines[1]!)![1]);
    expect(ideExits).toBeGreaterThan(pvExits);
  });

  it("exposes the public API and nothing under src/", async () => {
    const file = path.join(dir, "api.mjs");
    fs.writeFileSync(
      file,
      `const x = await import("xenide");
       const names = ["buildMachine", "openAtaPath", "openPvPath", "AtaDrive", "Blkfront", "RawImageBackend",
         "SyncEngine", "AsyncEngine", "QtestServer", "Hypervisor", "MachineConfigError"];
       console.log(JSON.stringify(names.filter((n) => typeof x[n] !== "function")));
       try { await import("xenide/src/index.ts"); console.log("deep import allowed"); }
       catch (e) { console.log(e.code); }`,
    );
    const out = execFileSync(process.execPath, [file], { cwd: dir, encoding: "utf8" }).trim().split("\n");
    expect(out).toEqual(["[]", "ERR_PACKAGE_PATH_NOT_EXPORTED"]);
  });

  it("type-checks a TypeScript program against the published declarations (no .ts imports needed)", () => {
    fs.writeFileSync(
      path.join(dir, "use.ts"),
      `import { buildMachine, openAtaPath, type MachineDescription, MemoryBackend } from "xenide";
       const d: MachineDescription = { ide: [{ position: "primary-master", medium: { backend: new MemoryBackend(4096) } }] };
       const m = buildMachine(d);
       const p: Promise<{ sectors: number }> = openAtaPath(m, "pio");
       // @ts-expect-error: not a position
       buildMachine({ ide: [{ position: "tertiary-master", medium: { backend: new MemoryBackend(4096) } }] });
       void p;\n`,
    );
    fs.writeFileSync(
      path.join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "es2022",
          module: "nodenext",
          moduleResolution: "nodenext",
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          lib: ["es2023", "dom"],
          types: ["node"],
          typeRoots: [path.join(ROOT, "node_modules/@types")],
        },
        files: ["use.ts"],
      }),
    );
    const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
    let out = "";
    try {
      execFileSync(process.execPath, [tsc, "-p", dir], { cwd: dir, encoding: "utf8", stdio: "pipe" });
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? e);
    }
    expect(out).toBe("");
  });
});
