// NBD URLs as the NBD URI standard (NetworkBlockDevice/nbd doc/uri.md) writes them: the export name is the
// path without its leading '/', percent-decoded; TCP defaults to port 10809; nbd+unix needs ?socket=; TLS
// schemes and parameters are refused, since xenide does not speak TLS.
import { describe, expect, it } from "vitest";

import { ImageError } from "../../../src/storage/errors.ts";
import {
  formatNbdAddress,
  isNbdUrl,
  NBD_DEFAULT_PORT,
  NbdError,
  parseNbdUrl,
  parseQemuNbdFilename,
} from "../../../src/storage/nbd/url.ts";

describe("NBD URLs", () => {
  it("nbd://HOST[:PORT]/EXPORT: host, port (10809 by default) and export name as uri.md's table", () => {
    expect(NBD_DEFAULT_PORT).toBe(10809);
    expect(parseNbdUrl("nbd://example.com/disk")).toEqual({
      target: { transport: "tcp", host: "example.com", port: 10809 },
      exportName: "disk",
    });
    expect(parseNbdUrl("nbd://127.0.0.1:10810/").target).toEqual({
      transport: "tcp",
      host: "127.0.0.1",
      port: 10810,
    });
    // uri.md's examples: empty path and "/" name the default export; "//disk" names "/disk"; %20 decodes.
    expect(parseNbdUrl("nbd://example.com").exportName).toBe("");
    expect(parseNbdUrl("nbd://example.com/").exportName).toBe("");
    expect(parseNbdUrl("nbd://example.com//disk").exportName).toBe("/disk");
    expect(parseNbdUrl("nbd://example.com/hello%20world").exportName).toBe("hello world");
    expect(parseNbdUrl("nbd://[::1]:9000/x").target).toEqual({ transport: "tcp", host: "::1", port: 9000 });
  });

  it("nbd+unix:///EXPORT?socket=PATH", () => {
    expect(parseNbdUrl("nbd+unix:///disk?socket=/run/nbd.sock")).toEqual({
      target: { transport: "unix", path: "/run/nbd.sock" },
      exportName: "disk",
    });
    expect(parseNbdUrl("nbd+unix:///?socket=rel/nbd.sock").target).toEqual({
      transport: "unix",
      path: "rel/nbd.sock",
    });
  });

  it("round-trips through formatNbdAddress", () => {
    for (const u of [
      "nbd://example.com/disk",
      "nbd://127.0.0.1:10810/",
      "nbd://[::1]:9000/x",
      "nbd+unix:///disk?socket=/run/nbd.sock",
      "nbd://h//disk",
    ]) {
      expect(formatNbdAddress(parseNbdUrl(u))).toBe(u);
    }
    expect(formatNbdAddress(parseNbdUrl("nbd://h:10809/a%20b"))).toBe("nbd://h/a%20b");
  });

  it("refuses TLS and malformed URLs with one line, as an ImageError the CLI reports", () => {
    const cases: [string, RegExp][] = [
      ["nbds://example.com/disk", /TLS \(nbds:\/\/\) is not supported/],
      ["nbds+unix:///disk?socket=/s", /TLS \(nbds\+unix:\/\/\) is not supported/],
      ["nbd://example.com/disk?tls-type=x509", /tls-type asks for TLS/],
      ["nbd+unix:///disk", /needs \?socket=PATH/],
      ["nbd+unix://host/disk?socket=/s", /have no host/],
      ["nbd+unix:///disk?socket=/s&other=1", /unknown query parameter other/],
      ["nbd://user@example.com/disk", /user information/],
      ["nbd:///disk", /needs a host/],
      ["nbd://example.com/%zz", /percent-encoding/],
      ["nbd://example.com:99999/", /not a valid NBD URL/],
    ];
    for (const [url, message] of cases) {
      let err: unknown;
      try {
        parseNbdUrl(url);
      } catch (e) {
        err = e;
      }
      expect(err, url).toBeInstanceOf(NbdError);
      expect(err, url).toBeInstanceOf(ImageError);
      expect((err as NbdError).reason).toBe("url");
      expect((err as NbdError).message).toMatch(message);
      expect((err as NbdError).message).not.toContain("\n");
    }
  });

  it("tells NBD URLs from paths", () => {
    expect(isNbdUrl("nbd://h/x")).toBe(true);
    expect(isNbdUrl("NBD+UNIX:///x?socket=s")).toBe(true);
    expect(isNbdUrl("nbds://h/x")).toBe(true);
    expect(isNbdUrl("disk.img")).toBe(false);
    expect(isNbdUrl("./nbd://x")).toBe(false);
    expect(isNbdUrl("http://h/x")).toBe(false);
  });

  it("QEMU's older nbd: file names (block/nbd.c): unix socket or host and port, then :exportname=", () => {
    expect(parseQemuNbdFilename("nbd:unix:/run/nbd.sock")).toEqual({
      target: { transport: "unix", path: "/run/nbd.sock" },
      exportName: "",
    });
    expect(parseQemuNbdFilename("nbd:unix:/run/nbd.sock:exportname=disk")).toEqual({
      target: { transport: "unix", path: "/run/nbd.sock" },
      exportName: "disk",
    });
    expect(parseQemuNbdFilename("nbd:localhost:10810:exportname=a:b")).toEqual({
      target: { transport: "tcp", host: "localhost", port: 10810 },
      exportName: "a:b",
    });
    expect(parseQemuNbdFilename("nbd:[::1]:10809")?.target).toEqual({
      transport: "tcp",
      host: "::1",
      port: 10809,
    });
    expect(formatNbdAddress(parseQemuNbdFilename("nbd:unix:/s:exportname=d")!)).toBe(
      "nbd+unix:///d?socket=/s",
    );
    expect(parseQemuNbdFilename("disk.img")).toBeNull();
    expect(parseQemuNbdFilename("nbd://h/x")).toBeNull();
    expect(() => parseQemuNbdFilename("nbd:hostonly")).toThrow(/expected nbd:HOST:PORT/);
    expect(() => parseQemuNbdFilename("nbd:h:70000")).toThrow(/out of range/);
    expect(() => parseQemuNbdFilename("nbd:unix:")).toThrow(/needs a socket path/);
  });
});
