/**
 * QEMU's `-trace` option (trace/control.c in QEMU 7.2): `-trace [enable=]PATTERN`, `-trace events=FILE` (one
 * pattern per line, `#` comments, blank lines skipped), `-trace file=FILE`, in any combination; a pattern is a
 * glob (`*`, `?`), a leading `-` disables what it matches, and the options apply in command-line order.
 * `help` (or `?`) as a pattern lists the events and exits. The events are QEMU's IDE and Bus Master ones that
 * xenide emits (src/ide/qemu-trace.ts); trace output goes where QEMU's log backend sends it: the last `file=`,
 * else `-D`'s file, else stderr, one line per event: the name, a space, the text.
 */

import { readFileSync } from "node:fs";

import { QEMU_IDE_TRACE_EVENTS, type QemuIdeTraceEvent } from "../ide/qemu-trace.ts";
import { parseOpts, QemuUsageError } from "./opts.ts";
import { strerror } from "./strerror.ts";

/**
 * QEMU 7.2's other hw/ide trace events, emitted from inside its block layer, DMA callbacks and ATAPI code: named
 * exactly, each gets a warning that xenide does not emit it (not QEMU's "does not exist").
 */
const QEMU_IDE_EVENTS_NOT_EMITTED = new Set([
  "ide_cancel_dma_sync_buffered",
  "ide_cancel_dma_sync_remaining",
  "ide_sector_read",
  "ide_sector_write",
  "ide_reset",
  "ide_bus_reset_aio",
  "ide_dma_cb",
  "bmdma_reset",
  "cd_read_sector_sync",
  "cd_read_sector_cb",
  "cd_read_sector",
  "ide_atapi_cmd_error",
  "ide_atapi_cmd_reply_end",
  "ide_atapi_cmd_reply_end_eot",
  "ide_atapi_cmd_reply_end_bcl",
  "ide_atapi_cmd_reply_end_new",
  "ide_atapi_cmd_check_status",
  "ide_atapi_cmd_read",
  "ide_atapi_cmd",
  "ide_atapi_cmd_read_dma_cb_aio",
  "ide_atapi_cmd_packet",
]);

export interface TracePlan {
  /** The events enabled once every -trace has applied. */
  readonly enabled: ReadonlySet<QemuIdeTraceEvent>;
  /** The file= of the last -trace that named one (QEMU's trace_opts_file), or null. */
  readonly file: string | null;
  /** `help` was asked: list the events and exit. */
  readonly help: boolean;
}

/** QEMU's trace_event_is_pattern: a glob character anywhere. */
function isPattern(s: string): boolean {
  return s.includes("*") || s.includes("?");
}

/** g_pattern_match_simple: `*` any run, `?` any one character, the rest literal. */
function globRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

/** Applies -trace options in order, as trace_opt_parse does. */
export class TraceOptions {
  private readonly enabled = new Set<QemuIdeTraceEvent>();
  private file: string | null = null;
  private help = false;

  constructor(private readonly warnings: string[]) {}

  /** One `-trace ARG`. */
  add(option: string, arg: string): void {
    const where = `${option} ${arg}`;
    const o = parseOpts(option, arg, "enable").only(["enable", "events", "file"]);
    const enable = o.get("enable");
    if (enable !== undefined) this.line(enable, where);
    const events = o.get("events");
    if (events !== undefined) this.eventsFile(events);
    // trace_opt_parse replaces the file with each -trace's, even one without file= (then none).
    this.file = o.get("file") ?? null;
  }

  plan(): TracePlan {
    return { enabled: new Set(this.enabled), file: this.file, help: this.help };
  }

  /** trace_enable_events: one pattern (or `help`). */
  private line(text: string, where: string): void {
    if (text === "help" || text === "?") {
      this.help = true;
      return;
    }
    const enable = !text.startsWith("-");
    const name = enable ? text : text.slice(1);
    const pattern = isPattern(name);
    const re = pattern ? globRegExp(name) : null;
    let matched = false;
    for (const ev of QEMU_IDE_TRACE_EVENTS) {
      if (re ? !re.test(ev) : ev !== name) continue;
      matched = true;
      if (enable) this.enabled.add(ev);
      else this.enabled.delete(ev);
    }
    if (matched || pattern) return;
    this.warnings.push(
      QEMU_IDE_EVENTS_NOT_EMITTED.has(name)
        ? `${where}: trace event '${name}' is not emitted by xenide (-trace help lists the ones it emits)`
        : `${where}: trace event '${name}' does not exist`,
    );
  }

  /** trace_init_events: a file of patterns; one that cannot be read ends the start, as in QEMU. */
  private eventsFile(path: string): void {
    let text: string;
    try {
      text = readFileSync(path, "latin1");
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new QemuUsageError(`${path}: ${strerror(err.code) ?? err.message}`);
    }
    const lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    lines.forEach((raw, i) => {
      // fgets keeps the newline; QEMU skips a line of one character and cuts the last one off the others,
      // whatever it is (so a last line without a newline loses its last character, as in QEMU).
      const read = i < lines.length - 1 || text.endsWith("\n") ? `${raw}\n` : raw;
      if (read.length <= 1) return;
      const line = read.slice(0, -1);
      if (line.startsWith("#")) return;
      this.line(line, `${path}:${i + 1}`);
    });
  }
}
