/**
 * A bounded cache of metadata tables (L2 tables or refcount blocks), least recently used first out, as QEMU's
 * qcow2-cache.c. A table is changed in place and marked dirty; a dirty table leaves the cache only through
 * `writeBack`, which the image supplies so that it can order the write (an L2 table only after the refcount
 * blocks it depends on). Callers never keep a table across another cache access: every use is
 * get, read or change, mark dirty, with nothing in between that could evict it.
 */

export interface TableIo {
  /** Read the table at `offset` from the image. */
  load(offset: number): Uint8Array;
  /** Write a dirty table that is leaving the cache (or being flushed). */
  writeBack(offset: number, table: Uint8Array): void;
}

interface Entry {
  table: Uint8Array;
  dirty: boolean;
}

export class TableCache {
  /** Insertion order is recency order: the first key is the least recently used. */
  private readonly entries = new Map<number, Entry>();

  constructor(
    /** Most tables held at once (at least 2). */
    readonly capacity: number,
    private readonly io: TableIo,
  ) {
    if (capacity < 2) throw new RangeError("a table cache holds at least 2 tables");
  }

  get size(): number {
    return this.entries.size;
  }

  /** The table at `offset`, read from the image if it is not cached. */
  get(offset: number): Uint8Array {
    const e = this.entries.get(offset);
    if (e) {
      this.entries.delete(offset);
      this.entries.set(offset, e);
      return e.table;
    }
    this.makeRoom();
    const table = this.io.load(offset);
    this.entries.set(offset, { table, dirty: false });
    return table;
  }

  /** Add a table that is not (yet) in the image, such as a new, zeroed L2 table. */
  put(offset: number, table: Uint8Array, dirty: boolean): void {
    const old = this.entries.get(offset);
    if (old) this.entries.delete(offset);
    else this.makeRoom();
    this.entries.set(offset, { table, dirty });
  }

  markDirty(offset: number): void {
    const e = this.entries.get(offset);
    if (!e) throw new Error(`table at ${offset} is not cached`);
    e.dirty = true;
  }

  hasDirty(): boolean {
    for (const e of this.entries.values()) if (e.dirty) return true;
    return false;
  }

  /** Write every dirty table, in offset order, and mark them clean (`write`: instead of `writeBack`). */
  writeDirty(write: (offset: number, table: Uint8Array) => void = this.io.writeBack): void {
    const dirty = [...this.entries].filter(([, e]) => e.dirty).sort((a, b) => a[0] - b[0]);
    for (const [offset, e] of dirty) {
      write(offset, e.table);
      e.dirty = false;
    }
  }

  /** Forget a table (its cluster was freed); a dirty one is dropped without writing. */
  drop(offset: number): void {
    this.entries.delete(offset);
  }

  private makeRoom(): void {
    while (this.entries.size >= this.capacity) {
      const [offset, e] = this.entries.entries().next().value as [number, Entry];
      if (e.dirty) {
        this.io.writeBack(offset, e.table);
        e.dirty = false;
      }
      this.entries.delete(offset);
    }
  }
}
