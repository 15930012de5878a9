/**
 * Direct reads and writes on a qtest client's socket, beside its `net.Socket`.
 *
 * A qtest client sends one command and waits for its reply before the next (libqtest does), so serving it is a
 * chain of round trips whose cost is mostly two wake-ups: the client's, and the server's when the next command
 * comes. A server asleep in the event loop is woken through the kernel (on a virtual machine, an idle vCPU halted
 * and restarted) for every command. Polling the socket for a short while after a reply catches the next command
 * while this process is still running, as QEMU's adaptive polling (`poll-max-ns`) does for its I/O threads; a
 * client that takes longer than the window finds the server back in the event loop, and one that keeps missing it
 * (it shares this CPU, or thinks between commands) makes the server poll less and less often.
 *
 * The reads are plain `read(2)` calls on the non-blocking descriptor libuv opened (EAGAIN while nothing is there);
 * the stream is left reading as before, so whatever the poll does not take (an end of stream, an error, bytes
 * after the window) reaches the stream as usual.
 *
 * A read that finds nothing is not free: Node reports EAGAIN as an exception, and on a machine where system calls
 * are dear (page-table isolation without PCID, a virtual machine that traps them) it took 8 us in ide-test's
 * `various_prdts`, against 2 us in a tight loop, while the next command came 4-10 us after the reply. So the
 * first read waits, spinning on the clock (no system call), for a delay that follows the client: a first read
 * that finds nothing lengthens it by 1 us, one that finds the command shortens it by 1/8 us, which keeps about
 * one first read in nine empty. Measured in one run with the delay drawn at random per round trip: 0 us
 * 32.9-48.7 us per round trip, the best fixed delay 31.2-36.5 us; which delay is best moved between machines of
 * the same run (4 us in some, 8 us in others), hence adapting rather than a constant.
 */

import { fstatSync, readSync, writeSync } from "node:fs";
import type { Writable } from "node:stream";

/** How long to poll after a reply unless `XENIDE_QTEST_POLL_US` says otherwise (0 turns polling off). */
export const DEFAULT_POLL_US = 150;

/** Misses in a row after which polling is skipped for 2^misses - 1 round trips, at most this many. */
const MAX_SKIP = 63;

/** The first read's delay moves by these steps (ns): up after an empty first read, down after a full one. */
const DELAY_UP_NS = 1000;
const DELAY_DOWN_NS = 125;
/** The delay never exceeds this (ns), nor half the window. */
const MAX_DELAY_NS = 30_000;

/**
 * The descriptor under a connected socket (libuv keeps it on the socket's handle; Node exposes it there on
 * Unix), or -1 when there is none to use (not a socket, not connected, or a platform without it).
 */
export function socketFd(stream: unknown): number {
  const fd = (stream as { _handle?: { fd?: unknown } } | null)?._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : -1;
}

/**
 * The descriptor of a stream the poll may read without blocking, or -1: one on a libuv pipe or TCP handle whose
 * descriptor is a socket or a FIFO (libuv opened it non-blocking: a read with nothing there fails with EAGAIN).
 * A qtest client's socket, or stdin when it is a pipe (`xenide qtest` under a test driver); never a terminal or
 * a file, whose reads could block.
 */
export function pollableFd(stream: unknown): number {
  const fd = socketFd(stream);
  if (fd < 0) return -1;
  try {
    const st = fstatSync(fd);
    return st.isSocket() || st.isFIFO() ? fd : -1;
  } catch {
    return -1;
  }
}

/** The poll window from the environment (`XENIDE_QTEST_POLL_US`, microseconds), else the default. */
export function pollWindowUs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.XENIDE_QTEST_POLL_US;
  if (v === undefined || v === "") return DEFAULT_POLL_US;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : DEFAULT_POLL_US;
}

export class SocketPoller {
  private readonly buf: Buffer;
  private readonly windowNs: bigint;
  private readonly maxDelayNs: number;
  /** How long the first read of a poll waits (ns), following when the client's commands come. */
  private delayNs = 0;
  private misses = 0;
  private skip = 0;
  /** Round trips whose next command the poll caught, and polls that ran out: for tests and tuning. */
  hits = 0;
  timeouts = 0;

  constructor(
    private readonly fd: number,
    windowUs: number,
    chunk = 65536,
  ) {
    this.buf = Buffer.allocUnsafe(chunk);
    this.windowNs = BigInt(Math.round(windowUs * 1000));
    this.maxDelayNs = Math.min(MAX_DELAY_NS, Math.floor((windowUs * 1000) / 2));
  }

  /** The first read's current delay in microseconds (for tests and tuning). */
  get delayUs(): number {
    return this.delayNs / 1000;
  }

  /**
   * Read what arrives within the window: the bytes as a latin1 string, or null when nothing came (or the
   * stream ended or failed, which the stream reports itself), or when this round trip is one polling skips.
   */
  poll(): string | null {
    if (this.windowNs <= 0n) return null;
    if (this.skip > 0) {
      this.skip--;
      return null;
    }
    const start = process.hrtime.bigint();
    if (this.delayNs > 0) {
      const until = start + BigInt(this.delayNs);
      while (process.hrtime.bigint() < until);
    }
    // EAGAIN comes back as an exception; without a stack trace to capture it costs a third as much.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    let first = true;
    try {
      for (;;) {
        let n: number;
        try {
          n = readSync(this.fd, this.buf, 0, this.buf.length, null);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return null;
          if (first) {
            first = false;
            this.delayNs = Math.min(this.delayNs + DELAY_UP_NS, this.maxDelayNs);
          }
          if (process.hrtime.bigint() - start < this.windowNs) continue;
          this.missed();
          return null;
        }
        if (n === 0) return null;
        if (first) this.delayNs = Math.max(this.delayNs - DELAY_DOWN_NS, 0);
        this.misses = 0;
        this.hits++;
        return this.buf.toString("latin1", 0, n);
      }
    } finally {
      Error.stackTraceLimit = limit;
    }
  }

  private missed(): void {
    this.timeouts++;
    this.misses = Math.min(this.misses + 1, 6);
    this.skip = Math.min((1 << this.misses) - 1, MAX_SKIP);
  }
}

/**
 * Write `s` with `write(2)` at once when the stream has nothing queued before it (so the order stays), the rest
 * (a full socket buffer) through the stream. Saves the stream's write request and callback per reply.
 */
export function writeDirect(stream: Writable, fd: number, s: string): void {
  if (stream.writableLength === 0 && !stream.destroyed) {
    try {
      const n = writeSync(fd, s, null, "latin1");
      if (n === s.length) return;
      s = s.slice(n);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A peer gone (EPIPE, ECONNRESET) is the stream's to report, as it would without this path.
      if (code !== "EAGAIN" && code !== "EPIPE" && code !== "ECONNRESET") throw e;
    }
  }
  stream.write(s, "latin1");
}
