/**
 * XenStore: the hierarchical key/value store xenstored keeps for the toolstack, frontends and backends
 * (xen/docs/misc/xenstore.txt, xen/include/public/io/xs_wire.h; semantics of the C xenstored of Xen 4.17,
 * tools/xenstore/xenstored_core.c, xenstored_transaction.c, xenstored_domain.c).
 *
 * - Paths are absolute (`/local/domain/1/device/vbd/51712/state`) or relative to the connection's home
 *   `/local/domain/<domid>`. Values are strings (decimal ASCII for numbers, no trailing NUL). Writing a node
 *   creates its missing ancestors (empty values); the nearest existing ancestor must be writable.
 * - Permissions per node, as xenstored: the first entry names the owner and the access every domain not
 *   listed gets; later entries grant `r`, `w`, `b` (both) or `n` (none) to one domain. The owner and
 *   privileged domains (dom0) always have full access. A node created by an unprivileged domain inherits its
 *   parent's permissions with that domain as owner; a node dom0 creates inherits its parent's unchanged. Only
 *   the owner (or dom0) may set a node's permissions, and an unprivileged owner may not give the node away
 *   (EPERM, do_set_perms). A missing node whose nearest existing ancestor the caller cannot read is EACCES, not
 *   ENOENT (errno_from_parents: a domain learns nothing of what it may not see).
 * - Watches fire on write, mkdir, set-perms and rm of the watched path or anything below it, and once when
 *   registered. The event carries the path that changed and the watch's token. Events are delivered
 *   asynchronously (queueMicrotask), as WATCH_EVENT messages arrive after the reply to the request that caused
 *   them; a watcher that cannot read the changed node is not told. The special paths `@introduceDomain` and
 *   `@releaseDomain` fire when a domain is introduced or released, to privileged watchers only (their default
 *   permissions name dom0 alone).
 * - Transactions: `transactionStart` snapshots the store; reads and writes in the transaction see the
 *   snapshot plus its own changes. Every node has a generation count, bumped by each change to it (a new or
 *   removed child changes its parent). The transaction records the generation (or absence) of every node it
 *   read, listed, or wrote; at commit, if any of them differs in the live store, the commit fails with EAGAIN
 *   and the caller retries the whole transaction, as both Linux drivers do (xenstored_transaction.c
 *   check_transaction). Otherwise its changes are applied and their watches fire.
 * - Quotas for unprivileged domains, with xenstored's defaults (xenstored(8), xenstored_core.c): 1000 nodes
 *   owned per domain (ENOSPC), 2048 bytes of value and permissions per node (ENOSPC), 128 watches per domain (E2BIG), 10 open
 *   transactions per domain (ENOSPC), 5 permission entries per node (ENOSPC), 2048 characters of path below
 *   the domain's home (EINVAL).
 *
 * Cost model: each request a domain makes is one message on its xenstore ring followed by an event-channel
 * kick to xenstored, counted as one hypercall (`hv.hypercall(dom, "xs_<op>")`). Replies and watch events come
 * back on the same ring through xenstored's notification and are not counted again.
 */

import type { HypercallSink } from "./grant-table.ts";

/** The errno names of xs_wire.h `xsd_errors` (the order is the wire table's). */
export const XSD_ERRORS = [
  "EINVAL",
  "EACCES",
  "EEXIST",
  "EISDIR",
  "ENOENT",
  "ENOMEM",
  "ENOSPC",
  "EIO",
  "ENOTEMPTY",
  "ENOSYS",
  "EROFS",
  "EBUSY",
  "EAGAIN",
  "EISCONN",
  "E2BIG",
  "EPERM",
] as const;
export type XsErrno = (typeof XSD_ERRORS)[number];

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

/** xs_wire.h: XENSTORE_PAYLOAD_MAX, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX. */
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/** Per-domain limits for unprivileged domains; the defaults are C xenstored's (xenstored(8) options). */
export interface XsQuota {
  /** -E, --entry-nb: nodes a domain may own. */
  entriesPerDomain: number;
  /** -S, --entry-size: bytes of one node (value, child names, permissions). */
  entrySize: number;
  /** -W, --watch-nb: watches per domain. */
  watchesPerDomain: number;
  /** -t, --transaction: open transactions per domain. */
  transactionsPerDomain: number;
  /** -A, --perm-nb: permission entries per node. */
  permsPerNode: number;
  /** -M, --path-max: path length below the domain's home. */
  pathMax: number;
}

