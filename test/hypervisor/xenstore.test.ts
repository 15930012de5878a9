import { describe, expect, it } from "vitest";
import { XenStore, XenStoreError } from "../../src/hypervisor/index.ts";

const tick = () => new Promise<void>((r) => setImmediate(r));

function store() {
  const xs = new XenStore();
  const d0 = xs.connect(0);
  d0.mkdir("/local/domain/1");
  d0.setPerms("/local/domain/1", [{ dom: 1, perm: "n" }]);
  d0.mkdir("/local/domain/2");
  d0.setPerms("/local/domain/2", [{ dom: 2, perm: "n" }]);
  return { xs, d0, d1: xs.connect(1), d2: xs.connect(2) };
}

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof XenStoreError) return e.code;
    throw e;
  }
  return undefined;
}

describe("xenstore", () => {
  it("reads, writes, lists and removes recursively; relative paths are under the domain's home", () => {
    const { d1 } = store();
    d1.write("device/vbd/51712/state", "1");
    expect(d1.read("/local/domain/1/device/vbd/51712/state")).toBe("1");
    expect(d1.read("device/vbd/51712")).toBe(""); // created parents are empty
    d1.write("device/vbd/51712/ring-ref", 8);
    expect(d1.directory("device/vbd/51712").sort()).toEqual(["ring-ref", "state"]);
    d1.rm("device/vbd");
    expect(code(() => d1.read("device/vbd/51712/state"))).toBe("ENOENT");
    expect(d1.directory("device")).toEqual([]);
    expect(code(() => d1.rm("nothere/x"))).toBe("ENOENT");
    expect(code(() => d1.read("bad//path"))).toBe("EINVAL");
  });

  it("applies owner and per-domain permissions as xenstored", () => {
    const { d0, d1, d2 } = store();
    // Domain 2 can see nothing of domain 1.
    d1.write("data/secret", "x");
    expect(code(() => d2.read("/local/domain/1/data/secret"))).toBe("EACCES");
    expect(code(() => d2.write("/local/domain/1/data/new", "y"))).toBe("EACCES");
    // A node the unprivileged domain creates is owned by it, with the parent's other entries.
    d1.write("shared/key", "v");
    d1.setPerms("shared/key", [
      { dom: 1, perm: "n" },
      { dom: 2, perm: "r" },
    ]);
    expect(d2.read("/local/domain/1/shared/key")).toBe("v");
    expect(code(() => d2.write("/local/domain/1/shared/key", "w"))).toBe("EACCES");
    expect(d1.getPerms("shared/key")).toEqual([
      { dom: 1, perm: "n" },
      { dom: 2, perm: "r" },
    ]);
    // Only a privileged domain may give a node to another owner (xenstored do_set_perms: EPERM).
    expect(code(() => d1.setPerms("shared/key", [{ dom: 2, perm: "n" }]))).toBe("EPERM");
    // Dom0 reads everything.
    expect(d0.read("/local/domain/1/data/secret")).toBe("x");
    // "b" grants both.
    d1.setPerms("shared/key", [
      { dom: 1, perm: "n" },
      { dom: 2, perm: "b" },
    ]);
    d2.write("/local/domain/1/shared/key", "from2");
    expect(d1.read("shared/key")).toBe("from2");
    const created = d1.getPerms("shared");
    expect(created[0]).toEqual({ dom: 1, perm: "n" });
  });

  it("fires watches once on registration and on changes at or below the path", async () => {
    const { d0, d1 } = store();
    const ev: string[] = [];
    d1.watch("device", "tok", (p, t) => ev.push(`${t}:${p}`));
    await tick();
    expect(ev).toEqual(["tok:/local/domain/1/device"]);
    ev.length = 0;
    d1.write("device/vbd/1/state", "3");
    await tick();
    // One event, for the path written (xenstored do_write fires once for the node named, not for the parents it
    // created on the way; a watcher of an ancestor hears of it since the path is below its own).
    expect(ev).toEqual(["tok:/local/domain/1/device/vbd/1/state"]);
    ev.length = 0;
    d0.write("/local/domain/1/device/vbd/1/state", "4");
    d1.write("other", "x"); // outside the watch
    await tick();
    expect(ev).toEqual(["tok:/local/domain/1/device/vbd/1/state"]);
    ev.length = 0;
    d1.unwatch("device", "tok");
    d1.write("device/vbd/1/state", "5");
    await tick();
    expect(ev).toEqual([]);
  });

  it("fires a watch below a removed node, and not for nodes the watcher cannot read", async () => {
    const { d0, d1, d2 } = store();
    d1.write("a/b/c", "1");
    const ev: string[] = [];
    d1.watch("a/b/c", "deep", (p) => ev.push(p));
    d2.watch("/local/domain/1/a", "nosy", (p) => ev.push(`nosy:${p}`));
    await tick();
    ev.length = 0;
    d0.rm("/local/domain/1/a");
    await tick();
    expect(ev).toEqual(["/local/domain/1/a/b/c"]);
  });

  it("transactions see a snapshot, commit atomically, and conflict with EAGAIN", async () => {
    const { d0, d1 } = store();
    d1.write("k", "0");
    const t = d1.transactionStart();
    d1.write("k", "1", t);
    expect(d1.read("k", t)).toBe("1");
    expect(d1.read("k")).toBe("0"); // not visible outside before commit
    d1.transactionEnd(t);
    expect(d1.read("k")).toBe("1");

    // A conflicting write between start and commit: EAGAIN, and nothing of the transaction is applied.
    const t2 = d1.transactionStart();
    expect(d1.read("k", t2)).toBe("1");
    d1.write("k2", "mine", t2);
    d0.write("/local/domain/1/k", "other");
    expect(code(() => d1.transactionEnd(t2))).toBe("EAGAIN");
    expect(d1.tryRead("k2")).toBeUndefined();

    // The retry helper re-runs the body until the commit goes through.
    let runs = 0;
    const v = d1.transaction((tx) => {
      runs++;
      const cur = Number(d1.read("k", tx) === "other" ? 10 : 0);
      if (runs === 1) d0.write("/local/domain/1/k", "other2"); // someone interferes once
      d1.write("k", String(cur + 1), tx);
      return runs;
    });
    expect(v).toBe(2);
    expect(d1.read("k")).toBe("1");

    // Aborting discards; an unknown transaction id is ENOENT.
    const t3 = d1.transactionStart();
    d1.write("gone", "x", t3);
    d1.transactionEnd(t3, false);
    expect(d1.tryRead("gone")).toBeUndefined();
    expect(code(() => d1.read("k", 999))).toBe("ENOENT");
  });

  it("a transaction's watches fire at commit", async () => {
    const { d1 } = store();
    const ev: string[] = [];
    d1.write("w", "0");
    d1.watch("w", "t", (p) => ev.push(p));
    await tick();
    ev.length = 0;
    const t = d1.transactionStart();
    d1.write("w", "1", t);
    await tick();
    expect(ev).toEqual([]);
    d1.transactionEnd(t);
    await tick();
    expect(ev).toEqual(["/local/domain/1/w"]);
  });

  it("conflicts a transaction on any change to a node it saw, and only then (node generations)", () => {
    const { d0, d1 } = store();
    d1.write("a", "1");
    d1.write("dir/x", "1");
    const conflicts = (body: (t: number) => void, meanwhile: () => void) => {
      const t = d1.transactionStart();
      body(t);
      meanwhile();
      return code(() => d1.transactionEnd(t));
    };
    // A node read as missing that appears meanwhile.
    expect(
      conflicts(
        (t) => d1.tryRead("b", t),
        () => d0.write("/local/domain/1/b", "x"),
      ),
    ).toBe("EAGAIN");
    // A directory listed whose children change.
    expect(
      conflicts(
        (t) => d1.directory("dir", t),
        () => d0.write("/local/domain/1/dir/y", "x"),
      ),
    ).toBe("EAGAIN");
    // A node whose permissions change.
    expect(
      conflicts(
        (t) => d1.read("a", t),
        () => d0.setPerms("/local/domain/1/a", [{ dom: 1, perm: "r" }]),
      ),
    ).toBe("EAGAIN");
    // A node removed and written again with the same value is still a change.
    expect(
      conflicts(
        (t) => d1.read("a", t),
        () => {
          d0.rm("/local/domain/1/a");
          d0.write("/local/domain/1/a", "1");
        },
      ),
    ).toBe("EAGAIN");
    // A write into a parent another writer changes conflicts too (its list of children is in the transaction).
    expect(
      conflicts(
        (t) => d1.write("dir/z", "1", t),
        () => d0.write("/local/domain/1/dir/w", "x"),
      ),
    ).toBe("EAGAIN");
    // Changes to nodes the transaction never saw do not conflict.
    expect(
      conflicts(
        (t) => d1.read("a", t),
        () => d0.write("/local/domain/1/elsewhere", "x"),
      ),
    ).toBeUndefined();
  });

  it("answers EACCES, not ENOENT, for a missing node under a parent the caller may not read", () => {
    const { d1, d2 } = store();
    d1.write("private/x", "1");
    expect(code(() => d2.read("/local/domain/1/private/none"))).toBe("EACCES");
    // /local/domain itself is dom0's and unreadable to guests (n0), so a guest learns nothing of other domains.
    expect(code(() => d2.read("/local/domain/9/none"))).toBe("EACCES");
    expect(code(() => d2.read("none"))).toBe("ENOENT");
    expect(code(() => d1.read("private/none"))).toBe("ENOENT");
  });

  it("enforces the per-domain quotas with xenstored's defaults, never on dom0", () => {
    const xs = new XenStore(null, { entriesPerDomain: 5 });
    const d0 = xs.connect(0);
    d0.mkdir("/local/domain/1");
    d0.setPerms("/local/domain/1", [{ dom: 1, perm: "n" }]);
    const d1 = xs.connect(1);
    for (let i = 0; i < 4; i++) d1.write(`k${i}`, "v"); // with its home, 5 nodes
    expect(code(() => d1.write("k4", "v"))).toBe("ENOSPC");
    expect(code(() => d1.write("k0", "x".repeat(2048)))).toBe("ENOSPC");
    d0.write("/local/domain/1/k0", "x".repeat(4000)); // dom0 is not limited
    const perms = (doms: number[]) => doms.map((dom) => ({ dom, perm: "r" as const }));
    expect(code(() => d1.setPerms("k1", perms([1, 2, 3, 4, 5, 6])))).toBe("ENOSPC"); // six entries, five allowed
    expect(code(() => d1.setPerms("k1", perms([2, 3])))).toBe("EPERM"); // the first entry names another owner
    d1.setPerms("k1", perms([1, 2, 3, 4, 5]));
    expect(code(() => d1.read("a".repeat(2049)))).toBe("EINVAL"); // path below the home longer than 2048
    expect(new XenStore().quota).toEqual({
      entriesPerDomain: 1000,
      entrySize: 2048,
      watchesPerDomain: 128,
      transactionsPerDomain: 10,
      permsPerNode: 5,
      pathMax: 2048,
    });
  });

  it("fires @introduceDomain and @releaseDomain to privileged watchers", async () => {
    const { xs, d0, d1 } = store();
    const ev: string[] = [];
    d0.watch("@introduceDomain", "i", (p) => ev.push(p));
    d0.watch("@releaseDomain", "r", (p) => ev.push(p));
    d1.watch("@introduceDomain", "nosy", (p) => ev.push(`nosy:${p}`));
    await tick();
    expect(ev).toEqual(["@introduceDomain", "@releaseDomain", "nosy:@introduceDomain"]); // registration
    ev.length = 0;
    xs.introduceDomain(3);
    xs.introduceDomain(3); // already introduced: no event
    xs.releaseDomain(3);
    await tick();
    expect(ev).toEqual(["@introduceDomain", "@releaseDomain"]);
    expect(code(() => xs.releaseDomain(3))).toBe("ENOENT");
  });
});
