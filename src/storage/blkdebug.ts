/**
 * QEMU's blkdebug block driver (block/blkdebug.c, QEMU 7.2) as a medium wrapper: a rule file that injects errors
 * when the block layer passes named events, a small state machine that rules can depend on and change, and
 * breakpoints that hold a request at an event until it is resumed (qemu-io's `break`, `resume`, `remove_break`).
 *
 * The rule file is QEMU's ini format (docs/devel/blkdebug.txt):
 *
 *   [inject-error]            an event arms the rule; the next request it matches fails
 *   event = "flush_to_disk"   the event that arms it (required)
 *   errno = "5"               error to report (default EIO)
 *   sector = "-1"             only requests touching this sector (default -1: any)
 *   once = "on"               disarm after one failure (default off)
 *   immediately = "off"       fail without first yielding to the event loop (default off)
 *   state = "1"               only while the state machine is in this state (default: any)
 *   iotype = "flush"          only these request types (default: all)
 *
 *   [set-state]
 *   event = "flush_to_disk"   on this event...
 *   state = "1"               ...while in this state (default: any)...
 *   new_state = "2"           ...move to this state. The machine starts in state 1.
 *
 * As in QEMU, an event that arms injection rules replaces the set of armed rules; armed rules persist across
 * events that arm none, and every request (of a matching type and sector) checks them. The events a raw medium
 * passes: `read_aio` before a read, `write_aio` and `pwritev` before a write, `pwritev_done` after it,
 * `flush_to_os` before a flush and `flush_to_disk` when something was written since the last successful flush.
 *
 * Breakpoints need the asynchronous path (`startIo`, the async engine): a request held there completes after
 * `resume`. The synchronous methods pass breakpoints by (they stay armed): a sync caller cannot be held.
 */
import { readFileSync } from "node:fs";
import { performSync } from "./engine.ts";
import { WrappedMedium } from "./wrapped.ts";
import {
  type BlockBackend,
  type IoCallback,
  IoError,
  type IoErrorCode,
  type IoOp,
  type MediumRequest,
} from "./types.ts";

/** QEMU 7.2's BlkdebugEvent names (qapi/block-core.json), every one accepted in a rule file. */
export const BLKDEBUG_EVENTS = [
  "l1_update",
  "l1_grow_alloc_table",
  "l1_grow_write_table",
  "l1_grow_activate_table",
  "l2_load",
  "l2_update",
  "l2_update_compressed",
  "l2_alloc_cow_read",
  "l2_alloc_write",
  "read_aio",
  "read_backing_aio",
  "read_compressed",
  "write_aio",
  "write_compressed",
  "vmstate_load",
  "vmstate_save",
  "cow_read",
  "cow_write",
  "reftable_load",
  "reftable_grow",
  "reftable_update",
  "refblock_load",
  "refblock_update",
  "refblock_update_part",
  "refblock_alloc",
  "refblock_alloc_hookup",
  "refblock_alloc_write",
  "refblock_alloc_write_blocks",
  "refblock_alloc_write_table",
  "refblock_alloc_switch_table",
  "cluster_alloc",
  "cluster_alloc_bytes",
  "cluster_free",
  "flush_to_os",
  "flush_to_disk",
  "pwritev_rmw_head",
  "pwritev_rmw_after_head",
  "pwritev_rmw_tail",
  "pwritev_rmw_after_tail",
  "pwritev",
  "pwritev_zero",
  "pwritev_done",
  "empty_image_prepare",
  "l1_shrink_write_table",
  "l1_shrink_free_l2_clusters",
  "cor_write",
  "cluster_alloc_space",
  "none",
] as const;
export type BlkdebugEvent = (typeof BLKDEBUG_EVENTS)[number];

/** QEMU's BlkdebugIOType names (`iotype =`). */
export const BLKDEBUG_IOTYPES = [
  "read",
  "write",
  "write-zeroes",
  "discard",
  "flush",
  "block-status",
] as const;
export type BlkdebugIoType = (typeof BLKDEBUG_IOTYPES)[number];

/** Linux errno values a rule may name, and how a device model sees them. */
const ERRNO: Readonly<Record<number, { code: IoErrorCode; reason: string }>> = {
  5: { code: "EIO", reason: "Input/output error" },
  22: { code: "EINVAL", reason: "Invalid argument" },
  28: { code: "ENOSPC", reason: "No space left on device" },
  30: { code: "EROFS", reason: "Read-only file system" },
  34: { code: "ERANGE", reason: "Numerical result out of range" },
  95: { code: "ENOTSUP", reason: "Operation not supported" },
};