export const XS_DEFAULT_QUOTA: Readonly<XsQuota> = Object.freeze({
  entriesPerDomain: 1000,
  entrySize: 2048,
  watchesPerDomain: 128,
  transactionsPerDomain: 10,
  permsPerNode: 5,
  pathMax: XENSTORE_REL_PATH_MAX,
});

/** The special watch paths (docs/misc/xenstore.txt, "Special watch paths"). */
export const XS_INTRODUCE_DOMAIN = "@introduceDomain";
export const XS_RELEASE_DOMAIN = "@releaseDomain";

interface Node {
  value: string;
  perms: XsPerm[];
  children: Map<string, Node>;
  /** Generation of the last change to this node (its value, permissions or list of children). */
  gen: number;
}

function newNode(value: string, perms: XsPerm[], gen: number): Node {
  return { value, perms: perms.map((p) => ({ ...p })), children: new Map(), gen };
}

function cloneTree(n: Node): Node {
  const c = newNode(n.value, n.perms, n.gen);
  for (const [k, v] of n.children) c.children.set(k, cloneTree(v));
  return c;
}

const encoder = new TextEncoder();

/**
 * What a write costs against the entry-size quota: the value and 8 bytes a permission. A parent's list of
 * children grows when a child is created, but xenstored writes the parent then without the quota check.
 */
function entrySize(value: string, perms: readonly XsPerm[]): number {
  return encoder.encode(value).length + perms.length * 8;
}

export function xsPermsToString(perms: readonly XsPerm[]): string[] {
  return perms.map((p) => `${p.perm}${p.dom}`);
}

/** Parse xenstored's permission strings (`n0`, `r1`, ...); undefined if any is malformed. */
export function xsPermsFromStrings(list: readonly string[]): XsPerm[] | undefined {
  const out: XsPerm[] = [];
  for (const s of list) {
    const m = /^([nrwb])(\d{1,5})$/.exec(s);
    if (!m) return undefined;
    const dom = Number(m[2]);
    if (dom > 0xffff) return undefined;
    out.push({ perm: m[1] as XsPermLetter, dom });
  }
  return out;
}

type Op =
  | { kind: "write"; path: string; value: string }
  | { kind: "mkdir"; path: string }
  | { kind: "rm"; path: string }
  | { kind: "setPerms"; path: string; perms: XsPerm[] };

/** Absent from the store (a transaction that saw a node missing conflicts if it appears). */
const NO_GENERATION = -1;

interface Transaction {
  id: number;
  dom: number;
  owner: object | undefined;
  root: Node;
  /** Generation at first access of every path read, listed or written (NO_GENERATION: absent). */
  accessed: Map<string, number>;
  ops: Op[];
}

export type WatchCallback = (path: string, token: string) => void;

interface Watch {
  dom: number;
  path: string;
  token: string;
  cb: WatchCallback;
  /** The connection that registered it (a socket or ring connection); undefined for in-process handles. */
  owner: object | undefined;
}

export class XenStore {
  private root: Node = newNode("", [{ dom: 0, perm: "n" }], 0);
  /** Global generation counter: every change takes the next value. */
  private gen = 0;
  private readonly txs = new Map<number, Transaction>();
  private nextTx = 1;
  private watches: Watch[] = [];
  private readonly privileged = new Set<number>([0]);
  /** Domains introduced to xenstored (XS_INTRODUCE, or created by the host). */
  private readonly introduced = new Set<number>([0]);
  private readonly targets = new Map<number, number>();
  readonly quota: XsQuota;

  constructor(
    private readonly hv: HypercallSink | null = null,
    quota: Partial<XsQuota> = {},
  ) {
    this.quota = { ...XS_DEFAULT_QUOTA, ...quota };
    // The layout xenstored starts with.
    for (const p of ["/local", "/local/domain", "/tool"])
      this.apply({ kind: "mkdir", path: p }, 0, this.root, null);
  }

  /** Mark a domain as privileged (dom0 is). */
  setPrivileged(dom: number, yes = true): void {
    if (yes) this.privileged.add(dom);
    else this.privileged.delete(dom);
  }

