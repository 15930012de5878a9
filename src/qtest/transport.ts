/**
 * Byte transports for the qtest server: a pair of streams (stdin/stdout), a listening unix socket (one client
 * at a time, the next one queued), or an outgoing connection to a socket the client listens on (what QEMU's
 * `-qtest unix:PATH` does for libqtest).
 */

import { lstatSync, unlinkSync } from "node:fs";
import { type Server, type Socket, connect, createServer } from "node:net";
import type { Readable, Writable } from "node:stream";
import { QTEST_CHUNK, type QtestServer } from "./server.ts";
import { SocketPoller, pollWindowUs, pollableFd, writeDirect } from "./socket-poll.ts";

export interface ServeOptions {
  /**
   * When the input is a socket or a pipe (a client's socket; stdin from a test driver): after each batch of
   * replies, poll it this many microseconds for the client's next command before waiting in the event loop (see
   * socket-poll.ts). Default `XENIDE_QTEST_POLL_US` or 150; 0 turns it off. Terminals and files are never polled.
   */
  pollUs?: number;
}

/**
 * Serve one client on `input`/`output` until the input ends. Each input chunk is cut into pieces of at most
 * QTEST_CHUNK bytes, run back to back; asynchronous device work settles between pieces, as between QEMU
 * main-loop dispatches, whenever the server has some pending (input waits meanwhile). The replies to one input
 * chunk leave in one write.
 */
export function serveStream(
  server: QtestServer,
  input: Readable,
  output: Writable,
  opts: ServeOptions = {},
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // A socket or a pipe is read and written by its descriptor where that saves time (stdin and stdout are two).
    const inFd = pollableFd(input);
    const outFd = (output as unknown) === input ? inFd : pollableFd(output);
    const poller = inFd >= 0 ? new SocketPoller(inFd, opts.pollUs ?? pollWindowUs()) : null;
    const send =
      outFd >= 0
        ? (s: string) => writeDirect(output, outFd, s)
        : (s: string) => void output.write(s, "latin1");
    let out = "";
    let running = false;
    const flush = (): void => {
      if (out.length > 0) {
        const s = out;
        out = "";
        send(s);
      }
    };
    // Output made while a chunk runs is collected; anything later (an IRQ from a completion) leaves at once.
    server.open((s) => {
      if (running) out += s;
      else send(s);
    });
    const queue: string[] = [];
    let chunk = "";
    let at = 0;
    let settling = false;
    let ended = false;
    let done = false;
    const finish = (e?: unknown): void => {
      if (done) return;
      done = true;
      input.off("data", onData);
      input.off("end", onEnd);
      input.off("close", onEnd);
      input.off("error", finish);
      try {
        flush();
      } finally {
        server.close();
      }
      if (e === undefined) resolve();
      else reject(e);
    };
    const settle = (): void => {
      settling = true;
      input.pause();
      server.settle().then(() => {
        settling = false;
        if (done) return;
        input.resume();
        pump();
      }, finish);
    };
    const pump = (): void => {
      running = true;
      try {
        for (;;) {
          if (at >= chunk.length) {
            if (server.waiting) {
              // Lines behind a reply that waited for a drain run now, before any newer input.
              server.feed("");
              if (server.busy()) {
                settle();
                break;
              }
              continue;
            }
            const next = queue.shift();
            if (next === undefined) break;
            chunk = next;
            at = 0;
          }
          const end = Math.min(at + QTEST_CHUNK, chunk.length);
          server.feed(at === 0 && end === chunk.length ? chunk : chunk.slice(at, end));
          at = end;
          if (server.busy()) {
            settle();
            break;
          }
        }
        running = false;
        flush();
      } catch (e) {
        running = false;
        finish(e);
        return;
      }
      if (ended && !settling) finish();
    };
    const onData = (d: string): void => {
      queue.push(d);
      if (settling) return;
      pump();
      // The client's next command usually follows its reply within microseconds: take it here, without a
      // trip through the event loop, for as long as it keeps coming within the poll window.
      if (poller === null) return;
      while (!settling && !done && !ended) {
        const next = poller.poll();
        if (next === null) break;
        queue.push(next);
        pump();
      }
    };
    // A socket destroyed without an error closes without "end": the input is over all the same. What was
    // already received still runs (its replies may still reach a half-closed peer).
    const onEnd = (): void => {
      if (ended) return;
      ended = true;
      if (!settling) pump();
    };
    input.setEncoding("latin1");
    input.on("data", onData);
    input.on("end", onEnd);
    input.on("close", onEnd);
    input.on("error", finish);
  });
}

/** Something other than a socket is at the path `--socket` names: it is left alone. */
export class SocketPathError extends Error {
  constructor(readonly path: string) {
    super(`${path} exists and is not a socket; choose another path (only a stale socket is replaced)`);
    this.name = "SocketPathError";
  }
}

/**
 * Whether a socket left by an earlier run is at `path` (true: it may be replaced; false: nothing is there).
 * Anything else at the path is refused with `SocketPathError`.
 */
export function staleSocketAt(path: string): boolean {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return false;
  }
  if (!st.isSocket()) throw new SocketPathError(path);
  return true;
}

/**
 * Listen on a unix socket at `path` and serve clients one after another. Resolves once listening. A socket
 * left at the path by an earlier run is replaced; anything else there is refused (`SocketPathError`).
 */
export async function listenUnix(server: QtestServer, path: string): Promise<Server> {
  if (staleSocketAt(path)) unlinkSync(path);
  let queue = Promise.resolve();
  const srv = createServer((sock: Socket) => {
    queue = queue.then(() => serveSocket(server, sock)).catch(() => {});
  });
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(path, () => {
      srv.off("error", reject);
      resolve();
    });
  });
  return srv;
}

/** Connect to a unix socket the client listens on and serve it until it closes. */
export async function connectUnix(server: QtestServer, path: string): Promise<void> {
  const sock = connect(path);
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  await serveSocket(server, sock);
}

async function serveSocket(server: QtestServer, sock: Socket): Promise<void> {
  sock.on("error", () => sock.destroy());
  try {
    await serveStream(server, sock, sock);
  } finally {
    sock.end();
  }
}
