// The NBD medium against nbdkit (Debian's nbdkit 1.32): the memory and file plugins for data, its log filter to
// see the commands on the wire, and its error, delay and blocksize-policy filters (and a SIGKILL or SIGSTOP of
// the server) for faults. Every server listens on a Unix socket in a temporary directory (one test on loopback
// TCP). Skipped with a one-line reason when nbdkit or qemu-utils is missing, except under CI.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { expect, it } from "vitest";

import { buildMachine, openAtaPath } from "../../../src/machine/index.ts";
import { AsyncEngine, SyncEngine } from "../../../src/storage/engine.ts";
import { NbdBackend, NbdError, type NbdOptions } from "../../../src/storage/nbd/index.ts";
import {
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from "../../../src/storage/nbd/protocol.ts";
import { type IoCompletion, IoError, type IoEngine, type IoRequest } from "../../../src/storage/types.ts";
import { pattern, run, sameBytes, sleep } from "../helpers.ts";
import { describeWithServers, serverScope, stopServer } from "./servers.ts";

const describeNbd = describeWithServers("the nbdkit interop tests");

const S = 512;
const MiB = 1024 * 1024;

describeNbd("the NBD medium against nbdkit", () => {
  const scope = serverScope();
  const { dir, open } = scope;
  const serve = scope.nbdkit;
  let fileNo = 0;
  /** A file for nbdkit's file plugin, so the test can look at the bytes without going through NBD. */
  function diskFile(bytes: number): string {
    const f = path.join(dir, `disk${fileNo++}.img`);
    fs.writeFileSync(f, new Uint8Array(bytes));
    return f;
  }
  const fileBytes = (f: string, sector: number, count: number): Uint8Array =>
    new Uint8Array(fs.readFileSync(f)).subarray(sector * S, (sector + count) * S);
  function logOf(file: string): string[] {
    return fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n") : [];
  }

  it("negotiates with NBD_OPT_GO and structured replies, and takes the export's size and flags", async () => {
    const s = await serve(["memory", "3M"]);
    const m = open(s.url);
    expect(m.exportInfo.go).toBe(true);
    expect(m.exportInfo.structuredReplies).toBe(true);
    expect(m.sectorCount).toBe((3 * MiB) / S);
    expect(m.readOnly).toBe(false);
    // nbdkit's memory plugin: flush, FUA, trim and write zeroes (its log filter's Connect line says the same).
    for (const f of [NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES])
      expect(m.exportInfo.flags & f).toBe(f);
    expect(m.describe).toBe(s.url);
    expect(m.identity).toBe(`nbd:${s.url}`);
  });

  for (const kind of ["sync", "async"] as const) {
    it(`data written through the ${kind} engine is in the served file, and reads back through any split`, async () => {
      const file = diskFile(2 * MiB);
      const s = await serve(["file", file]);
      const m = open(s.url);
      const e: IoEngine = kind === "sync" ? new SyncEngine(m) : new AsyncEngine(m);
      const a = pattern(3 * S, 11);
      const b = pattern(64 * 1024, 12);
      expect(
        await run(e, { op: "write", tag: 1, sector: 5, bufs: [a.subarray(0, S), a.subarray(S)] }),
      ).toEqual({
        tag: 1,
      });
      expect(await run(e, { op: "write", tag: 2, sector: m.sectorCount - 128, bufs: [b] })).toEqual({
        tag: 2,
      });
      expect(await run(e, { op: "flush", tag: 3, sector: 0 })).toEqual({ tag: 3 });
      expect(sameBytes(fileBytes(file, 5, 3), a)).toBe("same");
      expect(sameBytes(fileBytes(file, m.sectorCount - 128, 128), b)).toBe("same");
      expect(fileBytes(file, 4, 1)).toEqual(new Uint8Array(S)); // neighbours untouched
      expect(fileBytes(file, 8, 1)).toEqual(new Uint8Array(S));

      // Bytes put in the file directly read back through NBD, into differently split views of shared memory.
      const direct = pattern(6 * S, 13);
      const fd = fs.openSync(file, "r+");
      fs.writeSync(fd, direct, 0, direct.length, 40 * S);
      fs.closeSync(fd);
      const guest = new Uint8Array(new SharedArrayBuffer(16 * S));
      const v1 = guest.subarray(8 * S, 10 * S);
      const v2 = guest.subarray(0, 4 * S);
      expect(await run(e, { op: "read", tag: 4, sector: 40, bufs: [v1, v2] })).toEqual({ tag: 4 });
      expect(v1).toEqual(direct.subarray(0, 2 * S));
      expect(v2).toEqual(direct.subarray(2 * S));

      // The engine refuses a request past the end before it reaches the server.
      const past = await run(e, { op: "read", tag: 5, sector: m.sectorCount, bufs: [new Uint8Array(S)] });
      expect(past.error?.code).toBe("ERANGE");
    });
  }

  it("streams requests far larger than its shared rings, both ways, on both engines", async () => {
    const file = diskFile(24 * MiB);
    const s = await serve(["file", file]);
    const m = open(s.url, { ringBytes: 64 * 1024 });
    const data = pattern(8 * MiB, 14);
    m.write(0, [data.subarray(0, 3 * MiB), data.subarray(3 * MiB)]); // 128 rings' worth in one call
    const back = new Uint8Array(8 * MiB);
    m.read(0, [back]);
    expect(sameBytes(back, data)).toBe("same");
    const e = new AsyncEngine(m);
    const data2 = pattern(8 * MiB, 15);
    expect(await run(e, { op: "write", tag: 1, sector: 16384, bufs: [data2] })).toEqual({ tag: 1 });
    const back2 = new Uint8Array(8 * MiB);
    expect(await run(e, { op: "read", tag: 2, sector: 16384, bufs: [back2] })).toEqual({ tag: 2 });
    expect(sameBytes(back2, data2)).toBe("same");
    m.flush();
    expect(sameBytes(fileBytes(file, 0, 16384), data)).toBe("same");
  });

  it("keeps many requests in flight on the async engine (32 delayed reads take about one delay)", async () => {
    const s = await serve(["--filter=delay", "memory", "4M", "delay-read=300ms"], ["-t", "32"]);
    const m = open(s.url);
    const e = new AsyncEngine(m, { maxInflight: 32 });
    const shadow = pattern(32 * 4096, 21);
    m.write(0, [shadow]); // writes are not delayed
    const outs = Array.from({ length: 32 }, () => new Uint8Array(4096));
    const t0 = Date.now();
    outs.forEach((buf, i) => e.submit({ op: "read", tag: i, sector: i * 8, bufs: [buf] }));
    await e.drain();
    const elapsed = Date.now() - t0;
    const done: IoCompletion[] = [];
    e.reap(done);
    expect(done.map((c) => c.error)).toEqual(new Array(32).fill(undefined));
    outs.forEach((buf, i) => expect(buf).toEqual(shadow.subarray(i * 4096, (i + 1) * 4096)));
    // One at a time would take 32 x 300 ms = 9.6 s.
    expect(elapsed).toBeLessThan(4800);
  });

  it("writes through with FUA and then skips the flush; without it, flushes what was written", async () => {
    const log = path.join(dir, "fua.log");
    const s = await serve(["--filter=log", "memory", "1M", `logfile=${log}`]);
    const wt = open(s.url, { fua: true });
    wt.write(1, [pattern(2 * S, 1)]);
    wt.flush();
    wt.close();
    const wb = open(s.url);
    wb.flush(); // nothing written yet: no NBD_CMD_FLUSH
    wb.write(1, [pattern(2 * S, 2)]);
    wb.flush();
    wb.close();
    // The server logs a disconnect after it has seen NBD_CMD_DISC: wait for the second one.
    for (let i = 0; i < 100 && logOf(log).filter((l) => / Disconnect /.test(l)).length < 2; i++)
      await sleep(20);
    const lines = logOf(log);
    const c1 = lines.filter((l) => l.includes("connection=1 ") && / (Write|Flush) id/.test(l));
    const c2 = lines.filter((l) => l.includes("connection=2 ") && / (Write|Flush) id/.test(l));
    expect(c1).toHaveLength(1);
    expect(c1[0]).toMatch(/Write id=1 offset=0x200 count=0x400 fua=1/);
    expect(c2).toHaveLength(2);
    expect(c2[0]).toMatch(/Write id=1 offset=0x200 count=0x400 fua=0/);
    expect(c2[1]).toMatch(/Flush id=2/);
    // Both connections ended with NBD_CMD_DISC (a soft disconnect).
    expect(lines.filter((l) => / Disconnect transactions=/.test(l))).toHaveLength(2);
  });

  it("an IDE drive whose write cache is off writes with FUA (no flush after each write); SET FEATURES 02h turns it back on", async () => {
    const log = path.join(dir, "wce.log");
    const s = await serve(["--filter=log", "memory", "1M", `logfile=${log}`]);
    const machine = buildMachine({
      ide: [{ position: "primary-master", medium: { image: s.url }, writeCache: false }],
    });
    try {
      const pio = await openAtaPath(machine, "pio");
      await pio.write(1, pattern(2 * S, 5)); // write cache off: WRITE with FUA, the device's flush has nothing to do
      // SET FEATURES 02h (enable the write cache, ATA-6 §8.37.4) from the guest's vCPU.
      const cpu = machine.hv.vcpus[0]!;
      cpu.outb(0x1f1, 0x02);
      cpu.outb(0x1f6, 0xe0);
      cpu.outb(0x1f7, 0xef);
      expect(cpu.inb(0x1f7)).toBe(0x50);
      await pio.write(8, pattern(2 * S, 6)); // cached: a plain WRITE, made durable by the flush that follows
      await pio.flush();
    } finally {
      await machine.close();
    }
    for (let i = 0; i < 100 && !logOf(log).some((l) => / Disconnect /.test(l)); i++) await sleep(20);
    const ops = logOf(log)
      .filter((l) => / (Write|Flush) id/.test(l))
      .map((l) =>
        / (Write|Flush) id=\d+(?: offset=(0x[0-9a-f]+) count=0x[0-9a-f]+ fua=(\d))?/.exec(l)!.slice(1),
      )
      .map(([op, off, fua]) => (op === "Write" ? `write ${off} fua=${fua}` : "flush"));
    // Cache off, each 512-byte DRQ block is written through before the next (ATA-6 §8.37.4: the device completes
    // a write only when it is on the medium); cache on, the command's blocks go together and the flush follows.
    expect(ops).toEqual(["write 0x200 fua=1", "write 0x400 fua=1", "write 0x1000 fua=0", "flush"]);
  });

  it("discards as NBD_CMD_WRITE_ZEROES (reads back zeroes) or, with discard: trim, as NBD_CMD_TRIM", async () => {
    const log = path.join(dir, "discard.log");
    const s = await serve(["--filter=log", "memory", "1M", `logfile=${log}`]);
    const z = open(s.url);
    z.write(0, [pattern(16 * S, 3)]);
    z.discard(4, 8);
    const back = new Uint8Array(16 * S);
    z.read(0, [back]);
    expect(back.subarray(4 * S, 12 * S)).toEqual(new Uint8Array(8 * S));
    expect(back.subarray(0, 4 * S)).toEqual(pattern(16 * S, 3).subarray(0, 4 * S));
    z.close();
    const t = open(s.url, { discard: "trim" });
    t.discard(4, 8);
    t.close();
    const lines = logOf(log);
    expect(lines.some((l) => /connection=1 Zero id=\d+ offset=0x800 count=0x1000 trim=1/.test(l))).toBe(true);
    expect(lines.some((l) => /connection=2 Trim id=\d+ offset=0x800 count=0x1000/.test(l))).toBe(true);
  });

  it("a read-only export makes a read-only medium: the engines refuse writes with EROFS", async () => {
    const s = await serve(["memory", "1M"], ["-r"]);
    const m = open(s.url);
    expect(m.readOnly).toBe(true);
    expect(m.describe).toMatch(/\(ro\)$/);
    for (const e of [new SyncEngine(m), new AsyncEngine(m)]) {
      const w = await run(e, { op: "write", tag: 1, sector: 0, bufs: [new Uint8Array(S)] });
      expect(w.error?.code).toBe("EROFS");
      const d = await run(e, { op: "discard", tag: 2, sector: 0, count: 1 });
      expect(d.error?.code).toBe("EROFS");
      expect(await run(e, { op: "read", tag: 3, sector: 0, bufs: [new Uint8Array(S)] })).toEqual({ tag: 3 });
    }
    // readOnly: true on a writable export does the same.
    const rw = await serve(["memory", "1M"]);
    expect(open(rw.url, { readOnly: true }).readOnly).toBe(true);
  });

  it("an error reply fails that request with its errno (EIO, ENOSPC) and the connection goes on", async () => {
    const inject = path.join(dir, "inject");
    const s = await serve([
      "--filter=error",
      "memory",
      "1M",
      "error-pread=EIO",
      "error-pread-rate=100%",
      `error-pread-file=${inject}`,
      "error-pwrite=ENOSPC",
      "error-pwrite-rate=100%",
      `error-pwrite-file=${inject}`,
    ]);
    const m = open(s.url);
    m.write(10, [pattern(S, 4)]);
    fs.writeFileSync(inject, "");
    expect(() => m.read(10, [new Uint8Array(S)])).toThrow(IoError);
    try {
      m.read(10, [new Uint8Array(2 * S)]);
    } catch (e) {
      expect((e as IoError).code).toBe("EIO");
      expect((e as IoError).sector).toBe(10);
      expect((e as IoError).message).toMatch(/EIO/);
    }
    const e = new AsyncEngine(m);
    const w = await run(e, { op: "write", tag: 1, sector: 20, bufs: [new Uint8Array(S)] });
    expect(w.error?.code).toBe("ENOSPC");
    fs.rmSync(inject);
    const back = new Uint8Array(S);
    expect(await run(e, { op: "read", tag: 2, sector: 10, bufs: [back] })).toEqual({ tag: 2 });
    expect(back).toEqual(pattern(S, 4));
  });

  it("ESHUTDOWN from the server: that request fails, the client disconnects, later requests fail with EIO", async () => {
    const s = await serve([
      "--filter=error",
      "memory",
      "1M",
      "error-pread=ESHUTDOWN",
      "error-pread-rate=100%",
    ]);
    const m = open(s.url);
    m.write(0, [pattern(S, 16)]);
    expect(() => m.read(0, [new Uint8Array(S)])).toThrow(/ESHUTDOWN/);
    expect(() => m.write(1, [new Uint8Array(S)])).toThrow(/shutting down/);
  });

  it("a server killed in the middle of a request: EIO at once, sync and async, and every later request EIO", async () => {
    const s = await serve(["--filter=delay", "memory", "1M", "delay-read=20"]);
    const m = open(s.url);
    // Async: the engine's completion carries EIO soon after the kill.
    const e = new AsyncEngine(m);
    e.submit({ op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(S)] });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await s.kill("SIGKILL");
    await e.drain();
    const out: IoCompletion[] = [];
    e.reap(out);
    expect(out[0]?.error?.code).toBe("EIO");
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(() => m.write(0, [new Uint8Array(S)])).toThrow(/EIO|closed/);

    // Sync: this thread waits inside read(); another process kills the server meanwhile.
    const s2 = await serve(["--filter=delay", "memory", "1M", "delay-read=20"]);
    const m2 = open(s2.url);
    spawn("sh", ["-c", `sleep 0.3; kill -9 ${s2.proc.pid}`], { stdio: "ignore" });
    const t1 = Date.now();
    let err: unknown;
    try {
      m2.read(0, [new Uint8Array(S)]);
    } catch (x) {
      err = x;
    }
    expect(err).toBeInstanceOf(IoError);
    expect((err as IoError).code).toBe("EIO");
    expect(Date.now() - t1).toBeLessThan(5000);
  });

  it("a server that stops answering: the request times out with EIO instead of hanging", async () => {
    const s = await serve(["memory", "1M"]);
    const m = open(s.url, { timeoutMs: 1000 });
    m.write(0, [pattern(S, 5)]);
    await stopServer(s);
    try {
      const t0 = Date.now();
      expect(() => m.read(0, [new Uint8Array(S)])).toThrow(/no answer from the server for 1000 ms/);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
      expect(Date.now() - t0).toBeLessThan(4000);

      const s2 = await serve(["memory", "1M"]);
      const m2 = open(s2.url, { timeoutMs: 1000 });
      await stopServer(s2);
      const e = new AsyncEngine(m2);
      const t1 = Date.now();
      const c = await run(e, { op: "read", tag: 1, sector: 0, bufs: [new Uint8Array(S)] });
      expect(c.error?.code).toBe("EIO");
      expect(Date.now() - t1).toBeLessThan(4000);
      s2.proc.kill("SIGCONT");
    } finally {
      s.proc.kill("SIGCONT");
    }
  });

  it("obeys block size constraints: aligned to the minimum (read-modify-write) and split at the maximum", async () => {
    const file = diskFile(1 * MiB);
    const log = path.join(dir, "bs.log");
    // The policy filter fails every request that is not a multiple of 4 KiB or larger than 64 KiB with EINVAL.
    const s = await serve([
      "--filter=blocksize-policy",
      "--filter=log",
      "file",
      file,
      "blocksize-minimum=4096",
      "blocksize-preferred=4096",
      "blocksize-maximum=65536",
      "blocksize-error-policy=error",
      `logfile=${log}`,
    ]);
    const m = open(s.url);
    expect(m.exportInfo.minBlock).toBe(4096);
    expect(m.exportInfo.maxPayload).toBe(65536);
    const shadow = new Uint8Array(1 * MiB);
    const put = (sector: number, data: Uint8Array) => shadow.set(data, sector * S);

    const a = pattern(3 * S, 6); // sectors 3..5 of the first 4 KiB block
    m.write(3, [a]);
    put(3, a);
    const b = pattern(200 * 1024 + S, 7); // unaligned both ends, more than three maximum payloads
    m.write(9, [b]);
    put(9, b);
    const back = new Uint8Array(5 * S);
    m.read(1, [back]);
    expect(back).toEqual(shadow.subarray(S, 6 * S));

    // Eight sectors of one block written at once on the async engine: each is a read-modify-write of the same
    // block, run one at a time, so none is lost.
    const e = new AsyncEngine(m);
    for (let i = 0; i < 8; i++) {
      const d = pattern(S, 100 + i);
      e.submit({ op: "write", tag: i, sector: 1024 + i, bufs: [d] });
      put(1024 + i, d);
    }
    await e.drain();
    const done: IoCompletion[] = [];
    e.reap(done);
    expect(done.every((c) => c.error === undefined)).toBe(true);
    m.discard(1030, 3); // unaligned discard: the partial blocks are written as zeroes
    shadow.fill(0, 1030 * S, 1033 * S);
    m.flush();
    expect(sameBytes(new Uint8Array(fs.readFileSync(file)), shadow)).toBe("same");
    // No request the filter refused: every request the log shows is aligned and within the maximum.
    const reqs = logOf(log).filter((l) => / (Read|Write|Zero) id=/.test(l));
    expect(reqs.length).toBeGreaterThan(8);
    for (const l of reqs) {
      const [, off, count] = /offset=0x([0-9a-f]+) count=0x([0-9a-f]+)/.exec(l)!;
      expect(parseInt(off!, 16) % 4096).toBe(0);
      expect(parseInt(count!, 16) % 4096).toBe(0);
      if (!/ Zero /.test(l)) expect(parseInt(count!, 16)).toBeLessThanOrEqual(65536);
    }
  });

  it("simple replies (nbdkit --no-sr) and a server that is not fixed newstyle (NBD_OPT_EXPORT_NAME) work too", async () => {
    const file = diskFile(256 * 1024);
    const data = pattern(64 * 1024, 8);
    const sr = await serve(["file", file], ["--no-sr"]);
    const m = open(sr.url);
    expect(m.exportInfo.structuredReplies).toBe(false);
    m.write(2, [data]);
    const back = new Uint8Array(data.length);
    m.read(2, [back]);
    expect(back).toEqual(data);
    m.close();
    const plain = await serve(["file", file], ["--mask-handshake=0"]);
    const p = open(plain.url);
    expect(p.exportInfo.go).toBe(false);
    expect(p.sectorCount).toBe(512);
    const back2 = new Uint8Array(data.length);
    p.read(2, [back2]);
    expect(back2).toEqual(data);
  });

  it("refuses with one clear line: an oldstyle server, a server requiring TLS, no server at all", async () => {
    const old = await serve(["memory", "1M"], ["-o"]);
    expect(() => NbdBackend.open(old.url)).toThrow(/oldstyle negotiation/);

    const psk = path.join(dir, "keys.psk");
    fs.writeFileSync(psk, "alice:0123456789abcdef0123456789abcdef\n", { mode: 0o600 });
    const tls = await serve(["memory", "1M"], ["--tls=require", `--tls-psk=${psk}`]);
    let err: unknown;
    try {
      NbdBackend.open(tls.url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).reason).toBe("tls");
    expect((err as NbdError).code).toBe("EOPEN");
    expect((err as NbdError).message).toMatch(/requires TLS, which xenide does not support/);
    expect((err as NbdError).message).not.toMatch(/\n/);

    const gone = path.join(dir, "nobody.sock");
    expect(() => NbdBackend.open(`nbd+unix:///?socket=${gone}`)).toThrow(/cannot connect to .*nobody\.sock/);
  });

  it("connects over loopback TCP (nbd://127.0.0.1:PORT/)", async () => {
    const s = await scope.nbdkitTcp(["memory", "1M"]);
    const m = open(s.url);
    const data = pattern(8 * S, 9);
    m.write(100, [data]);
    const back = new Uint8Array(8 * S);
    await run(new AsyncEngine(m), { op: "read", tag: 1, sector: 100, bufs: [back] } as IoRequest);
    expect(back).toEqual(data);
  });
});
