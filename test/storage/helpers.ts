import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import type { IoCompletion, IoEngine, IoRequest } from "../../src/storage/types.ts";

/** A fresh directory for image files; `inRepo` puts it under the repository's ignored tmp/ (real disk). */
export function tempDir(inRepo = false): string {
  const base = inRepo ? fileURLToPath(new URL("../../tmp/", import.meta.url)) : os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, "xenide-storage-"));
}

/** Deterministic bytes (an LCG on Math.imul, so every byte differs from a neighbour's pattern by seed). */
export function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = seed | 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Submit one request, wait for the engine to finish it, and return its single completion. */
export async function run(engine: IoEngine, req: IoRequest): Promise<IoCompletion> {
  engine.submit(req);
  await engine.drain();
  const out: IoCompletion[] = [];
  engine.reap(out);
  if (out.length !== 1) throw new Error(`expected one completion, got ${out.length}`);
  return out[0]!;
}

/** Resolve after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Byte-exact comparison that stays fast on large buffers and names the first differing offset. */
export function sameBytes(actual: Uint8Array, expected: Uint8Array): string {
  if (actual.length !== expected.length) return `length ${actual.length} != ${expected.length}`;
  if (Buffer.compare(actual, expected) === 0) return "same";
  let i = 0;
  while (actual[i] === expected[i]) i++;
  return `first difference at byte ${i}: ${actual[i]} != ${expected[i]}`;
}
