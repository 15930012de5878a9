/**
 * Optional event trace, as JSON lines: every exit (the decoded ioreq), IRQ level change, event-channel
 * notification and ring event. Off by default; when off the hypervisor holds `null` and pays one null check.
 */

import { createWriteStream, type WriteStream } from "node:fs";

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
    const ws: WriteStream = createWriteStream(path);
    return new Tracer({
      write: (l) => void ws.write(l),
      close: () => new Promise<void>((res, rej) => ws.end((err?: Error | null) => (err ? rej(err) : res()))),
    });
  }

  /** Trace into memory (tests, the qtest server's debugging). */
  static toArray(): { tracer: Tracer; lines: string[] } {
    const lines: string[] = [];
    return { tracer: new Tracer({ write: (l) => void lines.push(l) }), lines };
  }
}
