/**
 * XenStore: the hierarchical key/value store xenstored keeps for the toolstack, frontends and backends
 * (xen/docs/misc/xenstore.txt, xen/include/public/io/xs_wire.h; semantics of the C xenstored).
 *
 * - Paths are absolute (`/local/domain/1/device/vbd/51712/state`) or relative to the connection's home
 *   `/local/domain/<domid>`. Values are strings (decimal ASCII for numbers, no trailing NUL).
 * - Permissions per node, as xenstored: the first entry names the owner and the access every domain not
 *   listed gets; later entries grant `r`, `w`, `b` (both) or `n` (none) to one domain. The owner and
 *   privileged domains (dom0) always have full access. A node created by an unprivileged domain inherits its
 *   parent's permissions with that domain as owner; a node dom0 creates inherits its parent's unchanged.
 * - Watches fire on write, mkdir, set-perms and rm of the watched path or anything below it, and once when
 *   registered. The event carries the path that changed and the watch's token. Events are delivered
 *   asynchronously (queueMicrotask), as WATCH_EVENT messages arrive after the reply to the request that caused
 *   them; a watcher that cannot read the changed node is not told.
 * - Transactions: `transactionStart` snapshots the store; reads and writes in the transaction see the
 *   snapshot plus its own changes. At commit, if any node the transaction read or wrote (or listed) changed
 *   since the snapshot, the commit fails with EAGAIN and the caller retries the whole transaction, as both
 *   Linux drivers do. Otherwise its changes are applied and their watches fire.
 *
 * Cost model: each request a domain makes is one message on its xenstore ring followed by an event-channel
 * kick to xenstored, counted as one hypercall (`hv.hypercall(dom, "xs_<op>")`). Replies and watch events come
 * back on the same ring through xenstored's notification and are not counted again.
 */

import type { HypercallSink } from "./grant-table.ts";

export type XsErrno = "ENOENT" | "EACCES" | "EINVAL" | "EAGAIN" | "EEXIST" | "E2BIG" | "EISDIR";

export class XenStoreError extends Error {
  constructor(
    readonly code: XsErrno,
    readonly path: string,
    message?: string,
  ) {
    super(message ?? `${code}: ${path}`);
    this.name = "XenStoreError";
  }
}

export type XsPermLetter = "n" | "r" | "w" | "b";
export interface XsPerm {
  dom: number;
  perm: XsPermLetter;
}

/** xs_wire.h: XENSTORE_PAYLOAD_MAX, XENSTORE_ABS_PATH_MAX. */
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;

interface Node {
  value: string;
  perms: XsPerm[];
  children: Map<string, Node>;
}

function newNode(value: string, perms: XsPerm[]): Node {
  return { value, perms: perms.map((p) => ({ ...p })), children: new Map() };
}

function cloneTree(n: Node): Node {
  const c = newNode(n.value, n.perms);
  for (const [k, v] of n.children) c.children.set(k, cloneTree(v));
  return c;
}

export function xsPermsToString(perms: readonly XsPerm[]): string[] {
  return perms.map((p) => `${p.perm}${p.dom}`);
}

type Op =
  | { kind: "write"; path: string; value: string }
  | { kind: "mkdir"; path: string }
  | { kind: "rm"; path: string }
  | { kind: "setPerms"; path: string; perms: XsPerm[] };

interface Transaction {
  id: number;
  dom: number;
  root: Node;
  startGen: number;
  /** Paths read, written or listed: the commit conflicts if any of them changed since the snapshot. */
  touched: Set<string>;
  ops: Op[];
}

export type WatchCallback = (path: string, token: string) => void;

interface Watch {
  dom: number;
  path: string;
  token: string;
  cb: WatchCallback;
}

export class XenStore {
  private root: Node = newNode("", [{ dom: 0, perm: "n" }]);
  /** Generation counter and the generation of the last change at each path (including deletions). */
  private gen = 0;
  private readonly changedAt = new Map<string, number>();
  private readonly txs = new Map<number, Transaction>();
  private nextTx = 1;
  private watches: Watch[] = [];
  private readonly privileged = new Set<number>([0]);

  constructor(private readonly hv: HypercallSink | null = null) {
    // The layout xenstored starts with.
    for (const p of ["/local", "/local/domain", "/tool"])
      this.apply({ kind: "mkdir", path: p }, 0, this.root, null);
  }

  /** Mark a domain as privileged (dom0 is). */
  setPrivileged(dom: number, yes = true): void {
    if (yes) this.privileged.add(dom);
    else this.privileged.delete(dom);
  }

  /** A connection for domain `dom` (what the domain's xenbus driver talks through). */
  connect(dom: number): XsHandle {
    return new XsHandle(this, dom);
  }