/** strerror() of the errno behind an I/O error code, as QEMU's BLOCK_IO_ERROR `reason` says it. */
export function ioErrorReason(code: IoErrorCode): string {
  for (const e of Object.values(ERRNO)) if (e.code === code) return e.reason;
  return "Input/output error";
}

export interface InjectErrorRule {
  readonly kind: "inject-error";
  readonly event: BlkdebugEvent;
  /** Linux errno (default 5, EIO). */
  readonly errno: number;
  /** Sector the request must touch, or -1 for any. */
  readonly sector: number;
  readonly once: boolean;
  readonly immediately: boolean;
  /** State the machine must be in, or 0 for any. */
  readonly state: number;
  /** Request types the rule fails; empty for all. */
  readonly iotypes: readonly BlkdebugIoType[];
}

export interface SetStateRule {
  readonly kind: "set-state";
  readonly event: BlkdebugEvent;
  /** State the machine must be in, or 0 for any. */
  readonly state: number;
  readonly newState: number;
}

export type BlkdebugRule = InjectErrorRule | SetStateRule;

/** A rule file (or a breakpoint request) QEMU would refuse. */
export class BlkdebugConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlkdebugConfigError";
  }
}

/** A qemu-io breakpoint command that failed, with the errno QEMU's would report. */
export class BlkdebugBreakError extends Error {
  constructor(
    message: string,
    readonly errno: "ENOENT" | "EINVAL",
  ) {
    super(message);
    this.name = "BlkdebugBreakError";
  }
}

const isEvent = (s: string): s is BlkdebugEvent => (BLKDEBUG_EVENTS as readonly string[]).includes(s);

/** QemuOpts' boolean parser: on/off, yes/no, true/false. */
function parseBool(v: string, key: string): boolean {
  if (v === "on" || v === "yes" || v === "true") return true;
  if (v === "off" || v === "no" || v === "false") return false;
  throw new BlkdebugConfigError(`Parameter '${key}' expects 'on' or 'off'`);
}

function parseInt10(v: string, key: string): number {
  if (!/^-?[0-9]+$/.test(v)) throw new BlkdebugConfigError(`Parameter '${key}' expects a number`);
  return Number(v);
}

/**
 * Parse a blkdebug rule file (QEMU's qemu_config_parse: `[group]` lines, `key = "value"` lines, `#` comments).
 * `source` names the file in messages.
 */
export function parseBlkdebugConfig(text: string, source = "blkdebug config"): BlkdebugRule[] {
  const groups: { name: string; line: number; keys: Map<string, string> }[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const g = /^\[([^\]]+)\]$/.exec(line);
    if (g) {
      groups.push({ name: g[1]!, line: i + 1, keys: new Map() });
      return;
    }
    const kv = /^([a-zA-Z0-9_-]+)\s*=\s*"(.*)"$/.exec(line);
    if (!kv) throw new BlkdebugConfigError(`${source}:${i + 1}: parse error`);
    const cur = groups[groups.length - 1];
    if (!cur) throw new BlkdebugConfigError(`${source}:${i + 1}: no group defined`);
    cur.keys.set(kv[1]!, kv[2]!);
  });
  const rules: BlkdebugRule[] = [];
  for (const g of groups) {
    const where = `${source}:${g.line}`;
    const allowed =
      g.name === "inject-error"
        ? ["event", "state", "iotype", "errno", "sector", "once", "immediately"]
        : g.name === "set-state"
          ? ["event", "state", "new_state"]
          : null;
    if (!allowed) throw new BlkdebugConfigError(`${where}: There is no option group '${g.name}'`);
    for (const k of g.keys.keys())
      if (!allowed.includes(k)) throw new BlkdebugConfigError(`${where}: Invalid parameter '${k}'`);
    const event = g.keys.get("event");
    if (event === undefined) throw new BlkdebugConfigError(`${where}: Missing event name for rule`);
    if (!isEvent(event)) throw new BlkdebugConfigError(`${where}: Invalid event name "${event}"`);
    const state = g.keys.has("state") ? parseInt10(g.keys.get("state")!, "state") : 0;
    if (g.name === "set-state") {
      const ns = g.keys.get("new_state");
      rules.push({
        kind: "set-state",
        event,
        state,
        newState: ns === undefined ? 0 : parseInt10(ns, "new_state"),
      });
      continue;
    }
    const iotype = g.keys.get("iotype");
    let iotypes: BlkdebugIoType[] = [];
    if (iotype !== undefined) {
      if (!(BLKDEBUG_IOTYPES as readonly string[]).includes(iotype))
        throw new BlkdebugConfigError(`${where}: Invalid I/O type "${iotype}"`);
      iotypes = [iotype as BlkdebugIoType];
    }
    rules.push({
      kind: "inject-error",
      event,
      state,
      iotypes,
      errno: g.keys.has("errno") ? parseInt10(g.keys.get("errno")!, "errno") : 5,
      sector: g.keys.has("sector") ? parseInt10(g.keys.get("sector")!, "sector") : -1,
      once: g.keys.has("once") ? parseBool(g.keys.get("once")!, "once") : false,
      immediately: g.keys.has("immediately") ? parseBool(g.keys.get("immediately")!, "immediately") : false,
    });
  }
  return rules;
}

