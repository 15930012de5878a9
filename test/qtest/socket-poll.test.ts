import { spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  closeSync,
  constants,
  createReadStream,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { Socket, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";

import { Hypervisor } from "../../src/hypervisor/hypervisor.ts";
import { QtestClient } from "../../src/qtest/client.ts";
import { QtestServer } from "../../src/qtest/server.ts";
import {
  SocketPoller,
  pollWindowUs,
  pollableFd,
  socketFd,
  writeDirect,
} from "../../src/qtest/socket-poll.ts";
import { serveStream } from "../../src/qtest/transport.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A connected pair of unix sockets: `server` is the accepted end, `client` the connecting one. */
async function socketPair(): Promise<{ server: Socket; client: Socket; close: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), "xenide-poll-"));
  dirs.push(dir);
  const path = join(dir, "s.sock");
  const srv = createServer();
  srv.listen(path);
  await once(srv, "listening");
  const client = connect(path);
  const [server] = (await once(srv, "connection")) as [Socket];
  await once(client, "connect");
  return {
    server,
    client,
    close: () => {
      client.destroy();
      server.destroy();
      srv.close();
    },
  };
}

/**
 * A FIFO opened as a test driver's pipe to a child's stdin looks to Node: `reader` a stream on a libuv pipe
 * handle over a non-blocking descriptor (what process.stdin is when stdin is a pipe), `writer` the other end.
 */
function fifo(): { reader: Socket; writer: Socket; close: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "xenide-fifo-"));
  dirs.push(dir);
  const path = join(dir, "f");
  const r = spawnSync("mkfifo", [path]);
  if (r.status !== 0) throw new Error(`mkfifo: ${r.stderr}`);
  const rfd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const wfd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  const reader = new Socket({ fd: rfd, readable: true, writable: false });
  const writer = new Socket({ fd: wfd, readable: false, writable: true });
  return {
    reader,
    writer,
    close: () => {
      writer.destroy();
      reader.destroy();
    },
  };
}

describe("pollableFd", () => {
  it("polls sockets and pipes, never files or other streams (whose reads could block)", async () => {
    const p = await socketPair();
    const f = fifo();
    const dir = mkdtempSync(join(tmpdir(), "xenide-file-"));
    dirs.push(dir);
    writeFileSync(join(dir, "cmds"), "inb 0x1f7\n");
    const file = createReadStream(join(dir, "cmds"));
    await once(file, "open");
    try {
      expect(pollableFd(p.server)).toBe(socketFd(p.server));
      expect(pollableFd(f.reader)).toBe(socketFd(f.reader));
      expect(pollableFd(f.reader)).toBeGreaterThan(2);
      expect(pollableFd(file)).toBe(-1);
      expect(pollableFd({})).toBe(-1);
    } finally {
      file.destroy();
      f.close();
      p.close();
    }
  });
});

describe("socketFd", () => {
  it("finds the descriptor of a connected socket and none for other streams", async () => {
    const p = await socketPair();
    try {
      expect(socketFd(p.server)).toBeGreaterThan(2);
      expect(socketFd(p.client)).toBeGreaterThan(2);
      expect(socketFd({})).toBe(-1);
      expect(socketFd(null)).toBe(-1);
    } finally {
      p.close();
    }
  });
});

describe("pollWindowUs", () => {
  it("reads XENIDE_QTEST_POLL_US, 0 included, and falls back to the default on anything else", () => {
    expect(pollWindowUs({})).toBe(150);
    expect(pollWindowUs({ XENIDE_QTEST_POLL_US: "0" })).toBe(0);
    expect(pollWindowUs({ XENIDE_QTEST_POLL_US: "200" })).toBe(200);
    expect(pollWindowUs({ XENIDE_QTEST_POLL_US: "-3" })).toBe(150);
    expect(pollWindowUs({ XENIDE_QTEST_POLL_US: "soon" })).toBe(150);
  });
});

