/**
 * The QEMU Machine Protocol as QEMU 7.2 speaks it on a monitor in control mode (docs/interop/qmp-spec.txt):
 * a greeting, capabilities negotiation, then one JSON object per command (`execute`, `arguments`, `id`) and
 * one reply per command (`return` or `error` with `class` and `desc`, the command's `id` echoed), and
 * asynchronous events (`event`, `data`, `timestamp`). Input is split into objects by bracket depth, as
 * QEMU's JSON streamer does, so neither newlines nor single requests per write are required; strings may be
 * single-quoted, as QEMU's parser accepts.
 *
 * The commands themselves are the host's (`QmpHost`): this module only frames, parses and shapes replies.
 */

import type { Readable, Writable } from "node:stream";

/** QEMU's QMP error classes. */
export type QmpErrorClass = "GenericError" | "CommandNotFound" | "DeviceNotFound";

/** A command failed: its reply is an `error` object of this class. */
export class QmpError extends Error {
  constructor(
    readonly errorClass: QmpErrorClass,
    message: string,
  ) {
    super(message);
    this.name = "QmpError";
  }
}

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

/** What a monitor serves: the commands (after negotiation) and the version it announces. */
export interface QmpHost {
  readonly version: { major: number; minor: number; micro: number; package: string };
  /** Run a command; returns its `return` value, or throws `QmpError`. May be asynchronous. */
  execute(name: string, args: JsonObject): Json | Promise<Json>;
  /** Run after the reply of `name` has been sent (QEMU's `quit` exits only once it has answered). */
  afterReply?(name: string): void;
}

/**
 * Splits a byte stream into top-level JSON texts by bracket depth, strings and escapes respected. The unfinished
 * rest is rescanned with the next input (QMP requests are small).
 */
export class JsonSplitter {
  private buf = "";

  /** Feed text; returns the complete top-level texts it finished. */
  push(text: string): string[] {
    const b = (this.buf += text);
    const out: string[] = [];
    let depth = 0;
    let quote: string | null = null;
    let escaped = false;
    let start = -1;
    let consumed = 0;
    for (let i = 0; i < b.length; i++) {
      const c = b[i]!;
      if (quote !== null) {
        if (escaped) escaped = false;
        else if (c === "\\") escaped = true;
        else if (c === quote) {
          quote = null;
          if (depth === 0) {
            out.push(b.slice(start, i + 1)); // a top-level string is still a (bad) request
            consumed = i + 1;
          }
        }
        continue;
      }
      if (c === '"' || c === "'") {
        quote = c;
        if (depth === 0) start = i;
      } else if (c === "{" || c === "[") {
        if (depth++ === 0) start = i;
      } else if (c === "}" || c === "]") {
        if (depth === 0) {
          out.push(c); // a stray closer: reported as a parse error
          consumed = i + 1;
        } else if (--depth === 0) {
          out.push(b.slice(start, i + 1));
          consumed = i + 1;
        }
      } else if (depth === 0) {
        if (/\s/.test(c)) consumed = i + 1;
        else {
          // A scalar at top level: up to the next whitespace or bracket, once that has arrived.
          let j = i;
          while (j < b.length && !/[\s{}[\]'"]/.test(b[j]!)) j++;
          if (j === b.length) break;
          out.push(b.slice(i, j));
          consumed = j;
          i = j - 1;
        }
      }
    }
    this.buf = b.slice(consumed);
    return out;
  }
}

/** Parse one JSON text, accepting QEMU's single-quoted strings. */
export function parseQmpJson(text: string): Json {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const fail = (): never => {
    throw new SyntaxError(`JSON parse error at offset ${i}`);
  };
  const value = (): Json => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: JsonObject = {};
      ws();
      if (text[i] === "}") {
        i++;
        return o;
      }
      for (;;) {
        ws();
        const k = value();
        if (typeof k !== "string") fail();
        ws();
        if (text[i++] !== ":") fail();
        o[k as string] = value();
        ws();
        const sep = text[i++];
        if (sep === "}") return o;
        if (sep !== ",") fail();
      }
    }
    if (c === "[") {
      i++;
      const a: Json[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return a;
      }
      for (;;) {
        a.push(value());
        ws();
        const sep = text[i++];
        if (sep === "]") return a;
        if (sep !== ",") fail();
      }
    }
    if (c === '"' || c === "'") {
      i++;
      let s = "";
      for (;;) {
        if (i >= text.length) fail();
        const ch = text[i++]!;
        if (ch === c) return s;
        if (ch !== "\\") {
          s += ch;
          continue;
        }
        const e = text[i++];
        const simple: Record<string, string> = {
          '"': '"',
          "'": "'",
          "\\": "\\",
          "/": "/",
          b: "\b",
          f: "\f",
          n: "\n",
          r: "\r",
          t: "\t",
        };
        if (e !== undefined && e in simple) s += simple[e];
        else if (e === "u") {
          const hex = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail();
          s += String.fromCharCode(parseInt(hex, 16));
          i += 4;
        } else fail();
      }
    }
    const m = /^(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)/.exec(text.slice(i));
    if (!m) fail();
    i += m![0].length;
    return m![0] === "true" ? true : m![0] === "false" ? false : m![0] === "null" ? null : Number(m![0]);
  };
  const v = value();
  ws();
  if (i !== text.length) fail();
  return v;
}

