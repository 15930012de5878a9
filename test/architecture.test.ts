/**
 * The layers of docs/architecture.md, checked on the import graph of src/: each layer imports only the layers
 * below it (spec at the bottom; hypervisor and storage; the devices and guest drivers; the machine layer; the
 * front ends), and no module reaches itself through its imports (type-only imports included: a cycle of types
 * is still two modules that cannot be understood apart).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = fileURLToPath(new URL("../src/", import.meta.url));

/** What each top-level folder of src/ may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  spec: [],
  hypervisor: ["spec"],
  storage: ["spec"],
  ide: ["spec", "hypervisor", "storage"],
  xenblk: ["spec", "hypervisor", "storage"],
  guest: ["spec", "hypervisor"],
  machine: ["spec", "hypervisor", "storage", "ide", "xenblk", "guest"],
  qtest: ["spec", "hypervisor", "storage", "machine"],
  hosts: ["spec", "hypervisor", "storage", "ide", "guest", "machine"],
  bench: ["spec", "hypervisor", "storage", "ide", "xenblk", "guest", "machine", "qtest"],
  report: ["bench"],
  qemu: ["spec", "hypervisor", "storage", "ide", "machine", "qtest"],
  cli: [
    "spec",
    "hypervisor",
    "storage",
    "ide",
    "xenblk",
    "guest",
    "machine",
    "qtest",
    "bench",
    "report",
    "hosts",
    "qemu",
  ],
  // The library entry point (src/index.ts) re-exports the public API of every layer.
  ".": ["spec", "hypervisor", "storage", "ide", "xenblk", "guest", "machine", "qtest"],
};

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith(".ts") ? [p] : [];
  });
}

/** Relative specifiers a module imports: static, re-exports, dynamic `import("...")`. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, "utf8");
  const out: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\b[^"'`;]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']|\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/gm;
  for (const m of text.matchAll(re)) {
    const spec = m[1] ?? m[2]!;
    out.push(path.resolve(path.dirname(file), spec));
  }
  return out;
}

const layerOf = (file: string) => {
  const rel = path.relative(SRC, file);
  return rel.includes(path.sep) ? rel.split(path.sep)[0]! : ".";
};

/** Imports that break the layering, as "from -> to". */
function layerViolations(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const bad: string[] = [];
  for (const [f, deps] of graph) {
    const from = layerOf(f);
    for (const d of deps) {
      if (!d.startsWith(SRC)) {
        bad.push(`${path.relative(SRC, f)} imports outside src/: ${d}`);
        continue;
      }
      const to = layerOf(d);
      if (to !== from && !ALLOWED[from]!.includes(to))
        bad.push(`${path.relative(SRC, f)} -> ${path.relative(SRC, d)}`);
    }
  }
  return bad;
}

/** Every cycle a depth-first walk meets, as "a -> b -> a". */
function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const cycles: string[] = [];
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 1);
    stack.push(f);
    for (const d of graph.get(f) ?? []) {
      if (!graph.has(d)) continue;
      const s = state.get(d);
      if (s === 1)
        cycles.push([...stack.slice(stack.indexOf(d)), d].map((x) => path.relative(SRC, x)).join(" -> "));
      else if (s === undefined) visit(d);
    }
    stack.pop();
    state.set(f, 2);
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f);
  return cycles;
}

const files = sources(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));

describe("architecture", () => {
  it("knows every folder of src/", () => {
    expect(files.length).toBeGreaterThan(50);
    const unknown = [...new Set(files.map(layerOf))].filter((l) => !(l in ALLOWED));
    expect(unknown).toEqual([]);
  });

  it("every import points at a module that exists", () => {
    const missing = [...graph].flatMap(([f, deps]) =>
      deps
        .filter((d) => !fs.existsSync(d))
        .map((d) => `${path.relative(SRC, f)} -> ${path.relative(SRC, d)}`),
    );
    expect(missing).toEqual([]);
  });

  it("each layer imports only the layers below it", () => {
    expect(layerViolations(graph)).toEqual([]);
  });

  it("has no import cycle", () => {
    expect(findCycles(graph)).toEqual([]);
  });

  it("the checks catch a planted upward import and a planted cycle, and read every import form", () => {
    const hv = path.join(SRC, "hypervisor", "planted.ts");
    const cli = path.join(SRC, "cli", "planted.ts");
    const planted = new Map([
      [hv, [cli]],
      [cli, [hv]],
    ]);
    expect(layerViolations(planted)).toEqual(["hypervisor/planted.ts -> cli/planted.ts"]);
    expect(findCycles(planted)).toEqual(["hypervisor/planted.ts -> cli/planted.ts -> hypervisor/planted.ts"]);
    const tmp = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "xenide-arch-"));
    const f = path.join(tmp, "m.ts");
    fs.writeFileSync(
      f,
      'import { a } from "./a.ts";\nimport type { B } from "../b.ts";\nexport * from "./c.ts";\n' +
        'export { d } from "./d.ts";\nconst e = await import("./e.ts");\nimport "node:fs";\n',
    );
    expect(importsOf(f).map((d) => path.relative(tmp, d))).toEqual([
      "a.ts",
      "../b.ts",
      "c.ts",
      "d.ts",
      "e.ts",
    ]);
    fs.rmSync(tmp, { recursive: true });
  });
});