  isPrivileged(dom: number): boolean {
    return this.privileged.has(dom);
  }

  /** A connection for domain `dom` (what the domain's xenbus driver talks through). */
  connect(dom: number): XsHandle {
    return new XsHandle(this, dom);
  }

  // ---- domains: introduce and release (XS_INTRODUCE, XS_RELEASE) ----

  isIntroduced(dom: number): boolean {
    return this.introduced.has(dom);
  }

  /** xenstored's domain introduction: `@introduceDomain` watchers hear of it (only the first time). */
  introduceDomain(dom: number): void {
    if (this.introduced.has(dom)) return;
    this.introduced.add(dom);
    this.fireSpecial(XS_INTRODUCE_DOMAIN);
  }

  /** The domain is gone: its watches and transactions go with it, and `@releaseDomain` watchers hear of it. */
  releaseDomain(dom: number): void {
    if (!this.introduced.delete(dom)) throw new XenStoreError("ENOENT", `domain ${dom}`);
    this.targets.delete(dom);
    this.watches = this.watches.filter((w) => w.dom !== dom);
    for (const [id, t] of this.txs) if (t.dom === dom) this.txs.delete(id);
    this.fireSpecial(XS_RELEASE_DOMAIN);
  }

  private fireSpecial(path: string): void {
    for (const w of this.watches) if (w.path === path && this.privileged.has(w.dom)) this.deliver(w, path);
  }

  // ---- internals used by XsHandle and the wire protocol ----

  count(dom: number, op: string): void {
    this.hv?.hypercall(dom, `xs_${op}`);
  }

