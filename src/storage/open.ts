/**
 * The one way an image is opened by name: `openMedium(pathOrUrl, options)` returns the `BlockBackend` for a
 * raw or qcow2 file (and is where network media plug in, by URL scheme). The machine builder, the CLI and
 * backing chains all come through here, so every path sees the same formats.
 *
 * Format probing follows QEMU's bdrv_open: with no format given, a file that starts with the qcow2 magic and a
 * version of 2 or more is qcow2, anything else raw. As QEMU does for an image it probed as raw ("probing
 * guessed raw", block/raw-format.c), a guest may then not write a first sector that would make the image probe
 * as qcow2 on its next open: that would let a guest turn its raw disk into a qcow2 image naming any host file
 * as its backing file. Naming the format (`format: "raw"`) lifts the restriction, as `format=raw` does in QEMU.
 */
import { closeSync, openSync, readSync, realpathSync } from "node:fs";

import { ImageError } from "./errors.ts";
import { NbdBackend, type NbdOptions } from "./nbd/backend.ts";
import { isNbdUrl } from "./nbd/url.ts";
import { ImageFormatError, looksLikeQcow2 } from "./qcow2/format.ts";
import { Qcow2Backend } from "./qcow2/image.ts";
import { RawImageBackend } from "./raw.ts";
import { type BlockBackend, type IoCallback, IoError, type MediumRequest } from "./types.ts";

export const IMAGE_FORMATS = ["raw", "qcow2"] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

export function isImageFormat(s: string): s is ImageFormat {
  return (IMAGE_FORMATS as readonly string[]).includes(s);
}

export interface OpenMediumOptions {
  /** The image's format; absent, it is probed as QEMU probes (see above). */
  format?: ImageFormat;
  /** Open read-only: writes and discards fail with EROFS. A backing image is always read-only. */
  readOnly?: boolean;
  /** Bypass the host page cache (O_DIRECT) for guest data; backing images are read through the cache. */
  direct?: boolean;
  /** Lock the image (default true), as `RawImageOptions.lock`; the backing chain is locked for reading. */
  lock?: boolean;
  /** For an NBD URL: write-through (FUA), discard mode, timeout (`NbdOptions`; `readOnly` comes from above). */
  nbd?: Omit<NbdOptions, "readOnly">;
}

/** A URL naming a network medium rather than a file: `scheme://...`. */
const URL_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

/** Open the image (or, by URL, the network medium) at `target`. Throws `ImageError` subclasses. */
export function openMedium(target: string, options: OpenMediumOptions = {}): BlockBackend {
  return openAt(target, options, 0, []);
}

/** `chain`: the real paths of the images above this one, to refuse a backing chain that loops. */
function openAt(target: string, options: OpenMediumOptions, depth: number, chain: string[]): BlockBackend {
  const scheme = URL_SCHEME.exec(target)?.[1]?.toLowerCase();
  if (scheme !== undefined) {
    // Network media (nbd://, nbd+unix://) are opened here, by scheme.
    if (isNbdUrl(target)) {
      // The export is a disk: the server (qemu-nbd -f qcow2, say) decodes any image format behind it.
      if (options.format === "qcow2")
        throw new ImageError(
          "EOPEN",
          `${target}: qcow2 over NBD is not supported; serve the image as qcow2 instead (qemu-nbd -f qcow2)`,
          target,
        );
      return NbdBackend.open(target, { ...options.nbd, readOnly: options.readOnly ?? false });
    }
    throw new ImageError("EOPEN", `${target}: unsupported URL scheme ${scheme}://`, target);
  }
  const real = realPath(target);
  if (chain.includes(real)) {
    throw new ImageFormatError(
      "bad-header",
      `${chain[chain.length - 1]}: the backing chain loops back to ${real}`,
      target,
    );
  }
  const format = options.format ?? probeFormat(target);
  if (format === "qcow2") {
    return Qcow2Backend.open(target, {
      readOnly: options.readOnly ?? false,
      lock: options.lock ?? true,
      ...(options.direct !== undefined ? { direct: options.direct } : {}),
      depth,
      openBacking: (name, fmt, d) =>
        openAt(name, { ...(fmt ? { format: fmt } : {}), readOnly: true, lock: options.lock ?? true }, d, [
          ...chain,
          real,
        ]),
    });
  }
  const raw = RawImageBackend.open(target, {
    readOnly: options.readOnly ?? false,
    ...(options.direct !== undefined ? { direct: options.direct } : {}),
    ...(options.lock !== undefined ? { lock: options.lock } : {}),
  });
  return options.format === undefined && !raw.readOnly ? guardProbedRaw(raw) : raw;
}

function realPath(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

/**
 * The format of the image file at `file` as QEMU would probe it: qcow2 when it starts with the qcow2 magic
 * and a version of 2 or more, else raw. A file that cannot be read probes as raw (opening it then says why).
 */
export function probeFormat(file: string): ImageFormat {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return "raw";
  }
  try {
    const head = new Uint8Array(8);
    const n = readSync(fd, head, 0, 8, 0);
    return looksLikeQcow2(head.subarray(0, n)) ? "qcow2" : "raw";
  } catch {
    return "raw";
  } finally {
    closeSync(fd);
  }
}

/**
 * The raw image with writes of a first sector that would probe as qcow2 refused (QEMU's raw_check_write for a
 * probed image). Everything else is the raw backend's own, `startIo` included.
 */
function guardProbedRaw(raw: RawImageBackend): RawImageBackend {
  const refused = (sector: number, bufs: readonly Uint8Array[]): IoError | undefined => {
    if (sector !== 0 || bufs.length === 0 || !looksLikeQcow2(bufs[0]!)) return undefined;
    return new IoError(
      "EINVAL",
      `${raw.describe}: refusing to write a qcow2 header into sector 0 of an image whose format was probed as raw ` +
        `(name the format raw to allow it)`,
      0,
    );
  };
  return Object.create(raw, {
    write: {
      value(this: RawImageBackend, sector: number, bufs: readonly Uint8Array[]): void {
        const err = refused(sector, bufs);
        if (err) throw err;
        raw.write.call(this, sector, bufs);
      },
    },
    startIo: {
      value(this: RawImageBackend, req: MediumRequest, done: IoCallback): void {
        const err = req.op === "write" ? refused(req.sector, req.bufs) : undefined;
        if (err) {
          void Promise.resolve().then(() => done(err));
          return;
        }
        raw.startIo.call(this, req, done);
      },
    },
  }) as RawImageBackend;
}
