/**
 * xenide's xenstored driven by Xen's own clients over its unix socket: Debian's xenstore-utils (libxenstore
 * 4.17, XENSTORED_PATH) and python3-pyxs. Round trips, permissions seen from guest connections, quotas,
 * transactions that conflict and retry, special watches, long directories (XS_DIRECTORY_PART), and a client
 * that breaks the framing losing its own connection only.
 */
import net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { XenStore, type XsHandle } from "../../src/hypervisor/xenstore.ts";
import { Xenstored } from "../../src/hypervisor/xenstored.ts";
import { XenstoredSocketServer } from "../../src/hypervisor/xenstored-socket.ts";
import { encodeXsMessage, XsMessageReader, xsStrings, XsType } from "../../src/hypervisor/xs-wire.ts";
import { PYTHON, requireTools, runTool, tempDir, toolsMissing } from "./support.ts";

const reason = toolsMissing();
requireTools("the xenstore-utils and pyxs tests", reason);

/** errno numbers pyxs reports (Linux asm-generic/errno-base.h, errno.h). */
const EPERM = 1;
const ENOENT = 2;
const EAGAIN = 11;
const EACCES = 13;
const E2BIG = 7;
const ENOSPC = 28;

(reason ? describe.skip : describe)("xenstored with xenstore-utils and pyxs", () => {
  const tmp = tempDir();
  const dom0Sock = join(tmp.dir, "xenstored.sock");
  const dom1Sock = join(tmp.dir, "dom1.sock");
  const dom2Sock = join(tmp.dir, "dom2.sock");
  let store: XenStore;
  let d0: XsHandle;
  const servers: XenstoredSocketServer[] = [];
  const protocolErrors: string[] = [];

  const tool = (cmd: string, ...args: string[]) => runTool(dom0Sock, cmd, args);
  const py = (sock: string, script: string) =>
    runTool(sock, PYTHON, [
      "-c",
      `import os, pyxs\nc = pyxs.Client(unix_socket_path=os.environ["XENSTORED_PATH"])\nc.connect()\n${script}`,
    ]);

  beforeAll(async () => {
    store = new XenStore();
    d0 = store.connect(0);
    // Two guests' homes as the toolstack makes them: owned by the guest, private to it.
    for (const dom of [1, 2]) {
      d0.mkdir(`/local/domain/${dom}`);
      d0.setPerms(`/local/domain/${dom}`, [{ dom, perm: "n" }]);
      store.introduceDomain(dom);
    }
    const daemon = new Xenstored(store);
    const onProtocolError = (e: Error) => protocolErrors.push(e.message);
    servers.push(await XenstoredSocketServer.listen(daemon, dom0Sock, { onProtocolError }));
    servers.push(await XenstoredSocketServer.listen(daemon, dom1Sock, { dom: 1 }));
    servers.push(await XenstoredSocketServer.listen(daemon, dom2Sock, { dom: 2 }));
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    tmp.cleanup();
  });

  it("writes, reads, lists, tests and removes nodes as xenstored does", async () => {
    expect((await tool("xenstore-write", "/vm/a/b", "hello", "/vm/a/c", "two words")).code).toBe(0);
    expect(await tool("xenstore-read", "/vm/a/b", "/vm/a/c")).toMatchObject({
      code: 0,
      stdout: "hello\ntwo words\n",
    });
    // The parent was created implicitly, empty.
    expect((await tool("xenstore-read", "/vm/a")).stdout).toBe("\n");
    expect((await tool("xenstore-list", "/vm/a")).stdout.split("\n").filter(Boolean).sort()).toEqual([
      "b",
      "c",
    ]);
    expect((await tool("xenstore-ls", "/vm")).stdout).toBe('a = ""\n b = "hello"\n c = "two words"\n');
    expect((await tool("xenstore-exists", "/vm/a/b")).code).toBe(0);
    expect((await tool("xenstore-exists", "/vm/a/nope")).code).not.toBe(0);
    expect((await tool("xenstore-rm", "/vm/a")).code).toBe(0);
    expect((await tool("xenstore-exists", "/vm/a/b")).code).not.toBe(0);
    expect(store.connect(0).tryRead("/vm/a")).toBeUndefined();
    // What a tool wrote, the in-process store sees, and the other way round.
    d0.write("/vm/from-inside", "42");
    expect((await tool("xenstore-read", "/vm/from-inside")).stdout).toBe("42\n");
    const missing = await tool("xenstore-read", "/vm/none");
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("couldn't read path /vm/none");
  });

  it("applies permissions per node: a guest connection cannot read another guest's nodes", async () => {
    d0.write("/local/domain/1/secret", "s1");
    d0.setPerms("/local/domain/1/secret", [{ dom: 1, perm: "n" }]);
    // Domain 1 reads its own node (relative to its home, too); domain 2 is refused.
    expect((await runTool(dom1Sock, "xenstore-read", ["/local/domain/1/secret"])).stdout).toBe("s1\n");
    expect((await runTool(dom1Sock, "xenstore-read", ["secret"])).stdout).toBe("s1\n");
    const denied = await runTool(dom2Sock, "xenstore-read", ["/local/domain/1/secret"]);
    expect(denied.code).not.toBe(0);
    expect(
      (
        await py(
          dom2Sock,
          'try:\n  c.read(b"/local/domain/1/secret")\nexcept pyxs.PyXSError as e:\n  print(e.args[0])',
        )
      ).stdout.trim(),
    ).toBe(String(EACCES));
    // A missing node under a parent domain 2 may not read is EACCES too, not ENOENT: nothing leaks.
    expect(
      (
        await py(
          dom2Sock,
          'try:\n  c.read(b"/local/domain/1/nothing")\nexcept pyxs.PyXSError as e:\n  print(e.args[0])',
        )
      ).stdout.trim(),
    ).toBe(String(EACCES));
    // dom0 grants domain 2 read access with xenstore-chmod; -p shows the permissions as xenstored lists them.
    expect((await tool("xenstore-chmod", "/local/domain/1/secret", "n1", "r2")).code).toBe(0);
    expect((await tool("xenstore-ls", "-p", "/local/domain/1")).stdout).toMatch(
      /secret = "s1" .*\(n1,r2\)\n/,
    );
    expect((await runTool(dom2Sock, "xenstore-read", ["/local/domain/1/secret"])).stdout).toBe("s1\n");
    expect((await runTool(dom2Sock, "xenstore-write", ["/local/domain/1/secret", "x"])).code).not.toBe(0);
    // The owner may not give its node away (EPERM); a non-owner may not change permissions at all (EACCES).
    expect(
      (
        await py(
          dom1Sock,
          'try:\n  c.set_perms(b"secret", [b"n2"])\nexcept pyxs.PyXSError as e:\n  print(e.args[0])',
        )
      ).stdout.trim(),
    ).toBe(String(EPERM));
    expect(
      (
        await py(
          dom2Sock,
          'try:\n  c.set_perms(b"/local/domain/1/secret", [b"n2"])\nexcept pyxs.PyXSError as e:\n  print(e.args[0])',
        )
      ).stdout.trim(),
    ).toBe(String(EACCES));
    expect(d0.read("/local/domain/1/secret")).toBe("s1");
    // A node a guest creates is its own.
    expect((await runTool(dom2Sock, "xenstore-write", ["mine", "m"])).code).toBe(0);
    expect(d0.getPerms("/local/domain/2/mine")[0]).toEqual({ dom: 2, perm: "n" });
  });

  it("enforces xenstored's default quotas on a guest connection", async () => {
    const r = await py(
      dom1Sock,
      [
        "n = 0",
        "try:",
        "  while n < 2000:",
        '    c.write(b"q/%d" % n, b"x")',
        "    n += 1",
        "except pyxs.PyXSError as e:",
        '  print("entries", n, e.args[0])',
        'c.delete(b"q")',
        "try:",
        '  c.write(b"big", b"y" * 2100)',
        "except pyxs.PyXSError as e:",
        '  print("size", e.args[0])',
        "m = c.monitor()",
        "w = 0",
        "try:",
        "  while w < 200:",
        '    m.watch(b"w%d" % w, b"t")',
        "    w += 1",
        "except pyxs.PyXSError as e:",
        '  print("watches", w, e.args[0])',
      ].join("\n"),
    );
    // Domain 1 owns 1000 nodes at most: its home, `secret` (given to it above), q and q/0 .. q/996.
    expect(r.stdout).toBe(`entries 997 ${ENOSPC}\nsize ${ENOSPC}\nwatches 128 ${E2BIG}\n`);
    // dom0 is not limited.
    expect((await tool("xenstore-write", "/vm/big", "z".repeat(3000))).code).toBe(0);
  });

  it("transactions conflict with EAGAIN when something they read changed, and succeed on retry", async () => {
    d0.write("/vm/counter", "1");
    const r = await py(
      dom0Sock,
      [
        "other = pyxs.Client(unix_socket_path=os.environ['XENSTORED_PATH'])",
        "other.connect()",
        "c.transaction()",
        'v = int(c.read(b"/vm/counter"))',
        'other.write(b"/vm/counter", b"10")', // someone else changes what the transaction read
        'c.write(b"/vm/counter", str(v + 1).encode())',
        // pyxs's commit returns False exactly when xenstored answers "EAGAIN".
        'print("committed" if c.commit() else "conflict")',
        "attempts = 0",
        "while True:",
        "  attempts += 1",
        "  c.transaction()",
        '  v = int(c.read(b"/vm/counter"))',
        '  c.write(b"/vm/counter", str(v + 1).encode())',
        "  if c.commit(): break",
        'print("retried", attempts, c.read(b"/vm/counter").decode())',
        // A change elsewhere does not conflict.
        "c.transaction()",
        'c.read(b"/vm/counter")',
        'other.write(b"/vm/elsewhere", b"1")',
        "c.commit()",
        'print("unrelated ok")',
        // Neither does an aborted transaction leave anything behind.
        "c.transaction()",
        'c.write(b"/vm/aborted", b"1")',
        "c.rollback()",
        'print("aborted", c.exists(b"/vm/aborted"))',
      ].join("\n"),
    );
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`conflict\nretried 1 11\nunrelated ok\naborted False\n`);
  });

  it("fires watches once on registration, and @introduceDomain / @releaseDomain for domain changes", async () => {
    const r = await py(
      dom0Sock,
      [
        // pyxs asks /proc/xen/capabilities whether it runs in dom0; a socket client of xenstored is dom0.
        "c.SU = True",
        "m = c.monitor()",
        'm.watch(b"/vm/watched", b"tok")',
        "ev = m.wait()",
        "print(next(ev))", // the registration event
        'c.write(b"/vm/watched/child", b"1")',
        "print(next(ev))",
        'm.watch(b"@introduceDomain", b"intro")',
        'm.watch(b"@releaseDomain", b"rel")',
        "print(next(ev)); print(next(ev))", // both fire once on registration
        "c.introduce_domain(7, 4096, 3)",
        "print(next(ev))",
        "print(c.is_domain_introduced(7), c.is_domain_introduced(8))",
        "c.release_domain(7)",
        "print(next(ev))",
        "print(c.is_domain_introduced(7), c.get_domain_path(7).decode())",
      ].join("\n"),
    );
    expect(r.stderr).toBe("");
    expect(r.stdout.split("\n")).toEqual([
      "Event(path=b'/vm/watched', token=b'tok')",
      "Event(path=b'/vm/watched/child', token=b'tok')",
      "Event(path=b'@introduceDomain', token=b'intro')",
      "Event(path=b'@releaseDomain', token=b'rel')",
      "Event(path=b'@introduceDomain', token=b'intro')",
      "True False",
      "Event(path=b'@releaseDomain', token=b'rel')",
      "False /local/domain/7",
      "",
    ]);
    // A guest may not introduce domains.
    expect(
      (
        await py(
          dom1Sock,
          "c.SU = True\ntry:\n  c.introduce_domain(9, 1, 1)\nexcept pyxs.PyXSError as e:\n  print(e.args[0])",
        )
      ).stdout.trim(),
    ).toBe(String(EACCES));
    // Unknown domains cannot be released.
    expect(
      (
        await py(
          dom0Sock,
          "c.SU = True\ntry:\n  c.release_domain(99)\nexcept pyxs.PyXSError as e:\n  print(e.args[0])",
        )
      ).stdout.trim(),
    ).toBe(String(ENOENT));
  });

  it("lists a directory longer than one message (libxenstore falls back to XS_DIRECTORY_PART)", async () => {
    const names = Array.from(
      { length: 300 },
      (_, i) => `child-with-a-rather-long-name-${String(i).padStart(4, "0")}`,
    );
    for (const n of names) d0.write(`/vm/long/${n}`, "");
    const r = await tool("xenstore-list", "/vm/long");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n").filter(Boolean).sort()).toEqual(names);
  });

  it("closes the connection of a client that sends an oversized message, and only that one", async () => {
    const sock = net.connect(dom0Sock);
    await new Promise<void>((r) => sock.once("connect", () => r()));
    const replies = new XsMessageReader();
    const got: number[] = [];
    sock.on("data", (d: Buffer) => got.push(...replies.push(d).map((m) => m.type)));
    // A well-formed request of an unknown type is answered (XS_ERROR) and the connection stays.
    sock.write(encodeXsMessage({ type: 99, reqId: 1, txId: 0, payload: xsStrings("x") }));
    // A READ without its NUL is EINVAL, not a crash.
    sock.write(
      encodeXsMessage({ type: XsType.READ, reqId: 2, txId: 0, payload: new TextEncoder().encode("/vm") }),
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual([XsType.ERROR, XsType.ERROR]);
    // Now a header announcing 5000 bytes (more than XENSTORE_PAYLOAD_MAX): the server hangs up.
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    const hdr = Buffer.alloc(16);
    hdr.writeUInt32LE(XsType.WRITE, 0);
    hdr.writeUInt32LE(5000, 12);
    sock.write(hdr);
    await closed;
    expect(protocolErrors.at(-1)).toMatch(/5000 bytes exceeds XENSTORE_PAYLOAD_MAX/);
    // Everyone else goes on.
    expect((await tool("xenstore-read", "/vm/from-inside")).stdout).toBe("42\n");
  });
});