describe("SocketPoller", () => {
  // A client's socket, and stdin when a test driver starts the server with a pipe.
  it.each([
    [
      "a socket",
      async () => socketPair().then((p) => ({ reader: p.server, writer: p.client, close: p.close })),
    ],
    ["a pipe", async () => fifo()],
  ])("takes bytes already waiting on %s, which its stream then never delivers", async (_, open) => {
    const p = await open();
    try {
      const seen: string[] = [];
      p.reader.setEncoding("latin1");
      p.reader.on("data", (d: string) => seen.push(d));
      const poller = new SocketPoller(pollableFd(p.reader), 1000);
      // The client's write reaches the kernel before write() returns (nothing is queued on its stream).
      p.writer.write("inb 0x1f7\n");
      expect(poller.poll()).toBe("inb 0x1f7\n");
      expect(poller.hits).toBe(1);
      p.writer.write("after\n");
      await new Promise((r) => setTimeout(r, 50));
      expect(seen).toEqual(["after\n"]);
    } finally {
      p.close();
    }
  });

  it("gives up after its window and then skips 1, 3, 7... round trips while the client keeps missing it", async () => {
    const p = await socketPair();
    try {
      p.server.pause();
      const poller = new SocketPoller(socketFd(p.server), 200);
      const t0 = performance.now();
      expect(poller.poll()).toBeNull();
      expect(performance.now() - t0).toBeGreaterThanOrEqual(0.2);
      expect(poller.timeouts).toBe(1);
      // Skipped: returns at once, even with bytes waiting (the stream takes those).
      p.client.write("x");
      expect(poller.poll()).toBeNull();
      expect(poller.timeouts).toBe(1);
      expect(poller.poll()).toBe("x");
      // A hit resets the back-off: the next miss skips one round trip again, the one after three.
      expect(poller.poll()).toBeNull();
      expect(poller.poll()).toBeNull(); // skipped
      expect(poller.timeouts).toBe(2);
      expect(poller.poll()).toBeNull(); // a second miss in a row
      expect(poller.timeouts).toBe(3);
      for (let i = 0; i < 3; i++) expect(poller.poll()).toBeNull();
      expect(poller.timeouts).toBe(3);
      expect(poller.poll()).toBeNull();
      expect(poller.timeouts).toBe(4);
    } finally {
      p.close();
    }
  });

  it("delays its first read by 1 us more after an empty one and 1/8 us less after a full one, up to half the window", async () => {
    const p = await socketPair();
    try {
      p.server.pause();
      const poller = new SocketPoller(socketFd(p.server), 1000);
      expect(poller.delayUs).toBe(0);
      expect(poller.poll()).toBeNull(); // a miss: its first read found nothing
      expect(poller.delayUs).toBe(1);
      expect(poller.poll()).toBeNull(); // skipped: no read, the delay stays
      expect(poller.delayUs).toBe(1);
      p.client.write("inb 0x1f7\n");
      expect(poller.poll()).toBe("inb 0x1f7\n");
      expect(poller.delayUs).toBe(0.875);
      for (let i = 0; i < 10; i++) {
        p.client.write("x");
        expect(poller.poll()).toBe("x");
      }
      expect(poller.delayUs).toBe(0);

      // A 4 us window: the delay stops at 2 us however often the first read finds nothing.
      const short = new SocketPoller(socketFd(p.server), 4);
      for (let i = 0; i < 20; i++) expect(short.poll()).toBeNull();
      expect(short.timeouts).toBeGreaterThanOrEqual(3);
      expect(short.delayUs).toBe(2);

      // A client that keeps missing the window drives the delay up to its cap (30 us); the wait is spent
      // before the first read, which then finds what came meanwhile.
      const slow = new SocketPoller(socketFd(p.server), 200);
      for (let i = 0; i < 2000 && slow.delayUs < 30; i++) slow.poll();
      expect(slow.delayUs).toBe(30);
      for (let i = 0; i < 64 && slow.poll() === null; i++) p.client.write("y"); // out of the back-off
      p.client.write("z");
      const t0 = process.hrtime.bigint();
      expect(slow.poll()).toBe("z");
      expect(process.hrtime.bigint() - t0).toBeGreaterThanOrEqual(29_000n); // 30 us less the last hit's 1/8
    } finally {
      p.close();
    }
  });

  it("leaves the end of the stream to the stream", async () => {
    const p = await socketPair();
    try {
      const ended = once(p.server, "end");
      p.server.resume();
      const poller = new SocketPoller(socketFd(p.server), 100_000);
      p.client.end();
      await new Promise((r) => setTimeout(r, 20));
      const t0 = performance.now();
      expect(poller.poll()).toBeNull();
      // An end of stream is not a wait: the poll returns at once, well inside its 100 ms window.
      expect(performance.now() - t0).toBeLessThan(50);
      await ended;
    } finally {
      p.close();
    }
  });

  it("never polls with a window of 0", async () => {
    const p = await socketPair();
    try {
      p.server.pause();
      const poller = new SocketPoller(socketFd(p.server), 0);
      p.client.write("x");
      await new Promise((r) => setTimeout(r, 20));
      expect(poller.poll()).toBeNull();
      expect(poller.hits + poller.timeouts).toBe(0);
    } finally {
      p.close();
    }
  });
});