  /** An absolute, valid node path (or a special `@` path when `special` is allowed); EINVAL otherwise. */
  canonical(dom: number, path: string, special = false): string {
    if (typeof path !== "string" || path.length === 0) throw new XenStoreError("EINVAL", String(path));
    if (path.startsWith("@")) {
      if (special && path.length <= XENSTORE_REL_PATH_MAX && /^@[A-Za-z0-9\-/_@]*$/.test(path)) return path;
      throw new XenStoreError("EINVAL", path, `invalid xenstore path '${path.slice(0, 64)}'`);
    }
    const home = `/local/domain/${dom}`;
    const abs = path.startsWith("/") ? path : `${home}/${path}`;
    const tooLong =
      abs.length > XENSTORE_ABS_PATH_MAX ||
      (!this.privileged.has(dom) && abs.length > home.length + 1 + this.quota.pathMax);
    if (
      tooLong ||
      (abs !== "/" && (abs.endsWith("/") || abs.includes("//") || !/^[A-Za-z0-9\-/_@]+$/.test(abs)))
    ) {
      throw new XenStoreError("EINVAL", abs.slice(0, 64), `invalid xenstore path '${abs.slice(0, 64)}'`);
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

  /** Record a transaction's first look at `path` (its generation in the snapshot, or absence). */
  private access(t: Transaction | null, path: string): void {
    if (!t || t.accessed.has(path)) return;
    t.accessed.set(path, this.lookup(t.root, path)?.gen ?? NO_GENERATION);
  }

  /** xenstored perm_for_conn: a domain with a target (a device-model stub domain) acts as its target too. */
  private permOf(dom: number, n: Node): XsPermLetter {
    if (this.privileged.has(dom)) return "b";
    const owner = n.perms[0];
    if (!owner) return "n";
    const target = this.targets.get(dom);
    if (owner.dom === dom || owner.dom === target) return "b";
    for (let i = 1; i < n.perms.length; i++) {
      const e = n.perms[i]!;
      if (e.dom === dom || e.dom === target) return e.perm;
    }
    return owner.perm;
  }

  /** XS_SET_TARGET: `dom` may act on `target`'s nodes as `target` (a stub domain serving its guest). */
  setTarget(dom: number, target: number): void {
    this.targets.set(dom, target);
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

  /** The readable node at `path`, or ENOENT / EACCES as xenstored's get_node and errno_from_parents say. */
  private readable(dom: number, root: Node, path: string): Node {
    const n = this.lookup(root, path);
    if (n) {
      if (!this.canRead(dom, n)) throw new XenStoreError("EACCES", path);
      return n;
    }
    let q = path;
    while (q !== "/") {
      q = this.parentOf(q);
      const a = this.lookup(root, q);
      if (a) {
        if (!this.canRead(dom, a)) throw new XenStoreError("EACCES", path);
        break;
      }
    }
    throw new XenStoreError("ENOENT", path);
  }

  read(dom: number, path: string, tx?: number): string {
    const { root, t } = this.rootFor(tx, dom);
    this.access(t, path);
    return this.readable(dom, root, path).value;
  }

  directory(dom: number, path: string, tx?: number): string[] {
    const { root, t } = this.rootFor(tx, dom);
    this.access(t, path);
    return [...this.readable(dom, root, path).children.keys()];
  }

  /** The node's children and its generation (XS_DIRECTORY_PART: the generation tells a reader the list changed). */
  directoryWithGen(dom: number, path: string, tx?: number): { children: string[]; gen: number } {
    const { root, t } = this.rootFor(tx, dom);
    this.access(t, path);
    const n = this.readable(dom, root, path);
    return { children: [...n.children.keys()], gen: n.gen };
  }

  getPerms(dom: number, path: string, tx?: number): XsPerm[] {
    const { root, t } = this.rootFor(tx, dom);
    this.access(t, path);
    return this.readable(dom, root, path).perms.map((p) => ({ ...p }));
  }

  /** Perform a modifying op, in a transaction or directly (then watches fire). */
  modify(dom: number, op: Op, tx?: number): void {
    if (op.kind === "write" && encoder.encode(op.value).length > XENSTORE_PAYLOAD_MAX) {
      throw new XenStoreError("E2BIG", op.path);
    }
    if (op.kind === "rm" && op.path === "/") throw new XenStoreError("EINVAL", op.path);
    const { root, t } = this.rootFor(tx, dom);
    if (t) {
      // The op touches the path, its parent (a new or removed child) and every ancestor it may create.
      for (let p = op.path; ; p = this.parentOf(p)) {
        this.access(t, p);
        if (p === "/" || this.lookup(t.root, p)) break;
      }
      this.access(t, this.parentOf(op.path));
      this.apply(op, dom, root, null);
      t.ops.push(op);
      return;
    }
    const fired: string[] = [];
    this.apply(op, dom, root, fired);
    this.fire(fired);
  }

  private countOwned(root: Node, dom: number): number {
    let count = 0;
    const walk = (n: Node) => {
      if (n.perms[0]?.dom === dom) count++;
      for (const c of n.children.values()) walk(c);
    };
    walk(root);
    return count;
  }

  /**
   * Apply `op` to the tree `root`, checking permissions and quotas. On the live tree (`fired` given) it also
   * bumps the generation of every node it changed and collects the paths whose watches must fire; in a
   * transaction's private tree generations stay as in the snapshot (they are only compared at commit).
   */
  private apply(op: Op, dom: number, root: Node, fired: string[] | null): void {
    const path = op.path;
    const unprivileged = !this.privileged.has(dom);
    const bump = (n: Node, p: string | null) => {
      if (!fired) return;
      n.gen = ++this.gen;
      if (p !== null) fired.push(p);
    };
    const existing = this.lookup(root, path);
    switch (op.kind) {
      case "write":
      case "mkdir": {
        if (existing) {
          if (op.kind === "mkdir") return; // mkdir of an existing node succeeds and changes nothing
          if (!this.canWrite(dom, existing)) throw new XenStoreError("EACCES", path);
          if (unprivileged && entrySize(op.value, existing.perms) >= this.quota.entrySize)
            throw new XenStoreError("ENOSPC", path);
          existing.value = op.value;
          bump(existing, path);
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
        if (unprivileged) {
          if (this.countOwned(root, dom) + (parts.length - i) > this.quota.entriesPerDomain)
            throw new XenStoreError("ENOSPC", path);
          if (op.kind === "write" && entrySize(op.value, n.perms) >= this.quota.entrySize)
            throw new XenStoreError("ENOSPC", path);
        }
        // A new child changes its parent's list of children. Watches fire for the path written alone (watchers
        // of the created ancestors see it, being below them), as xenstored's do_write fires them.
        bump(n, null);
        let cur = i === 0 ? "" : "/" + parts.slice(0, i).join("/");
        for (; i < parts.length; i++) {
          const perms = n.perms.map((p) => ({ ...p }));
          if (unprivileged && perms[0]) perms[0] = { dom, perm: perms[0].perm };
          const c = newNode(i === parts.length - 1 && op.kind === "write" ? op.value : "", perms, n.gen);
          n.children.set(parts[i]!, c);
          n = c;
          cur += "/" + parts[i];
          bump(c, i === parts.length - 1 ? cur : null);
        }
        return;
      }
      case "rm": {
        if (!existing) {
          // xenstored: removing a missing node is ENOENT only if its parent is missing too.
          this.readable(dom, root, this.parentOf(path));
          return;
        }
        const parent = this.lookup(root, this.parentOf(path))!;
        if (!this.canWrite(dom, existing)) throw new XenStoreError("EACCES", path);
        parent.children.delete(path.slice(path.lastIndexOf("/") + 1));
        if (fired) {
          // The parent's children changed; watchers registered below the removed node hear about it too
          // (xenstored fires those), decided on the removed node's permissions.
          bump(parent, null);
          fired.push(path);
          for (const w of this.watches) {
            if (w.path.startsWith(path + "/")) fired.push(w.path);
          }
        }
        return;
      }
      case "setPerms": {
        if (!existing) {
          this.readable(dom, root, path);
          throw new XenStoreError("ENOENT", path);
        }
        // do_set_perms, in its order: the list is checked (its length against the quota), then the caller must
        // own the node (XS_PERM_WRITE | XS_PERM_OWNER) ...
        if (op.perms.length === 0) throw new XenStoreError("EINVAL", path);
        if (unprivileged && op.perms.length > this.quota.permsPerNode)
          throw new XenStoreError("ENOSPC", path);
        if (unprivileged && existing.perms[0]?.dom !== dom) throw new XenStoreError("EACCES", path);
        // ... and an unprivileged owner may not give it away.
        if (unprivileged && op.perms[0]!.dom !== dom) throw new XenStoreError("EPERM", path);
        existing.perms = op.perms.map((p) => ({ ...p }));
        bump(existing, path);
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
        // A watcher is only told about nodes it may read (deleted nodes: decided on the nearest ancestor).
        let n = node;
        let q = p;
        while (!n && q !== "/") {
          q = this.parentOf(q);
          n = this.lookup(this.root, q);
        }
        if (n && !this.canRead(w.dom, n)) continue;
        events.push({ w, path: p });
      }
    }
    for (const e of events) this.deliver(e.w, e.path);
  }

  private deliver(w: Watch, path: string): void {
    queueMicrotask(() => {
      if (this.watches.includes(w)) w.cb(path, w.token);
    });
  }

  /**
   * Register a watch (`path` absolute or special). `owner` is the connection it belongs to: the same path and
   * token on two connections are two watches, and `dropOwner` removes a closed connection's.
   */
  watch(dom: number, path: string, token: string, cb: WatchCallback, owner?: object): void {
    if (
      this.watches.some((w) => w.owner === owner && w.dom === dom && w.path === path && w.token === token)
    ) {
      throw new XenStoreError("EEXIST", path);
    }
    if (!this.privileged.has(dom)) {
      let n = 0;
      for (const w of this.watches) if (w.dom === dom) n++;
      if (n >= this.quota.watchesPerDomain) throw new XenStoreError("E2BIG", path);
    }
    const w: Watch = { dom, path, token, cb, owner };
    this.watches.push(w);
    // xenstored fires every new watch once, so the watcher reads the current state.
    this.deliver(w, path);
  }

  unwatch(dom: number, path: string, token: string, owner?: object): void {
    const before = this.watches.length;
    this.watches = this.watches.filter(
      (w) => !(w.owner === owner && w.dom === dom && w.path === path && w.token === token),
    );
    if (this.watches.length === before) throw new XenStoreError("ENOENT", path);
  }

  /** XS_RESET_WATCHES: drop every watch of the connection. */
  resetWatches(dom: number, owner?: object): void {
    this.watches = this.watches.filter((w) => !(w.owner === owner && w.dom === dom));
  }

  /** A connection closed: its watches and open transactions go. */
  dropOwner(owner: object): void {
    this.watches = this.watches.filter((w) => w.owner !== owner);
    for (const [id, t] of this.txs) if (t.owner === owner) this.txs.delete(id);
  }

  transactionStart(dom: number, owner?: object): number {
    if (!this.privileged.has(dom)) {
      let n = 0;
      for (const t of this.txs.values()) if (t.dom === dom) n++;
      if (n >= this.quota.transactionsPerDomain) throw new XenStoreError("ENOSPC", "transaction");
    }
    // Transaction ids are never 0 (0 means "no transaction" on the wire) and never reused soon.
    const id = this.nextTx;
    this.nextTx = this.nextTx >= 0xffff_fffe ? 1 : this.nextTx + 1;
    this.txs.set(id, { id, dom, owner, root: cloneTree(this.root), accessed: new Map(), ops: [] });
    return id;
  }

  transactionEnd(dom: number, tx: number, commit: boolean, owner?: object): void {
    const t = this.txs.get(tx);
    if (!t || t.dom !== dom || t.owner !== owner) throw new XenStoreError("ENOENT", `transaction ${tx}`);
    this.txs.delete(tx);
    if (!commit) return;
    for (const [p, gen] of t.accessed) {
      if ((this.lookup(this.root, p)?.gen ?? NO_GENERATION) !== gen) throw new XenStoreError("EAGAIN", p);
    }
    // Nothing it saw changed, so every op applies as it did in the snapshot.
    const fired: string[] = [];
    for (const op of t.ops) this.apply(op, dom, this.root, fired);
    this.fire(fired);
  }
}

/**
 * What a xenbus driver needs of its xenstore connection: an in-process handle (`XsHandle`) and a client on the
 * guest's xenstore ring both provide it, so blkfront and blkback run over either.
 */
export interface XsClient {
  readonly dom: number;
  read(path: string, tx?: number): string;
  tryRead(path: string, tx?: number): string | undefined;
  readInt(path: string, tx?: number): number | undefined;
  write(path: string, value: string | number, tx?: number): void;
  mkdir(path: string, tx?: number): void;
  rm(path: string, tx?: number): void;
  directory(path: string, tx?: number): string[];
  getPerms(path: string, tx?: number): XsPerm[];
  setPerms(path: string, perms: XsPerm[], tx?: number): void;
  watch(path: string, token: string, cb: WatchCallback): void;
  unwatch(path: string, token: string): void;
  transactionStart(): number;
  transactionEnd(tx: number, commit?: boolean): void;
  transaction<T>(body: (tx: number) => T, maxAttempts?: number): T;
}

/** Read a decimal integer (xenbus_scanf "%u"/"%d"); undefined if missing or not a number. */
export function parseXsInt(v: string | undefined): number | undefined {
  if (v === undefined || !/^\s*-?\d+\s*$/.test(v)) return undefined;
  return Number.parseInt(v, 10);
}

/**
 * Run `body` in a transaction and commit, retrying the whole body on EAGAIN (the xenbus_transaction_start
 * ... `if (err == -EAGAIN) goto again` pattern of blkfront and blkback). Errors from `body` abort it.
 */
export function runTransaction<T>(xs: XsClient, body: (tx: number) => T, maxAttempts = 100): T {
  for (let attempt = 1; ; attempt++) {
    const tx = xs.transactionStart();
    let result: T;
    try {
      result = body(tx);
    } catch (e) {
      xs.transactionEnd(tx, false);
      throw e;
    }
    try {
      xs.transactionEnd(tx, true);
      return result;
    } catch (e) {
      if (e instanceof XenStoreError && e.code === "EAGAIN" && attempt < maxAttempts) continue;
      throw e;
    }
  }
}

/** One domain's connection to xenstored (its xenbus). Every request counts one ring kick. */
export class XsHandle implements XsClient {
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

  readInt(path: string, tx?: number): number | undefined {
    return parseXsInt(this.tryRead(path, tx));
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
    this.store.watch(this.dom, this.store.canonical(this.dom, path, true), token, cb);
  }

  unwatch(path: string, token: string): void {
    this.store.count(this.dom, "unwatch");
    this.store.unwatch(this.dom, this.store.canonical(this.dom, path, true), token);
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

  transaction<T>(body: (tx: number) => T, maxAttempts = 100): T {
    return runTransaction(this, body, maxAttempts);
  }
}
