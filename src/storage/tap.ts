/**
 * An engine wrapper that sees each request on its way in and is otherwise transparent: the benchmark counts
 * the storage requests a guest's I/Os became (after merging), tests record what reached storage.
 */
import type { BlockBackend, IoCompletion, IoEngine, IoRequest } from "./types.ts";

export class TapEngine implements IoEngine {
  /** Requests submitted through this wrapper so far. */
  submitted = 0;

  /**
   * `onSubmit` runs before each request is passed on. The caller may reuse the request and its buffer list
   * once `submit` returns (IoEngine's contract), so anything kept from it must be copied.
   */
  constructor(
    private readonly inner: IoEngine,
    private readonly onSubmit: ((req: IoRequest) => void) | null = null,
  ) {}

  get kind(): "sync" | "async" {
    return this.inner.kind;
  }
  get backend(): BlockBackend {
    return this.inner.backend;
  }
  get inflight(): number {
    return this.inner.inflight;
  }
  get onReady(): (() => void) | null {
    return this.inner.onReady;
  }
  set onReady(f: (() => void) | null) {
    this.inner.onReady = f;
  }
  submit(req: IoRequest): void {
    this.submitted++;
    this.onSubmit?.(req);
    this.inner.submit(req);
  }
  reap(out: IoCompletion[]): number {
    return this.inner.reap(out);
  }
  drain(): Promise<void> {
    return this.inner.drain();
  }
}
