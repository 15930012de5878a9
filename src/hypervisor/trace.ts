/**
 * Optional event trace, as JSON lines: every exit (the decoded ioreq), IRQ level change, event-channel
 * notification and ring event. Off by default; when off the hypervisor holds `null` and pays one null check.
 *
 * Line format (one JSON object per line, `seq` first):
 * - Numbers stay numbers: `port`, `addr` and `gpa` are what programs reading a trace compare against. Next to
 *   each, the writer adds the same value as a hex string for people (`"port": 503, "portHex": "0x1f7"`;
 *   `addrHex` for MMIO addresses, `gpaHex` for string-I/O buffers). The hex field is derived from the number
 *   and never differs from it; an event-channel `port` is an event-channel number, not an I/O port, and gets
 *   no hex twin.
 * - `{"ev":"phase","phase":"transfer"}` marks where the command's set-up (PCI, probe, IDENTIFY, or the PV
 *   negotiation) ends and the measured transfer begins: every line before it is set-up, every line after it
 *   is counted in the command's cost summary, until a `{"ev":"phase","phase":"done"}` line if there is one.
 */

import { closeSync, createWriteStream, openSync, writeSync, type WriteStream } from "node:fs";

export type TraceEvent =
  | {
      ev: "ioreq";
      vcpu: number;
      type: number;
      port: number;
      size: number;
      dir: "in" | "out";
      value?: number;
      count: number;
      dataIsPtr: boolean;
      df: boolean;
      gpa?: number;
      device?: string;
    }
  | {
      /** An MMIO exit: an IOREQ_TYPE_COPY request at guest-physical `addr`. */
      ev: "mmio";
      vcpu: number;
      addr: number;
      size: number;
      dir: "in" | "out";
      value: number;
      device: string;
    }
  | { ev: "bufioreq"; port: number; size: number; value: number }
  | { ev: "irq"; line: number; level: 0 | 1 }
  | { ev: "evtchn"; from: number; port: number; to?: number }
  | { ev: "hypercall"; dom: number; op: string }
  | { ev: "ring"; ring: string; what: string; [k: string]: unknown }
  | { ev: "note"; text: string }
  | { ev: "phase"; phase: TracePhase; text?: string };

/**
 * Where a command is: `transfer` — set-up is over and the measured transfer starts; `done` — the measured
 * part is over (what follows is closing down). A trace with no phase line is all one phase.
 */
export type TracePhase = "transfer" | "done";

const hex = (n: number) => `0x${n.toString(16)}`;

/**
 * The object written for one event: `seq` first, then the event's fields in order, with a hex twin placed
 * right after each numeric I/O port or address (see the format notes at the top of this file).
 */
export function traceRecord(seq: number, e: TraceEvent): Record<string, unknown> {
  const out: Record<string, unknown> = { seq };
  const hexOf = e.ev === "ioreq" || e.ev === "bufioreq" ? ["port", "gpa"] : e.ev === "mmio" ? ["addr"] : [];
  for (const [k, v] of Object.entries(e)) {
    out[k] = v;
    if (typeof v === "number" && hexOf.includes(k)) out[`${k}Hex`] = hex(v);
  }
  return out;
}

export interface TraceSink {
  write(line: string): void;
  close?(): Promise<void>;
}

export class Tracer {
  /** Sequence number of the next event, so a trace can be diffed and cut. */
  private seq = 0;
  constructor(private readonly sink: TraceSink) {}

  emit(e: TraceEvent): void {
    this.sink.write(JSON.stringify(traceRecord(this.seq++, e)) + "\n");
  }

  /**
   * Mark a phase of the command in the trace: `tracer?.phase("transfer")` just before the measured transfer
   * (after set-up), `tracer?.phase("done")` after it.
   */
  phase(phase: TracePhase, text?: string): void {
    this.emit(text === undefined ? { ev: "phase", phase } : { ev: "phase", phase, text });
  }

  async close(): Promise<void> {
    await this.sink.close?.();
  }

  /** Trace to a file (created or truncated). */
  static toFile(path: string): Tracer {
    // Open now, so a path that cannot be written (a directory, a missing parent) fails here with its errno,
    // not later as an unhandled stream 'error' event; a later write error is reported by close().
    const fd = openSync(path, "w");
    try {
      // A file that opens but refuses writes (/proc/version, a full or failing device) fails here too: an
      // empty write reaches the file system's write handler.
      writeSync(fd, "");
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    const ws: WriteStream = createWriteStream(path, { fd });
    let failed: Error | null = null;
    ws.on("error", (e) => (failed ??= e));
    return new Tracer({
      write: (l) => void (failed ?? ws.write(l)),
      close: () =>
        new Promise<void>((res, rej) =>
          failed
            ? rej(failed)
            : ws.end((err?: Error | null) => ((err ?? failed) ? rej(err ?? failed) : res())),
        ),
    });
  }

  /** Trace into memory (tests, the qtest server's debugging). */
  static toArray(): { tracer: Tracer; lines: string[] } {
    const lines: string[] = [];
    return { tracer: new Tracer({ write: (l) => void lines.push(l) }), lines };
  }
}
