/**
 * Byte transports for the qtest server: a pair of streams (stdin/stdout), a listening unix socket (one client
 * at a time, the next one queued), or an outgoing connection to a socket the client listens on (what QEMU's
 * `-qtest unix:PATH` does for libqtest).
 */

import { existsSync, unlinkSync } from "node:fs";
import { type Server, type Socket, connect, createServer } from "node:net";
import type { Readable, Writable } from "node:stream";
import { QTEST_CHUNK, type QtestServer } from "./server.ts";

/**
 * Serve one client on `input`/`output` until the input ends. Each input chunk is cut into pieces of at most
 * QTEST_CHUNK bytes; asynchronous device work settles between pieces, as between QEMU main-loop dispatches.
 */
export async function serveStream(server: QtestServer, input: Readable, output: Writable): Promise<void> {
  let buffered: string[] = [];
  const flush = (): void => {
    if (buffered.length) {
      output.write(buffered.join(""));
      buffered = [];
    }
  };
  server.open((s) => void buffered.push(s));
  try {
    input.setEncoding("latin1");
    for await (const chunk of input as AsyncIterable<string>) {
      for (let i = 0; i < chunk.length; i += QTEST_CHUNK) {
        server.feed(chunk.slice(i, i + QTEST_CHUNK));
        flush();
        await server.settle();
        flush();
      }
    }
  } finally {
    flush();
    server.close();
  }
}

/** Listen on a unix socket at `path` and serve clients one after another. Resolves once listening. */
export async function listenUnix(server: QtestServer, path: string): Promise<Server> {
  if (existsSync(path)) unlinkSync(path);
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