/** Read and parse a rule file. */
export function readBlkdebugConfig(path: string): BlkdebugRule[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new BlkdebugConfigError(
      `Could not read blkdebug config file: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    );
  }
  return parseBlkdebugConfig(text, path);
}

/** `blkdebug:[CONF]:FILE`, as QEMU's blkdebug_parse_filename splits it (CONF ends at the first colon). */
export function parseBlkdebugFilename(spec: string): { config: string; image: string } | null {
  if (!spec.startsWith("blkdebug:")) return null;
  const rest = spec.slice("blkdebug:".length);
  const colon = rest.indexOf(":");
  if (colon < 0) throw new BlkdebugConfigError("Invalid filename format");
  return { config: rest.slice(0, colon), image: rest.slice(colon + 1) };
}

const IOTYPE_OF: Record<IoOp, BlkdebugIoType> = {
  read: "read",
  write: "write",
  flush: "flush",
  discard: "discard",
};

interface Breakpoint {
  readonly event: BlkdebugEvent;
  readonly tag: string;
}

interface Suspended {
  readonly tag: string;
  readonly go: () => void;
}

const NO_BUFFERS: readonly Uint8Array[] = [];

export class BlkdebugBackend extends WrappedMedium implements BlockBackend {
  /** The state machine (QEMU starts it at 1). */
  state = 1;
  private rules: BlkdebugRule[];
  /** Injection rules armed by the last event that armed any. */
  private active: InjectErrorRule[] = [];
  private breakpoints: Breakpoint[] = [];
  private suspended: Suspended[] = [];
  /** Written since the last successful flush (QEMU's write_gen != flushed_gen: flush_to_disk fires). */
  private dirty = false;
  /** Errors injected so far. */
  injected = 0;

  constructor(inner: BlockBackend, rules: readonly BlkdebugRule[] = []) {
    super(inner);
    this.rules = [...rules];
  }

  get describe(): string {
    return `blkdebug(${this.inner.describe})`;
  }
  get identity(): string | undefined {
    return this.inner.identity;
  }

  /** How many requests are held at a breakpoint. */
  get heldCount(): number {
    return this.suspended.length;
  }

  /** Tags of the requests held at a breakpoint, oldest first. */
  get heldTags(): readonly string[] {
    return this.suspended.map((s) => s.tag);
  }

  /** qemu-io `break EVENT TAG`: hold the next request that passes EVENT. */
  breakpoint(event: string, tag: string): void {
    if (!isEvent(event)) throw new BlkdebugBreakError(`Invalid event name "${event}"`, "EINVAL");
    this.breakpoints.push({ event, tag });
  }

  /** qemu-io `resume TAG`: let the request held under TAG go on. */
  resume(tag: string): void {
    const i = this.suspended.findIndex((s) => s.tag === tag);
    if (i < 0) throw new BlkdebugBreakError(`no request suspended under tag ${tag}`, "ENOENT");
    const [s] = this.suspended.splice(i, 1);
    setImmediate(s!.go);
  }

  /** qemu-io `remove_break TAG`: drop the breakpoints under TAG (held requests stay held). */
  removeBreak(tag: string): void {
    const before = this.breakpoints.length;
    this.breakpoints = this.breakpoints.filter((b) => b.tag !== tag);
    if (this.breakpoints.length === before)
      throw new BlkdebugBreakError(`no breakpoint with tag ${tag}`, "ENOENT");
  }

  /** Drop every breakpoint and let every held request go on (the machine is stopping). */
  releaseAll(): void {
    this.breakpoints = [];
    const held = this.suspended;
    this.suspended = [];
    for (const s of held) setImmediate(s.go);
  }

  // ---- the events and the state machine ----

  /**
   * The block layer passed `event`: set-state and injection rules of the current state take effect; a
   * breakpoint on it holds the request (returns the breakpoint's tag) when `canHold`.
   */
  private passEvent(event: BlkdebugEvent, canHold: boolean): string | null {
    let newState = this.state;
    let armed: InjectErrorRule[] | null = null;
    for (const r of this.rules) {
      if (r.event !== event || (r.state !== 0 && r.state !== this.state)) continue;
      if (r.kind === "set-state") newState = r.newState;
      else (armed ??= []).unshift(r);
    }
    if (armed) this.active = armed;
    let tag: string | null = null;
    if (canHold) {
      const i = this.breakpoints.findIndex((b) => b.event === event);
      if (i >= 0) {
        tag = this.breakpoints[i]!.tag;
        this.breakpoints.splice(i, 1); // a breakpoint holds one request (QEMU removes the rule when it fires)
      }
    }
    this.state = newState;
    return tag;
  }

  /** QEMU's rule_check: the armed rule this request trips, if any (a `once` rule is then removed). */
  private check(req: MediumRequest): InjectErrorRule | null {
    const type = IOTYPE_OF[req.op];
    let count = 0;
    if (req.op === "discard") count = req.count;
    else for (const b of req.bufs) count += b.length / this.sectorSize;
    const rule = this.active.find(
      (r) =>
        (r.sector === -1 || (count > 0 && r.sector >= req.sector && r.sector < req.sector + count)) &&
        (r.iotypes.length === 0 || r.iotypes.includes(type)),
    );
    if (!rule || rule.errno === 0) return null;
    if (rule.once) {
      this.active = this.active.filter((r) => r !== rule);
      this.rules = this.rules.filter((r) => r !== rule);
    }
    this.injected++;
    return rule;
  }

  private failure(req: MediumRequest, rule: InjectErrorRule): IoError {
    const e = ERRNO[rule.errno] ?? { code: "EIO" as const, reason: `errno ${rule.errno}` };
    return new IoError(e.code, `${e.reason} (blkdebug, ${req.op} at sector ${req.sector})`, req.sector);
  }

  /** The events a request passes before it reaches the medium. */
  private eventsBefore(op: IoOp): BlkdebugEvent[] {
    switch (op) {
      case "read":
        return ["read_aio"];
      case "write":
        return ["write_aio", "pwritev"];
      case "flush":
        // QEMU's bdrv_co_flush: flush_to_os always; flush_to_disk only when something was written since the
        // last flush, and never with cache=unsafe (BDRV_O_NO_FLUSH), whose flushes stop at the OS.
        return this.dirty && !this.inner.noFlush ? ["flush_to_os", "flush_to_disk"] : ["flush_to_os"];
      case "discard":
        return [];
    }
  }

  /** The request went through: bookkeeping and the events after it. */
  private after(req: MediumRequest, err: IoError | undefined): void {
    if (err) return;
    if (req.op === "write" || req.op === "discard") this.dirty = true;
    if (req.op === "write") this.passEvent("pwritev_done", false);
    if (req.op === "flush") this.dirty = false;
  }

  // ---- sync I/O ----

  private syncIo(req: MediumRequest): void {
    for (const ev of this.eventsBefore(req.op)) this.passEvent(ev, false);
    const rule = this.check(req);
    if (rule) throw this.failure(req, rule);
    const err = performSync(this.inner, req);
    this.after(req, err);
    if (err) throw err;
  }

  override read(sector: number, bufs: readonly Uint8Array[]): void {
    this.syncIo({ op: "read", sector, count: 0, bufs });
  }
  override write(sector: number, bufs: readonly Uint8Array[]): void {
    this.syncIo({ op: "write", sector, count: 0, bufs });
  }
  override flush(): void {
    this.syncIo({ op: "flush", sector: 0, count: 0, bufs: NO_BUFFERS });
  }
  override discard(sector: number, count: number): void {
    this.syncIo({ op: "discard", sector, count, bufs: NO_BUFFERS });
  }

  // ---- asynchronous submission: events one after the other, each a possible breakpoint ----

  startIo(req: MediumRequest, done: IoCallback): void {
    const events = this.eventsBefore(req.op);
    let i = 0;
    const step = (): void => {
      while (i < events.length) {
        const tag = this.passEvent(events[i++]!, true);
        if (tag !== null) {
          this.suspended.push({ tag, go: step });
          return;
        }
      }
      const rule = this.check(req);
      if (rule) {
        const err = this.failure(req, rule);
        // `immediately` fails before the coroutine yields; otherwise after one turn of the event loop.
        if (rule.immediately) void Promise.resolve().then(() => done(err));
        else setImmediate(() => done(err));
        return;
      }
      const finish = (err: IoError | undefined): void => {
        this.after(req, err);
        done(err);
      };
      if (this.inner.startIo) this.inner.startIo(req, finish);
      else setImmediate(() => finish(performSync(this.inner, req)));
    };
    // Never complete inside startIo: the first step runs from the event loop.
    setImmediate(step);
  }
}
