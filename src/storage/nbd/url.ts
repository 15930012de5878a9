/**
 * NBD URLs as the NBD URI standard (NetworkBlockDevice/nbd, doc/uri.md) and QEMU write them:
 *
 *   nbd://HOST[:PORT]/EXPORT           TCP (port 10809 by default, IPv6 literals in brackets)
 *   nbd+unix:///EXPORT?socket=PATH     a Unix domain socket
 *
 * The export name is the path without its leading '/', percent-decoded ("nbd://h//disk" names "/disk"; an empty
 * path names the server's default export). `nbds` and `nbds+unix` ask for TLS, which xenide does not speak: they
 * are refused with a clear message rather than connected in the clear.
 */
import { ImageError } from "../errors.ts";

/** The IANA port of NBD (uri.md: "If the port field is not present then it MUST default to ... 10809"). */
export const NBD_DEFAULT_PORT = 10809;

export type NbdTarget =
  | { readonly transport: "tcp"; readonly host: string; readonly port: number }
  | { readonly transport: "unix"; readonly path: string };

export interface NbdAddress {
  readonly target: NbdTarget;
  readonly exportName: string;
}

/** Why an NBD medium could not be opened; `reason` lets callers branch without parsing the text. */
export type NbdFailure =
  | "url" // the URL is malformed or asks for something unsupported (TLS)
  | "connect" // the socket could not be connected
  | "timeout" // the server did not answer in time
  | "protocol" // the peer does not speak NBD as the client needs (oldstyle, bad magic, bad reply)
  | "tls" // the server requires TLS
  | "export" // the server has no such export, or refused it
  | "closed"; // the server closed the connection during the handshake

/** Opening an NBD medium failed: an `ImageError` ("EOPEN"), so every front end reports it as one line. */
export class NbdError extends ImageError {
  constructor(
    readonly reason: NbdFailure,
    message: string,
    url?: string,
  ) {
    super("EOPEN", message, url);
    this.name = "NbdError";
  }
}

/** Whether `s` is written as an NBD URL (the opener's test before it parses one). */
export function isNbdUrl(s: string): boolean {
  return /^nbds?(\+unix)?:\/\//i.test(s);
}

/** Parse an NBD URL; throws `NbdError` ("url") with one line saying what is wrong. */
export function parseNbdUrl(s: string): NbdAddress {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new NbdError(
      "url",
      `${s} is not a valid NBD URL (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)`,
      s,
    );
  }
  const scheme = u.protocol.slice(0, -1).toLowerCase();
  if (scheme === "nbds" || scheme === "nbds+unix")
    throw new NbdError(
      "url",
      `${s}: TLS (${scheme}://) is not supported; xenide speaks NBD in the clear only`,
      s,
    );
  if (scheme !== "nbd" && scheme !== "nbd+unix")
    throw new NbdError("url", `${s} is not an NBD URL (nbd:// or nbd+unix://)`, s);
  if (u.username || u.password)
    throw new NbdError("url", `${s}: user information is only used by TLS, which is not supported`, s);
  let exportName: string;
  try {
    exportName = decodeURIComponent(u.pathname.replace(/^\//, ""));
  } catch {
    throw new NbdError("url", `${s}: the export name is not valid percent-encoding`, s);
  }
  if (exportName.includes("\0")) throw new NbdError("url", `${s}: an export name cannot contain NUL`, s);
  if (new TextEncoder().encode(exportName).length > 4096)
    throw new NbdError("url", `${s}: the export name is longer than 4096 bytes (proto.md's limit)`, s);

  const params = [...u.searchParams.keys()];
  if (scheme === "nbd+unix") {
    if (u.host !== "")
      throw new NbdError("url", `${s}: nbd+unix URLs have no host (nbd+unix:///EXPORT?socket=PATH)`, s);
    const path = u.searchParams.get("socket");
    if (!path) throw new NbdError("url", `${s}: nbd+unix needs ?socket=PATH`, s);
    const unknown = params.filter((k) => k !== "socket");
    if (unknown.length > 0) throw new NbdError("url", `${s}: unknown query parameter ${unknown[0]}`, s);
    return { target: { transport: "unix", path }, exportName };
  }
  if (u.hostname === "") throw new NbdError("url", `${s}: nbd:// needs a host (nbd://HOST[:PORT]/EXPORT)`, s);
  if (params.length > 0) {
    const tls = params.find((k) => k.startsWith("tls"));
    throw new NbdError(
      "url",
      tls
        ? `${s}: ${tls} asks for TLS, which is not supported`
        : `${s}: unknown query parameter ${params[0]}`,
      s,
    );
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = u.port === "" ? NBD_DEFAULT_PORT : Number(u.port);
  return { target: { transport: "tcp", host, port }, exportName };
}

/** The URL of an address, as a user would write it (for `describe` and messages). */
export function formatNbdAddress(a: NbdAddress): string {
  const name = encodeURIComponent(a.exportName).replace(/%2F/g, "/");
  if (a.target.transport === "unix") return `nbd+unix:///${name}?socket=${a.target.path}`;
  const host = a.target.host.includes(":") ? `[${a.target.host}]` : a.target.host;
  return `nbd://${host}${a.target.port === NBD_DEFAULT_PORT ? "" : `:${a.target.port}`}/${name}`;
}

/**
 * QEMU's older NBD file names (block/nbd.c, `nbd_parse_filename`), as `-drive file=` still takes them:
 * `nbd:unix:PATH[:exportname=NAME]` and `nbd:HOST:PORT[:exportname=NAME]` (an IPv6 host in brackets). Returns
 * null for a name that does not start with `nbd:` or is a URL (`parseNbdUrl` takes those).
 */
export function parseQemuNbdFilename(s: string): NbdAddress | null {
  if (!s.startsWith("nbd:") || s.startsWith("nbd://")) return null;
  let rest = s.slice(4);
  let exportName = "";
  const at = rest.indexOf(":exportname=");
  if (at >= 0) {
    exportName = rest.slice(at + ":exportname=".length);
    rest = rest.slice(0, at);
  }
  if (rest.startsWith("unix:")) {
    const path = rest.slice(5);
    if (path === "") throw new NbdError("url", `${s}: nbd:unix: needs a socket path`, s);
    return { target: { transport: "unix", path }, exportName };
  }
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(rest);
  if (!m)
    throw new NbdError("url", `${s}: expected nbd:HOST:PORT or nbd:unix:PATH (then :exportname=NAME)`, s);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new NbdError("url", `${s}: port ${m[2]} is out of range`, s);
  return { target: { transport: "tcp", host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port }, exportName };
}
