/**
 * A medium whose flushes do nothing: QEMU's `cache=unsafe` (cache.no-flush=on, BDRV_O_NO_FLUSH), for users who
 * trade durability across a host crash for speed. Writes still reach the medium as they complete (the host's page
 * cache holds them), so nothing acknowledged is lost when the process ends in order; only the guest's flush
 * requests (FLUSH CACHE, a blkif flush or barrier) complete without an fdatasync. Whoever owns the medium flushes
 * `inner` itself when it closes it.
 */
import type { BlockBackend, IoCallback, MediumRequest } from "./types.ts";
import { WrappedMedium } from "./wrapped.ts";

const RESOLVED = Promise.resolve();

export class NoFlushBackend extends WrappedMedium implements BlockBackend {
  constructor(inner: BlockBackend) {
    super(inner);
    // The async path only where the medium has one: without it every engine runs the sync methods.
    if (!inner.startIo) this.startIo = undefined;
  }

  get describe(): string {
    return `${this.inner.describe} (flushes ignored)`;
  }
  get identity(): string | undefined {
    return this.inner.identity;
  }
  override get noFlush(): boolean {
    return true;
  }

  override flush(): void {}

  startIo?(req: MediumRequest, done: IoCallback): void {
    // A flush completes later, as `startIo` promises, and never reaches the medium.
    if (req.op === "flush") void RESOLVED.then(() => done(undefined));
    else this.inner.startIo!(req, done);
  }

  setWriteCache(enabled: boolean): void {
    this.inner.setWriteCache?.(enabled);
  }
}