describe("writeDirect", () => {
  it("keeps the order when the socket takes only part of a write (the rest through the stream)", async () => {
    const p = await socketPair();
    try {
      const fd = socketFd(p.server);
      // Far more than a unix socket's buffer: write(2) takes part, the stream queues the rest, and the next
      // write must go behind it, not around it.
      const big = "ab".repeat(4 << 20);
      writeDirect(p.server, fd, big);
      expect(p.server.writableLength).toBeGreaterThan(0);
      writeDirect(p.server, fd, "tail\n");
      p.server.end();
      p.client.setEncoding("latin1");
      let got = "";
      p.client.on("data", (d: string) => (got += d));
      await once(p.client, "end");
      expect(got.length).toBe(big.length + 5);
      expect(got.slice(-5)).toBe("tail\n");
      expect(got.slice(0, big.length) === big).toBe(true);
    } finally {
      p.close();
    }
  });
});

/** A server's input and output and its client's ends: one socket, or two pipes (stdin and stdout). */
interface Transport {
  serverIn: Socket;
  serverOut: Socket;
  clientOut: Socket;
  clientIn: Socket;
  close: () => void;
}

const TRANSPORTS: [string, () => Promise<Transport>][] = [
  [
    "a socket",
    async () => {
      const p = await socketPair();
      return {
        serverIn: p.server,
        serverOut: p.server,
        clientOut: p.client,
        clientIn: p.client,
        close: p.close,
      };
    },
  ],
  [
    "two pipes (stdin and stdout)",
    async () => {
      const toServer = fifo();
      const fromServer = fifo();
      return {
        serverIn: toServer.reader,
        serverOut: fromServer.writer,
        clientOut: toServer.writer,
        clientIn: fromServer.reader,
        close: () => {
          toServer.close();
          fromServer.close();
        },
      };
    },
  ],
];

describe("serveStream, polling", () => {
  it.each(TRANSPORTS.flatMap(([name, open]) => [0, 200].map((us) => [name, us, open] as const)))(
    "on %s answers a long run of round trips in order (poll window %i us)",
    async (_, pollUs, open) => {
      const t = await open();
      try {
        const hv = new Hypervisor({ ramSize: 1 << 20 });
        const server = new QtestServer({ hv, vcpu: hv.vcpu(0) });
        const served = serveStream(server, t.serverIn, t.serverOut, { pollUs });
        const c = new QtestClient(t.clientOut, t.clientIn);
        for (let i = 0; i < 300; i++) {
          const a = 0x1000 + (i % 64) * 4;
          const v = ((i * 2654435761) >>> 0).toString(16);
          expect(await c.cmd(`writel 0x${a.toString(16)} 0x${v}`)).toBe("OK");
          // Replies are QEMU's "OK 0x%016x".
          expect(await c.cmd(`readl 0x${a.toString(16)}`)).toBe(`OK 0x${v.padStart(16, "0")}`);
        }
        // Commands sent together (pipelined) are answered in order too.
        const replies = await Promise.all([
          c.cmd("writeb 0x2000 0x5a"),
          c.cmd("readb 0x2000"),
          c.cmd("bogus"),
        ]);
        expect(replies).toEqual(["OK", "OK 0x000000000000005a", "FAIL Unknown command 'bogus'"]);
        // A reply larger than a pipe's buffer (64 KiB): what the descriptor does not take goes through the
        // stream, in order.
        const big = await c.cmd(`read 0x20000 0x${(96 * 1024).toString(16)}`);
        expect(big).toBe(`OK 0x${"00".repeat(96 * 1024)}`);
        expect(await c.cmd("readb 0x2000")).toBe("OK 0x000000000000005a");
        t.clientOut.end();
        await served;
      } finally {
        t.close();
      }
    },
  );
});
