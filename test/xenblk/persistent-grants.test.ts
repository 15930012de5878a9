import { describe, expect, it } from "vitest";

import { FAST_REFS, PersistentGrantMap } from "../../src/xenblk/persistent-grants.ts";

describe("a ring's persistent grants by reference", () => {
  it("finds, replaces and forgets grants below and above the dense range alike", () => {
    const m = new PersistentGrantMap<{ id: string }>();
    const refs = [0, 1, FAST_REFS - 1, FAST_REFS, 0xffff_ffff];
    for (const r of refs) m.set(r, { id: `g${r}` });
    expect(m.size).toBe(refs.length);
    for (const r of refs) expect(m.get(r)).toEqual({ id: `g${r}` });
    expect(m.get(2)).toBeUndefined();
    expect(m.has(2)).toBe(false);
    m.set(1, { id: "again" });
    expect(m.get(1)).toEqual({ id: "again" });
    expect(m.size).toBe(refs.length);
    expect(m.delete(FAST_REFS - 1)).toBe(true);
    expect(m.delete(0xffff_ffff)).toBe(true);
    expect(m.delete(0xffff_ffff)).toBe(false);
    expect(m.has(FAST_REFS - 1)).toBe(false);
    expect(m.get(0xffff_ffff)).toBeUndefined();
    expect(m.size).toBe(3);
  });

  it("walks grants in the order they were kept, with deletion during the walk (the LRU purge)", () => {
    const m = new PersistentGrantMap<{ n: number }>();
    for (const r of [7, 3, 20000, 5]) m.set(r, { n: r });
    const seen: number[] = [];
    for (const [ref] of m) {
      seen.push(ref);
      if (ref === 3 || ref === 20000) m.delete(ref);
    }
    expect(seen).toEqual([7, 3, 20000, 5]);
    expect([...m].map(([r]) => r)).toEqual([7, 5]);
    expect([...m.values()].map((g) => g.n)).toEqual([7, 5]);
    expect(m.get(3)).toBeUndefined();
  });

  it("clear forgets every reference, in the dense range too", () => {
    const m = new PersistentGrantMap<{ n: number }>();
    m.set(4, { n: 4 });
    m.set(FAST_REFS + 4, { n: 5 });
    m.clear();
    expect(m.size).toBe(0);
    expect(m.get(4)).toBeUndefined();
    expect(m.get(FAST_REFS + 4)).toBeUndefined();
  });
});
