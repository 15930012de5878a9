/**
 * Optional event trace, as JSON lines: every exit (the decoded ioreq), IRQ level change, event-channel
 * notification and ring event. Off by default; when off the hypervisor holds `null` and pays one null check.
 */

import { createWriteStream, openSync, type WriteStream } from "node:fs";

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
  | { ev: "note"; text: string };

export interface TraceSink {
  write(line: string): void;
  close?(): Promise<void>;
}

export class Tracer {
  /** Sequence number of the next event, so a trace can be diffed and cut. */
  private seq = 0;
  constructor(private readonly sink: TraceSink) {}

  emit(e: TraceEvent): void {
    this.sink.write(JSON.stringify({ seq: this.seq++, ...e }) + "\n");
  }

  async close(): Promise<void> {
    await this.sink.close?.();
  }

  /** Trace to a file (created or truncated). */
  static toFile(path: string): Tracer {
    // Open now, so a path that cannot be written (a directory, a missing parent) fails here with its errno,
    // not later as an unhandled stream 'error' event; a later write error is reported by close().
    const fd = openSync(path, "w");
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