  // ---- internals used by XsHandle ----

  count(dom: number, op: string): void {
    this.hv?.hypercall(dom, `xs_${op}`);
  }

  canonical(dom: number, path: string): string {
    if (typeof path !== "string" || path.length === 0) throw new XenStoreError("EINVAL", String(path));
    const abs = path.startsWith("/") ? path : `/local/domain/${dom}/${path}`;
    if (abs.length > XENSTORE_ABS_PATH_MAX) throw new XenStoreError("E2BIG", abs.slice(0, 64) + "...");
    if (abs !== "/" && (abs.endsWith("/") || abs.includes("//") || !/^[A-Za-z0-9\-/_@]+$/.test(abs))) {
      throw new XenStoreError("EINVAL", abs, `invalid xenstore path '${abs}'`);
    }
    return abs;
  }

  private rootFor(tx: number | undefined, dom: number): { root: Node; t: Transaction | null } {
    if (tx === undefined || tx === 0) return { root: this.root, t: null };
    const t = this.txs.get(tx);
    if (!t || t.dom !== dom) throw new XenStoreError("ENOENT", `transaction ${tx}`);
    return { root: t.root, t };
  }

  private lookup(root: Node, path: string): Node | undefined {
    if (path === "/") return root;
    let n: Node | undefined = root;
    for (const part of path.slice(1).split("/")) {
      n = n.children.get(part);
      if (!n) return undefined;
    }
    return n;
  }

  private permOf(dom: number, n: Node): XsPermLetter {
    if (this.privileged.has(dom)) return "b";
    const owner = n.perms[0];
    if (!owner) return "n";
    if (owner.dom === dom) return "b";
    for (let i = 1; i < n.perms.length; i++) if (n.perms[i]!.dom === dom) return n.perms[i]!.perm;
    return owner.perm;
  }

  private canRead(dom: number, n: Node): boolean {
    const p = this.permOf(dom, n);
    return p === "r" || p === "b";
  }
  private canWrite(dom: number, n: Node): boolean {
    const p = this.permOf(dom, n);
    return p === "w" || p === "b";
  }

  private parentOf(path: string): string {
    const i = path.lastIndexOf("/");
    return i <= 0 ? "/" : path.slice(0, i);
  }

  read(dom: number, path: string, tx?: number): string {
    const { root, t } = this.rootFor(tx, dom);
    t?.touched.add(path);
    const n = this.lookup(root, path);
    if (!n) throw new XenStoreError("ENOENT", path);
    if (!this.canRead(dom, n)) throw new XenStoreError("EACCES", path);
    return n.value;
  }

  directory(dom: number, path: string, tx?: number): string[] {
    const { root, t } = this.rootFor(tx, dom);
    t?.touched.add(path);
    const n = this.lookup(root, path);
    if (!n) throw new XenStoreError("ENOENT", path);
    if (!this.canRead(dom, n)) throw new XenStoreError("EACCES", path);
    return [...n.children.keys()];
  }

  getPerms(dom: number, path: string, tx?: number): XsPerm[] {
    const { root, t } = this.rootFor(tx, dom);
    t?.touched.add(path);
    const n = this.lookup(root, path);
    if (!n) throw new XenStoreError("ENOENT", path);
    if (!this.canRead(dom, n)) throw new XenStoreError("EACCES", path);
    return n.perms.map((p) => ({ ...p }));
  }

  /** Perform a modifying op, in a transaction or directly (then watches fire). */
  modify(dom: number, op: Op, tx?: number): void {
    if (op.kind === "write" && new TextEncoder().encode(op.value).length > XENSTORE_PAYLOAD_MAX) {
      throw new XenStoreError("E2BIG", op.path);
    }
    if (op.kind === "rm" && op.path === "/") throw new XenStoreError("EINVAL", op.path);
    const { root, t } = this.rootFor(tx, dom);
    if (t) {
      t.touched.add(op.path);
      t.touched.add(this.parentOf(op.path));
      this.apply(op, dom, root, null);
      t.ops.push(op);
      return;
    }
    const fired: string[] = [];
    this.apply(op, dom, root, fired);
    this.fire(fired);
  }

