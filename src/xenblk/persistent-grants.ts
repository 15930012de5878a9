/**
 * A ring's persistent grants by grant reference (Linux xen-blkback keeps them in a red-black tree per ring,
 * `ring->persistent_gnts`). A Map holds them in the order they were kept, which the LRU purge walks; beside it a
 * dense array answers the lookup every segment of every request makes for references below `FAST_REFS` with an
 * array load instead of a hash probe (about 50 instructions each, 16 of them for a 64 KiB request).
 */

/** References a table of Xen's default size can hold (max_grant_frames 32 x 512 entries); larger go by the Map. */
export const FAST_REFS = 32 * 512;

export class PersistentGrantMap<T extends object> {
  private readonly byRef = new Map<number, T>();
  private readonly fast = new Array<T | null>(FAST_REFS).fill(null);

  get size(): number {
    return this.byRef.size;
  }

  get(ref: number): T | undefined {
    if (ref >= 0 && ref < FAST_REFS) return this.fast[ref] ?? undefined;
    return this.byRef.get(ref);
  }

  has(ref: number): boolean {
    return this.get(ref) !== undefined;
  }

  set(ref: number, g: T): void {
    this.byRef.set(ref, g);
    if (ref >= 0 && ref < FAST_REFS) this.fast[ref] = g;
  }

  delete(ref: number): boolean {
    if (ref >= 0 && ref < FAST_REFS) this.fast[ref] = null;
    return this.byRef.delete(ref);
  }

  clear(): void {
    for (const ref of this.byRef.keys()) if (ref >= 0 && ref < FAST_REFS) this.fast[ref] = null;
    this.byRef.clear();
  }

  values(): IterableIterator<T> {
    return this.byRef.values();
  }

  /** [ref, grant] in the order they were kept (deleting during the walk is allowed, as with a Map). */
  [Symbol.iterator](): IterableIterator<[number, T]> {
    return this.byRef.entries();
  }
}
