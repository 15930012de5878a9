/**
 * The part every medium over another medium shares (blkdebug, fault injection, cache=unsafe's flushes): its
 * size and writability are the inner medium's, and a request it does not override goes to the inner medium.
 */
import type { BlockBackend } from "./types.ts";

export abstract class WrappedMedium {
  constructor(readonly inner: BlockBackend) {}

  get sectorSize(): number {
    return this.inner.sectorSize;
  }
  get sectorCount(): number {
    return this.inner.sectorCount;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get noFlush(): boolean {
    return this.inner.noFlush === true;
  }

  read(sector: number, bufs: readonly Uint8Array[]): void {
    this.inner.read(sector, bufs);
  }
  write(sector: number, bufs: readonly Uint8Array[]): void {
    this.inner.write(sector, bufs);
  }
  flush(): void {
    this.inner.flush();
  }
  discard(sector: number, count: number): void {
    this.inner.discard(sector, count);
  }
  close(): void {
    this.inner.close();
  }
}