  /**
   * Apply `op` to the tree `root`, checking permissions. On the live tree (`fired` given) it also records the
   * change generation of every path it touched and collects the paths whose watches must fire.
   */
  private apply(op: Op, dom: number, root: Node, fired: string[] | null): void {
    const path = op.path;
    const mark = (p: string) => {
      if (!fired) return;
      this.changedAt.set(p, ++this.gen);
      fired.push(p);
    };
    const existing = this.lookup(root, path);
    switch (op.kind) {
      case "write":
      case "mkdir": {
        if (existing) {
          if (op.kind === "mkdir") return; // mkdir of an existing node succeeds and changes nothing
          if (!this.canWrite(dom, existing)) throw new XenStoreError("EACCES", path);
          existing.value = op.value;
          mark(path);
          return;
        }
        // Create the node and any missing ancestors; the nearest existing ancestor must be writable.
        const parts = path.slice(1).split("/");
        let n = root;
        let i = 0;
        for (; i < parts.length; i++) {
          const c = n.children.get(parts[i]!);
          if (!c) break;
          n = c;
        }
        if (!this.canWrite(dom, n)) throw new XenStoreError("EACCES", path);
        let cur = "/" + parts.slice(0, i).join("/");
        // A new child changes its parent's directory: a transaction that listed the parent conflicts.
        if (fired) this.changedAt.set(cur, ++this.gen);
        if (cur === "/") cur = "";
        for (; i < parts.length; i++) {
          const perms = n.perms.map((p) => ({ ...p }));
          if (!this.privileged.has(dom) && perms[0]) perms[0] = { dom, perm: perms[0].perm };
          const c = newNode(i === parts.length - 1 && op.kind === "write" ? op.value : "", perms);
          n.children.set(parts[i]!, c);
          n = c;
          cur += "/" + parts[i];
          mark(cur);
        }
        return;
      }
      case "rm": {
        if (!existing) {
          // xenstored: removing a missing node is ENOENT only if its parent is missing too.
          if (!this.lookup(root, this.parentOf(path))) throw new XenStoreError("ENOENT", path);
          return;
        }
        const parent = this.lookup(root, this.parentOf(path))!;
        if (!this.canWrite(dom, existing)) throw new XenStoreError("EACCES", path);
        const gone: string[] = [];
        const walk = (p: string, n: Node) => {
          gone.push(p);
          for (const [k, c] of n.children) walk(`${p}/${k}`, c);
        };
        walk(path, existing);
        parent.children.delete(path.slice(path.lastIndexOf("/") + 1));
        if (fired) {
          // Deleted descendants count as changed (a transaction that read them conflicts), and watchers
          // registered below the removed node hear about it (xenstored fires those too).
          for (const p of gone) this.changedAt.set(p, ++this.gen);
          fired.push(path);
          this.changedAt.set(this.parentOf(path), ++this.gen);
          for (const w of this.watches) {
            if (w.path.startsWith(path + "/")) fired.push(w.path);
          }
        }
        return;
      }
      case "setPerms": {
        if (!existing) throw new XenStoreError("ENOENT", path);
        if (!this.canWrite(dom, existing)) throw new XenStoreError("EACCES", path);
        if (op.perms.length === 0) throw new XenStoreError("EINVAL", path);
        // Only a privileged domain may give a node away to another owner.
        if (!this.privileged.has(dom) && op.perms[0]!.dom !== dom) throw new XenStoreError("EACCES", path);
        existing.perms = op.perms.map((p) => ({ ...p }));
        mark(path);
        return;
      }
    }
  }

  private fire(paths: string[]): void {
    if (!paths.length || !this.watches.length) return;
    const events: { w: Watch; path: string }[] = [];
    for (const p of new Set(paths)) {
      const node = this.lookup(this.root, p);
      for (const w of this.watches) {
        // At or below the watched path (rm adds the watched paths it removed from under a watcher).
        if (!(p === w.path || p.startsWith(w.path === "/" ? "/" : w.path + "/"))) continue;
        const evPath = p;
        // A watcher is only told about nodes it may read (deleted nodes: decided on the nearest ancestor).
        let n = node;
        let q = p;
        while (!n && q !== "/") {
          q = this.parentOf(q);
          n = this.lookup(this.root, q);
        }
        if (n && !this.canRead(w.dom, n)) continue;
        events.push({ w, path: evPath });
      }
    }
    for (const e of events) this.deliver(e.w, e.path);
  }

  private deliver(w: Watch, path: string): void {
    queueMicrotask(() => {
      if (this.watches.includes(w)) w.cb(path, w.token);
    });
  }

  watch(dom: number, path: string, token: string, cb: WatchCallback): void {
    if (this.watches.some((w) => w.dom === dom && w.path === path && w.token === token)) {
      throw new XenStoreError("EEXIST", path);
    }
    const w = { dom, path, token, cb };
    this.watches.push(w);
    // xenstored fires every new watch once, so the watcher reads the current state.
    this.deliver(w, path);
  }

  unwatch(dom: number, path: string, token: string): void {
    const before = this.watches.length;
    this.watches = this.watches.filter((w) => !(w.dom === dom && w.path === path && w.token === token));
    if (this.watches.length === before) throw new XenStoreError("ENOENT", path);
  }

