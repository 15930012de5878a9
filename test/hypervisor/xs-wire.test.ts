/**
 * The xenstored wire protocol (xen/include/public/io/xs_wire.h) byte for byte, and xenstored's answers to
 * each request type through an in-memory connection: payload formats, XS_ERROR names, privileged requests,
 * XS_DIRECTORY_PART paging, relative watch paths.
 */
import { describe, expect, it } from "vitest";
import { XenStore } from "../../src/hypervisor/xenstore.ts";
import { Xenstored } from "../../src/hypervisor/xenstored.ts";
import {
  encodeXsMessage,
  splitXsPayload,
  XSD_ERRORS,
  XSD_SOCKMSG_SIZE,
  type XsMessage,
  XsMessageReader,
  XsProtocolError,
  xsStrings,
  XsType,
} from "../../src/hypervisor/xs-wire.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const tick = () => new Promise<void>((r) => setImmediate(r));

describe("xs_wire.h framing", () => {
  it("encodes struct xsd_sockmsg little-endian, then the payload", () => {
    // XS_READ (2), req_id 0x01020304, tx_id 5, len 3, "/a\0": what xenstore-read sends (strace of libxenstore).
    const m = encodeXsMessage({ type: XsType.READ, reqId: 0x01020304, txId: 5, payload: xsStrings("/a") });
    expect(Buffer.from(m).toString("hex")).toBe("02000000" + "04030201" + "05000000" + "03000000" + "2f6100");
    expect(XSD_SOCKMSG_SIZE).toBe(16);
  });

  it("numbers the types and errors as xs_wire.h does", () => {
    // enum xsd_sockmsg_type: XS_RESTRICT (20) was removed; RESET_WATCHES = SET_TARGET + 2.
    expect([XsType.CONTROL, XsType.WATCH_EVENT, XsType.ERROR, XsType.SET_TARGET]).toEqual([0, 15, 16, 19]);
    expect([XsType.RESET_WATCHES, XsType.DIRECTORY_PART]).toEqual([21, 22]);
    // The xsd_errors table, in its order.
    expect(XSD_ERRORS.slice(0, 5)).toEqual(["EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT"]);
    expect(XSD_ERRORS.at(-1)).toBe("EPERM");
    expect(XSD_ERRORS).toHaveLength(16);
  });

  it("reassembles messages split anywhere, and refuses a header announcing more than 4096 bytes", () => {
    const a = encodeXsMessage({ type: XsType.WRITE, reqId: 1, txId: 0, payload: enc.encode("/x\0value") });
    const b = encodeXsMessage({ type: XsType.READ, reqId: 2, txId: 0, payload: xsStrings("/x") });
    const all = new Uint8Array([...a, ...b]);
    for (let cut = 0; cut <= all.length; cut++) {
      const r = new XsMessageReader();
      const got = [...r.push(all.subarray(0, cut)), ...r.push(all.subarray(cut))];
      expect(got.map((m) => [m.type, m.reqId])).toEqual([
        [XsType.WRITE, 1],
        [XsType.READ, 2],
      ]);
      expect(r.pending).toBe(0);
    }
    const r = new XsMessageReader();
    const hdr = new Uint8Array(16);
    new DataView(hdr.buffer).setUint32(12, 4097, true);
    expect(() => r.push(hdr)).toThrow(XsProtocolError);
    // Exactly 4096 is allowed (XENSTORE_PAYLOAD_MAX).
    const max = encodeXsMessage({ type: XsType.WRITE, reqId: 3, txId: 0, payload: new Uint8Array(4096) });
    expect(new XsMessageReader().push(max)).toHaveLength(1);
  });
});

/** A connection whose replies are collected. */
function conn(dom = 0, store = new XenStore()) {
  const daemon = new Xenstored(store);
  const out: XsMessage[] = [];
  const reader = new XsMessageReader();
  const c = daemon.connect(dom, (b) => out.push(...reader.push(b)));
  let req = 0;
  const ask = (type: number, payload: Uint8Array | string[], txId = 0) => {
    const p = Array.isArray(payload) ? xsStrings(...payload) : payload;
    c.handle({ type, reqId: ++req, txId, payload: p });
    const m = out.shift()!;
    expect(m.reqId).toBe(req);
    return { type: m.type, text: dec.decode(m.payload), parts: splitXsPayload(m.payload) };
  };
  return { store, c, out, ask };
}

