/**
 * xenstored on a unix socket (the `XENSTORED_PATH` / /run/xenstored/socket transport libxenstore uses): each
 * client is one `XenstoredConnection`. Clients of the socket are the toolstack in dom0, so they act for dom0
 * unless the socket was opened for another domain (a way to run Xen's own tools as a guest would see the
 * store). A client that breaks the framing (a header announcing more than XENSTORE_PAYLOAD_MAX bytes) is
 * disconnected; every other client goes on.
 */

import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import { Server, Socket, connect as netConnect, createServer } from "node:net";
import type { Xenstored } from "./xenstored.ts";
import { XsMessageReader, XsProtocolError, XsType } from "./xs-wire.ts";

export class XenstoredSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "XenstoredSocketError";
  }
}

export interface XenstoredSocketOptions {
  /** The domain the socket's clients act for (default 0, the toolstack). */
  dom?: number;
  /** Called when a client is cut off for a protocol violation. */
  onProtocolError?: (err: XsProtocolError) => void;
}

/** Is something listening on the unix socket `path`? */
function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export class XenstoredSocketServer {
  private readonly sockets = new Set<Socket>();
  private closing: Promise<void> | null = null;

  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  /**
   * Listen on `path`. A stale socket left by a dead server is replaced; anything else at `path` (a file, a
   * live server) is refused, so no user file is ever removed.
   */
  static async listen(
    daemon: Xenstored,
    path: string,
    o: XenstoredSocketOptions = {},
  ): Promise<XenstoredSocketServer> {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st) {
      if (!st.isSocket()) throw new XenstoredSocketError(`${path} exists and is not a socket`);
      if (await probe(path)) throw new XenstoredSocketError(`${path} is in use by another server`);
      unlinkSync(path);
    }
    const dom = o.dom ?? 0;
    const server = createServer();
    const self = new XenstoredSocketServer(path, server);
    server.on("connection", (sock) => self.serve(daemon, dom, sock, o));
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) =>
        reject(new XenstoredSocketError(`cannot listen on ${path}: ${e.code ?? e.message}`)),
      );
      server.listen(path, () => resolve());
    });
    // Whoever connects acts as a domain (dom0 by default): only the owner may, as xenstored's socket is 0600.
    chmodSync(path, 0o600);
    return self;
  }

  private serve(daemon: Xenstored, dom: number, sock: Socket, o: XenstoredSocketOptions): void {
    this.sockets.add(sock);
    const reader = new XsMessageReader();
    const conn = daemon.connect(dom, (bytes) => {
      if (!sock.destroyed) sock.write(bytes);
    });
    sock.on("data", (chunk: Buffer) => {
      try {
        for (const m of reader.push(chunk)) {
          conn.handle(m);
          if (m.type === XsType.WATCH) this.watched();
        }
      } catch (e) {
        if (!(e instanceof XsProtocolError)) throw e;
        o.onProtocolError?.(e);
        conn.close();
        sock.destroy();
      }
    });
    sock.on("error", () => {
      /* a client that vanished: cleaned up on close */
    });
    sock.on("close", () => {
      conn.close();
      this.sockets.delete(sock);
    });
  }

  private watchSeen = false;
  private readonly watchWaiters: (() => void)[] = [];

  private watched(): void {
    this.watchSeen = true;
    for (const w of this.watchWaiters.splice(0)) w();
  }

  /** Resolves once a client has sent XS_WATCH (a watcher is in place before anything it wants to see happens). */
  firstWatch(): Promise<void> {
    if (this.watchSeen) return Promise.resolve();
    return new Promise((resolve) => this.watchWaiters.push(resolve));
  }

  /** Number of connected clients. */
  get clients(): number {
    return this.sockets.size;
  }

  /** Stop listening, disconnect every client and remove the socket file. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      for (const s of this.sockets) s.destroy();
      this.server.close(() => resolve());
    });
    return this.closing;
  }
}