  transactionStart(dom: number): number {
    const id = this.nextTx++;
    this.txs.set(id, {
      id,
      dom,
      root: cloneTree(this.root),
      startGen: this.gen,
      touched: new Set(),
      ops: [],
    });
    return id;
  }

  transactionEnd(dom: number, tx: number, commit: boolean): void {
    const t = this.txs.get(tx);
    if (!t || t.dom !== dom) throw new XenStoreError("ENOENT", `transaction ${tx}`);
    this.txs.delete(tx);
    if (!commit) return;
    for (const p of t.touched) {
      if ((this.changedAt.get(p) ?? 0) > t.startGen) throw new XenStoreError("EAGAIN", p);
    }
    const fired: string[] = [];
    for (const op of t.ops) this.apply(op, dom, this.root, fired);
    this.fire(fired);
  }
}

/** One domain's connection to xenstored (its xenbus). Every request counts one ring kick. */
export class XsHandle {
  constructor(
    readonly store: XenStore,
    readonly dom: number,
  ) {}

  private p(path: string): string {
    return this.store.canonical(this.dom, path);
  }

  read(path: string, tx?: number): string {
    this.store.count(this.dom, "read");
    return this.store.read(this.dom, this.p(path), tx);
  }

  /** Read, or undefined when the node does not exist (xenbus_read returning -ENOENT). */
  tryRead(path: string, tx?: number): string | undefined {
    try {
      return this.read(path, tx);
    } catch (e) {
      if (e instanceof XenStoreError && e.code === "ENOENT") return undefined;
      throw e;
    }
  }

  /** Read a decimal integer (xenbus_scanf "%u"/"%d"); undefined if missing or not a number. */
  readInt(path: string, tx?: number): number | undefined {
    const v = this.tryRead(path, tx);
    if (v === undefined || !/^\s*-?\d+\s*$/.test(v)) return undefined;
    return Number.parseInt(v, 10);
  }

  write(path: string, value: string | number, tx?: number): void {
    this.store.count(this.dom, "write");
    this.store.modify(this.dom, { kind: "write", path: this.p(path), value: String(value) }, tx);
  }

  mkdir(path: string, tx?: number): void {
    this.store.count(this.dom, "mkdir");
    this.store.modify(this.dom, { kind: "mkdir", path: this.p(path) }, tx);
  }

  rm(path: string, tx?: number): void {
    this.store.count(this.dom, "rm");
    this.store.modify(this.dom, { kind: "rm", path: this.p(path) }, tx);
  }

  directory(path: string, tx?: number): string[] {
    this.store.count(this.dom, "directory");
    return this.store.directory(this.dom, this.p(path), tx);
  }

  getPerms(path: string, tx?: number): XsPerm[] {
    this.store.count(this.dom, "get_perms");
    return this.store.getPerms(this.dom, this.p(path), tx);
  }

  setPerms(path: string, perms: XsPerm[], tx?: number): void {
    this.store.count(this.dom, "set_perms");
    this.store.modify(this.dom, { kind: "setPerms", path: this.p(path), perms }, tx);
  }

  watch(path: string, token: string, cb: WatchCallback): void {
    this.store.count(this.dom, "watch");
    this.store.watch(this.dom, this.p(path), token, cb);
  }

  unwatch(path: string, token: string): void {
    this.store.count(this.dom, "unwatch");
    this.store.unwatch(this.dom, this.p(path), token);
  }

  transactionStart(): number {
    this.store.count(this.dom, "transaction_start");
    return this.store.transactionStart(this.dom);
  }

  /** Commit (or abort) a transaction; a conflicting commit throws XenStoreError EAGAIN. */
  transactionEnd(tx: number, commit = true): void {
    this.store.count(this.dom, "transaction_end");
    this.store.transactionEnd(this.dom, tx, commit);
  }

  /**
   * Run `body` in a transaction and commit, retrying the whole body on EAGAIN (the xenbus_transaction_start
   * ... `if (err == -EAGAIN) goto again` pattern of blkfront and blkback). Errors from `body` abort it.
   */
  transaction<T>(body: (tx: number) => T, maxAttempts = 100): T {
    for (let attempt = 1; ; attempt++) {
      const tx = this.transactionStart();
      let result: T;
      try {
        result = body(tx);
      } catch (e) {
        this.transactionEnd(tx, false);
        throw e;
      }
      try {
        this.transactionEnd(tx, true);
        return result;
      } catch (e) {
        if (e instanceof XenStoreError && e.code === "EAGAIN" && attempt < maxAttempts) continue;
        throw e;
      }
    }
  }
}