describe("xenstored requests over the wire", () => {
  it("answers each request type in xenstored's payload format", () => {
    const { ask } = conn();
    expect(ask(XsType.WRITE, enc.encode("/a/b\0v1"))).toEqual({
      type: XsType.WRITE,
      text: "OK\0",
      parts: ["OK"],
    });
    expect(ask(XsType.READ, ["/a/b"]).text).toBe("v1"); // no trailing NUL
    expect(ask(XsType.MKDIR, ["/a/c"]).text).toBe("OK\0");
    expect(ask(XsType.DIRECTORY, ["/a"]).text).toBe("b\0c\0");
    expect(ask(XsType.DIRECTORY, ["/a/c"]).text).toBe(""); // no children: empty payload
    expect(ask(XsType.SET_PERMS, ["/a/b", "n0", "r1", "b2"]).text).toBe("OK\0");
    expect(ask(XsType.GET_PERMS, ["/a/b"]).text).toBe("n0\0r1\0b2\0");
    expect(ask(XsType.GET_DOMAIN_PATH, ["3"]).text).toBe("/local/domain/3\0");
    expect(ask(XsType.IS_DOMAIN_INTRODUCED, ["0"]).text).toBe("T\0");
    expect(ask(XsType.RM, ["/a"]).text).toBe("OK\0");
    expect(ask(XsType.RM, ["/a/b"])).toMatchObject({ type: XsType.ERROR, text: "ENOENT\0" }); // parent gone too
    expect(ask(XsType.RM, ["/a"]).text).toBe("OK\0"); // gone, but its parent exists: not an error
    expect(ask(XsType.CONTROL, ["print", "hello"]).text).toBe("OK\0");
  });

  it("answers bad requests with the xsd_errors name and stays usable", () => {
    const { ask } = conn();
    expect(ask(XsType.READ, enc.encode("/no-nul")).text).toBe("EINVAL\0");
    expect(ask(XsType.READ, ["/a", "b"]).text).toBe("EINVAL\0"); // two strings where one is expected
    expect(ask(XsType.READ, ["bad//path"]).text).toBe("EINVAL\0");
    expect(ask(XsType.READ, ["/missing"]).text).toBe("ENOENT\0");
    expect(ask(99, ["x"]).text).toBe("ENOSYS\0");
    expect(ask(XsType.WATCH_EVENT, ["/a", "t"]).text).toBe("EINVAL\0");
    expect(ask(XsType.TRANSACTION_END, ["T"], 12345).text).toBe("ENOENT\0");
    expect(ask(XsType.TRANSACTION_END, ["X"], 1).text).toBe("EINVAL\0");
    expect(ask(XsType.SET_PERMS, ["/local", "x9"]).text).toBe("EINVAL\0");
    expect(ask(XsType.GET_DOMAIN_PATH, ["dom"]).text).toBe("EINVAL\0");
    expect(ask(XsType.WRITE, enc.encode("/ok\0fine")).text).toBe("OK\0");
  });

  it("keeps domain management to privileged connections", () => {
    const store = new XenStore();
    const guest = conn(1, store);
    for (const [type, args] of [
      [XsType.INTRODUCE, ["5", "100", "3"]],
      [XsType.RELEASE, ["5"]],
      [XsType.RESUME, ["5"]],
      [XsType.SET_TARGET, ["5", "6"]],
      [XsType.IS_DOMAIN_INTRODUCED, ["5"]],
      [XsType.CONTROL, ["check"]],
    ] as const) {
      expect(guest.ask(type, [...args]).text).toBe("EACCES\0");
    }
    const dom0 = conn(0, store);
    expect(dom0.ask(XsType.INTRODUCE, ["5", "100", "3"]).text).toBe("OK\0");
    expect(dom0.ask(XsType.IS_DOMAIN_INTRODUCED, ["5"]).text).toBe("T\0");
    expect(dom0.ask(XsType.RESUME, ["5"]).text).toBe("OK\0");
    expect(dom0.ask(XsType.RESUME, ["6"]).text).toBe("ENOENT\0");
    expect(dom0.ask(XsType.INTRODUCE, ["0", "1", "1"]).text).toBe("EINVAL\0");
    // SET_TARGET: domain 6 (a device model's stub domain) acts on domain 5's nodes as domain 5.
    expect(dom0.ask(XsType.INTRODUCE, ["6", "101", "4"]).text).toBe("OK\0");
    dom0.ask(XsType.WRITE, enc.encode("/local/domain/5/dm\0x"));
    dom0.ask(XsType.SET_PERMS, ["/local/domain/5/dm", "n5"]);
    const stub = conn(6, store);
    expect(stub.ask(XsType.READ, ["/local/domain/5/dm"]).text).toBe("EACCES\0");
    expect(dom0.ask(XsType.SET_TARGET, ["6", "5"]).text).toBe("OK\0");
    expect(stub.ask(XsType.READ, ["/local/domain/5/dm"]).text).toBe("x");
    expect(dom0.ask(XsType.RELEASE, ["5"]).text).toBe("OK\0");
    expect(dom0.ask(XsType.RELEASE, ["5"]).text).toBe("ENOENT\0");
  });

  it("pages a long directory with XS_DIRECTORY_PART: generation, names from the offset, a final NUL", () => {
    const { ask, store } = conn();
    const d0 = store.connect(0);
    const names = Array.from({ length: 400 }, (_, i) => `n${String(i).padStart(20, "0")}`);
    for (const n of names) d0.write(`/big/${n}`, "");
    expect(ask(XsType.DIRECTORY, ["/big"]).text).toBe("E2BIG\0");
    const got: string[] = [];
    let off = 0;
    let gen: string | undefined;
    for (;;) {
      const r = ask(XsType.DIRECTORY_PART, ["/big", String(off)]);
      expect(r.type).toBe(XsType.DIRECTORY_PART);
      const [g, ...rest] = r.text.split("\0");
      gen ??= g;
      expect(g).toBe(gen); // the list did not change between parts
      const done = r.text.endsWith("\0\0");
      const part = rest.filter(Boolean);
      got.push(...part);
      off += part.reduce((n, s) => n + s.length + 1, 0);
      if (done) break;
    }
    expect(got).toEqual(names);
    // A change to the directory changes its generation.
    d0.write("/big/another", "");
    expect(ask(XsType.DIRECTORY_PART, ["/big", "0"]).parts[0]).not.toBe(gen);
  });

  it("reports watch events relative to the home when the watch was set with a relative path", async () => {
    const store = new XenStore();
    const d0 = store.connect(0);
    d0.mkdir("/local/domain/1");
    d0.setPerms("/local/domain/1", [{ dom: 1, perm: "n" }]);
    const { ask, out } = conn(1, store);
    expect(ask(XsType.WATCH, ["device", "rel"]).text).toBe("OK\0");
    expect(ask(XsType.WATCH, ["/local/domain/1/device", "abs"]).text).toBe("OK\0");
    expect(ask(XsType.WATCH, ["device", "rel"]).text).toBe("EEXIST\0");
    await tick();
    out.length = 0;
    d0.write("/local/domain/1/device/x", "1");
    await tick();
    expect(out.map((m) => [m.type, m.reqId, m.txId, dec.decode(m.payload)])).toEqual([
      [XsType.WATCH_EVENT, 0, 0, "device/x\0rel\0"],
      [XsType.WATCH_EVENT, 0, 0, "/local/domain/1/device/x\0abs\0"],
    ]);
    out.length = 0;
    expect(ask(XsType.RESET_WATCHES, [""]).text).toBe("OK\0");
    d0.write("/local/domain/1/device/y", "1");
    await tick();
    expect(out).toEqual([]);
  });
});