/**
 * JSON as QEMU's QMP writes it (qobject_to_json): `{"key": value, ...}`, `[a, b]`, members in insertion order, so
 * that a reply reads the same as QEMU's, byte for byte, to whoever compares text.
 */
export function qmpJson(v: Json): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return v.length === 0 ? "[]" : `[${v.map(qmpJson).join(", ")}]`;
  const keys = Object.keys(v);
  if (keys.length === 0) return "{}";
  return `{${keys.map((k) => `${JSON.stringify(k)}: ${qmpJson(v[k]!)}`).join(", ")}}`;
}

/** The timestamp QEMU puts on events. */
function timestamp(): { seconds: number; microseconds: number } {
  const us = BigInt(Date.now()) * 1000n + ((process.hrtime.bigint() / 1000n) % 1000n);
  return { seconds: Number(us / 1000000n), microseconds: Number(us % 1000000n) };
}

function errorReply(cls: QmpErrorClass, desc: string, id: Json | undefined): JsonObject {
  const r: JsonObject = { error: { class: cls, desc } };
  if (id !== undefined) r.id = id;
  return r;
}

/**
 * One QMP monitor on a byte stream: greets, negotiates, serves commands in order (a command's reply is sent
 * before the next command runs), and sends events once negotiation is done.
 */
export class QmpMonitor {
  private negotiated = false;
  private readonly splitter = new JsonSplitter();
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly host: QmpHost,
    private readonly output: Writable,
  ) {}

  /** Send the greeting and serve `input` until it ends; resolves at its end. */
  serve(input: Readable): Promise<void> {
    const v = this.host.version;
    this.send({
      QMP: {
        version: { qemu: { micro: v.micro, minor: v.minor, major: v.major }, package: v.package },
        capabilities: ["oob"],
      },
    });
    input.setEncoding("utf8");
    return new Promise<void>((resolve) => {
      const done = (): void => {
        if (this.closed) return;
        this.closed = true;
        void this.queue.then(resolve);
      };
      input.on("data", (d: string) => {
        for (const text of this.splitter.push(d)) this.queue = this.queue.then(() => this.handle(text));
      });
      input.on("end", done);
      input.on("close", done);
      input.on("error", done);
    });
  }

  /** Send an event (dropped before negotiation, as QEMU does). */
  event(name: string, data?: JsonObject): void {
    if (!this.negotiated || this.closed) return;
    const e: JsonObject = { timestamp: timestamp(), event: name };
    if (data !== undefined) e.data = data;
    this.send(e);
  }

  private send(obj: JsonObject): void {
    if (this.output.writable) this.output.write(qmpJson(obj) + "\r\n");
  }

  private async handle(text: string): Promise<void> {
    let req: Json;
    try {
      req = parseQmpJson(text);
    } catch (e) {
      this.send(errorReply("GenericError", (e as Error).message, undefined));
      return;
    }
    if (req === null || typeof req !== "object" || Array.isArray(req)) {
      this.send(errorReply("GenericError", "QMP input must be a JSON object", undefined));
      return;
    }
    const id = req.id;
    const exec = req.execute ?? req.exec_oob;
    if (typeof exec !== "string") {
      const bad = Object.keys(req).find((k) => !["execute", "exec-oob", "arguments", "id"].includes(k));
      this.send(
        errorReply(
          "GenericError",
          bad ? `QMP input member '${bad}' is unexpected` : "QMP input lacks member 'execute'",
          id,
        ),
      );
      return;
    }
    const args = req.arguments ?? {};
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      this.send(errorReply("GenericError", "QMP input member 'arguments' must be an object", id));
      return;
    }
    if (exec === "qmp_capabilities") {
      if (this.negotiated) {
        this.send(
          errorReply("CommandNotFound", "Capabilities negotiation is already complete, command ignored", id),
        );
        return;
      }
      this.negotiated = true;
      this.send(id === undefined ? { return: {} } : { return: {}, id });
      return;
    }
    if (!this.negotiated) {
      this.send(
        errorReply("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id),
      );
      return;
    }
    try {
      const ret = await this.host.execute(exec, args);
      this.send(id === undefined ? { return: ret } : { return: ret, id });
    } catch (e) {
      if (e instanceof QmpError) this.send(errorReply(e.errorClass, e.message, id));
      else this.send(errorReply("GenericError", (e as Error).message ?? String(e), id));
      return;
    }
    this.host.afterReply?.(exec);
  }
}
