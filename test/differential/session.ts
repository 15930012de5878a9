/**
 * A differential session: QEMU and `xenide qtest` started on copies of the same image, PCI set up the same
 * way, and helpers to run operation sequences, compare the images, and shrink a failing sequence.
 */

import type { QtestClient } from "../../src/qtest/client.ts";
import { ImageSet, startQemu, startXenide, startXenideInProcess } from "./harness.ts";
import { type Op, PCI_SETUP, describeOp, runOp } from "./ops.ts";
import { type Excuse, Mismatch, Pair, PRIMARY } from "./pair.ts";
import { type CompatProfile, DEFAULT_COMPAT } from "../../src/ide/compat.ts";

export class Session {
  readonly pair: Pair;
  private constructor(
    readonly images: ImageSet,
    readonly qemu: QtestClient,
    readonly xen: QtestClient,
    excuses: readonly Excuse[],
    private readonly xenDone?: Promise<void>,
  ) {
    this.pair = new Pair(qemu, xen, PRIMARY, excuses);
  }

  /**
   * Start QEMU and xenide on copies of `contents`. xenide runs as `xenide qtest` in a child process, or in this
   * process when `inProcess` (same machine and server, without the start-up cost).
   */
  static async start(
    contents: (Uint8Array | undefined)[],
    excuses: readonly Excuse[] = [],
    inProcess = false,
    compat: CompatProfile = DEFAULT_COMPAT,
    engine: "sync" | "async" = "sync",
  ): Promise<Session> {
    const images = new ImageSet(contents);
    const qemu = startQemu(images.qemu);
    let xen: QtestClient;
    let done: Promise<void> | undefined;
    if (inProcess) ({ client: xen, done } = startXenideInProcess(images.xen, compat, engine));
    else xen = startXenide(images.xen, ["--compat", compat, "--engine", engine]);
    const s = new Session(images, qemu, xen, excuses, done);
    try {
      await s.pair.send(PCI_SETUP, "PCI setup");
    } catch (e) {
      await s.stop();
      throw withStderr(e, s);
    }
    return s;
  }

  /** Both images byte for byte. */
  compareImages(label: string): void {
    this.images.contents.forEach((c, i) => {
      if (c)
        this.pair.compareBytes(
          `${label}: image ${i}`,
          this.images.read("qemu", i),
          this.images.read("xen", i),
        );
    });
  }

  async run(ops: readonly Op[], label: string): Promise<void> {
    for (let i = 0; i < ops.length; i++)
      await runOp(this.pair, ops[i]!, `${label} op ${i} | ${describeOp(ops[i]!)} |`);
  }

  async stop(): Promise<void> {
    await Promise.allSettled([this.qemu.close(), this.xen.close()]);
    await this.xenDone?.catch(() => {});
    this.images.remove();
  }
}

export function withStderr(e: unknown, s: { qemu: QtestClient; xen: QtestClient }): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  const extra = [
    s.qemu.stderr.trim() && `QEMU stderr: ${s.qemu.stderr.trim()}`,
    s.xen.stderr.trim() && `xenide stderr: ${s.xen.stderr.trim()}`,
  ].filter(Boolean);
  if (extra.length) err.message += "\n" + extra.join("\n");
  return err;
}

/** Does `ops`, run alone from `start` on fresh processes, end in a mismatch? */
export async function reproduces(
  start: Uint8Array,
  ops: readonly Op[],
  excuses: readonly Excuse[],
  compat: CompatProfile = DEFAULT_COMPAT,
): Promise<Mismatch | null> {
  const s = await Session.start([start], excuses, true, compat);
  try {
    await s.run(ops, "replay");
    s.compareImages("replay");
    return null;
  } catch (e) {
    if (e instanceof Mismatch) return e;
    throw withStderr(e, s);
  } finally {
    await s.stop();
  }
}

/**
 * Shrink a failing sequence: drop chunks, then single operations, while it still fails (ddmin-style, bounded).
 * The first operations (reset, nIEN, Bus Master reset) stay: they set up the state the rest assumes.
 */
export async function shrink(
  start: Uint8Array,
  ops: readonly Op[],
  excuses: readonly Excuse[],
  budget = 40,
  compat: CompatProfile = DEFAULT_COMPAT,
): Promise<{ ops: Op[]; mismatch: Mismatch } | null> {
  let cur = [...ops];
  let mismatch = await reproduces(start, cur, excuses, compat);
  if (!mismatch) return null;
  const keep = 3;
  let chunk = Math.max(1, Math.floor((cur.length - keep) / 2));
  while (budget > 0 && chunk >= 1) {
    let progressed = false;
    for (let i = keep; i < cur.length && budget > 0;) {
      const cand = [...cur.slice(0, i), ...cur.slice(i + chunk)];
      budget--;
      const m = await reproduces(start, cand, excuses, compat);
      if (m) {
        cur = cand;
        mismatch = m;
        progressed = true;
      } else i += chunk;
    }
    if (!progressed) chunk = Math.floor(chunk / 2);
  }
  return { ops: cur, mismatch };
}
