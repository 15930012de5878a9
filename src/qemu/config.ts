/**
 * From QEMU's options to what xenide builds: the machine (drives at IDE positions, RAM, the compatibility
 * profile), the qtest and QMP character devices, and for each drive the names QEMU would give it (the
 * BlockBackend name in QMP and HMP, the node name, the qdev id). Every option either maps onto something xenide
 * does or is refused with one line naming it; nothing that changes behaviour is silently dropped.
 */

import { MAX_GUEST_RAM } from "../hypervisor/memory.ts";
import { COMPAT_PROFILES, type CompatProfile } from "../ide/compat.ts";
import { IDE_POSITIONS, type IdePosition } from "../machine/description.ts";
import {
  BlkdebugConfigError,
  type BlkdebugRule,
  parseBlkdebugFilename,
  readBlkdebugConfig,
} from "../storage/blkdebug.ts";
import { formatNbdAddress, NbdError, parseQemuNbdFilename } from "../storage/nbd/index.ts";
import { type ImageFormat, isImageFormat } from "../storage/open.ts";
import { fileIdentity } from "../storage/image.ts";
import {
  type CommandLineOption,
  type QemuOpts,
  QemuUsageError,
  parseMemSize,
  parseOpts,
  splitCommandLine,
} from "./opts.ts";
import { type TracePlan, TraceOptions } from "./trace-opts.ts";

/** An image to open (and close) before the machine is built, to fail where QEMU fails on it. */
export interface ImageCheck {
  /** The option that named it, for the error line. */
  readonly option: string;
  readonly image: string;
  readonly format: ImageFormat | undefined;
  readonly readOnly: boolean;
  readonly direct: boolean;
}

/** QEMU's BlockdevOnError. */
export const ON_ERROR = ["report", "ignore", "stop", "enospc"] as const;
export type OnError = (typeof ON_ERROR)[number];

/** A character device the launcher opens: a unix socket (as a client, or listening) or its own stdio. */
export interface ChardevSpec {
  readonly id: string;
  readonly kind: "socket" | "stdio";
  readonly path?: string;
  /** Listen (server=on) instead of connecting. */
  readonly server: boolean;
  /** With server=on: wait for the first client before going on (QEMU's default). */
  readonly wait: boolean;
  /** The option that made it, as written ("-qmp unix:/tmp/q,server=on"): QEMU's messages about it lead with it. */
  readonly origin?: string;
}

/** A medium as the block layer stack names it: an image, possibly under blkdebug. */
interface Medium {
  /** The option that names its image (the -drive, or the -blockdev of its file or nbd node): errors lead with it. */
  option: string;
  /** A file name or an NBD URL (QEMU's `nbd:unix:PATH` form is turned into one). */
  image: string;
  /** The image format; undefined: probed as QEMU probes an image given without format=. */
  format: ImageFormat | undefined;
  readOnly: boolean;
  direct: boolean;
  /** cache.no-flush=on on this node or one below it (-blockdev; -drive says it with cache=unsafe). */
  noFlush?: boolean;
  blkdebug: BlkdebugRule[] | null;
  nodeName: string;
}

/** A drive on the IDE channels, as QEMU's ide-hd or ide-cd device on a BlockBackend. */
export interface PlannedDrive {
  readonly position: IdePosition;
  /** The option that names its image (for QEMU's error lines), "" for an empty tray. */
  readonly option: string;
  /** "hd" (ide-hd) or "cd" (ide-cd, an ATAPI CD-ROM drive). */
  readonly kind: "hd" | "cd";
  /** The image (a file name or an NBD URL), or null for a CD drive with an empty tray. */
  readonly image: string | null;
  /** raw or qcow2; undefined: probed. */
  readonly format: ImageFormat | undefined;
  readonly readOnly: boolean;
  readonly direct: boolean;
  readonly writeCache: boolean;
  /** cache=unsafe: the guest's flushes complete without reaching the image (QEMU's cache.no-flush). */
  readonly noFlush: boolean;
  /** Rules of a blkdebug layer over the image; null: none. */
  readonly blkdebug: BlkdebugRule[] | null;
  readonly rerror: OnError;
  readonly werror: OnError;
  /** The BlockBackend's name (`-drive id=`, or ide0-hd0 for an unnamed if=ide drive); "" when anonymous. */
  readonly blkName: string;
  readonly nodeName: string;
  /** The device's id (`-device id=`), or its QOM path when it has none. */
  readonly qdev: string;
  /** Where QEMU's query-block lists this drive's BlockBackend (ascending). */
  readonly blockOrder: number;
  /** Every name HMP's qemu-io and QMP's device arguments accept for this drive. */
  readonly names: readonly string[];
  readonly model: string | undefined;
  readonly serial: string | undefined;
  readonly firmware: string | undefined;
  /** World Wide Name (`wwn=`); undefined: none. */
  readonly wwn: bigint | undefined;
}

export interface LaunchPlan {
  readonly compat: CompatProfile;
  readonly ram: number;
  /** -S: the VM starts paused (QMP `cont` starts it). */
  readonly startPaused: boolean;
  readonly qtest: ChardevSpec | null;
  /** -qtest-log: a file, "none", or undefined (QEMU then logs to stderr). */
  readonly qtestLog: string | undefined;
  /** QMP monitors (`-mon mode=control`, `-qmp`). */
  readonly monitors: readonly ChardevSpec[];
  readonly drives: readonly PlannedDrive[];
  /**
   * Why the machine cannot start although the command line is valid, as QEMU 7.2 reports it when it realizes
   * the devices (after connecting the character devices): e.g. a hard disk on a read-only or empty drive.
   */
  readonly startError: string | null;
  /** One line each, for stderr (options accepted that do nothing here). */
  readonly warnings: readonly string[];
  /**
   * Images named on the command line that no planned drive opens (a -drive or -blockdev no device uses; all of
   * them when a device is refused): QEMU 7.2 opens every one at start-up, so one that cannot be opened fails the
   * start (with QMP connected) as a drive's image does. In command-line order, -blockdev first, as QEMU makes them.
   */
  readonly imageChecks: readonly ImageCheck[];
  /** -version / -help / -trace help was asked. */
  readonly info: "version" | "help" | "trace-help" | null;
  /** QEMU's IDE trace events the -trace options enabled (src/qemu/trace-opts.ts). */
  readonly trace: TracePlan;
  /** Where trace lines go: -trace file=, else -D, else stderr (null). */
  readonly traceFile: string | null;
}

/** A chardev spec in QEMU's compat form (`unix:PATH[,server=on][,wait=off]`, `stdio`), for -qtest and -qmp. */
export function parseChardevCompat(option: string, id: string, spec: string): ChardevSpec {
  if (spec === "stdio") return { id, kind: "stdio", server: false, wait: false };
  if (spec.startsWith("unix:")) {
    const o = parseOpts(option, spec.slice("unix:".length), "path").only(["path", "server", "wait"]);
    const path = o.get("path");
    if (!path) throw new QemuUsageError(`${option} ${spec}: a socket path is needed`);
    return socketSpec(id, path, o, `${option} ${spec}`);
  }
  throw new QemuUsageError(
    `${option} ${spec}: character device not supported by xenide (use unix:PATH[,server=on,wait=off] or stdio)`,
  );
}

/** `-chardev socket,id=ID,path=PATH[,server=on][,wait=off]` or `-chardev stdio,id=ID`. */
function parseChardev(arg: string): ChardevSpec {
  const o = parseOpts("-chardev", arg, "backend");
  const backend = o.get("backend");
  const id = o.get("id");
  if (!id) throw new QemuUsageError("-chardev: Parameter 'id' is missing");
  if (backend === "stdio") {
    o.only(["backend", "id", "signal", "mux"]);
    if (o.bool("mux", false)) throw new QemuUsageError("-chardev mux=on: not supported by xenide");
    return { id, kind: "stdio", server: false, wait: false };
  }
  if (backend !== "socket")
    throw new QemuUsageError(
      `-chardev ${backend ?? ""}: chardev backend not supported by xenide (socket, stdio)`,
    );
  o.only(["backend", "id", "path", "server", "wait", "reconnect"]);
  const path = o.get("path");
  if (!path) throw new QemuUsageError("-chardev socket: only unix sockets (path=) are supported by xenide");
  return socketSpec(id, path, o, `-chardev ${arg}`);
}

/** A unix socket chardev: a client unless server=on; a server waits for its first client unless wait=off. */
function socketSpec(id: string, path: string, o: QemuOpts, origin: string): ChardevSpec {
  return { id, kind: "socket", path, server: o.bool("server", false), wait: o.bool("wait", true), origin };
}

function onError(o: QemuOpts, key: "rerror" | "werror"): OnError {
  const v = o.get(key) ?? (key === "rerror" ? "report" : "enospc");
  if (!(ON_ERROR as readonly string[]).includes(v))
    throw new QemuUsageError(
      `${o.option}: '${v}' invalid ${key === "rerror" ? "read" : "write"} error action`,
    );
  if (key === "rerror" && v === "enospc")
    throw new QemuUsageError(`${o.option}: enospc is not supported as read error action`);
  return v as OnError;
}

/** -drive cache=: (direct, write cache on, flushes ignored), as QEMU's cache modes set them. */
function cacheMode(o: QemuOpts): { direct: boolean; writeCache: boolean; noFlush: boolean } {
  const v = o.get("cache") ?? "writeback";
  switch (v) {
    case "writeback":
      return { direct: false, writeCache: true, noFlush: false };
    case "unsafe":
      return { direct: false, writeCache: true, noFlush: true };
    case "none":
      return { direct: true, writeCache: true, noFlush: false };
    case "writethrough":
      return { direct: false, writeCache: false, noFlush: false };
    case "directsync":
      return { direct: true, writeCache: false, noFlush: false };
    default:
      throw new QemuUsageError(`${o.option}: invalid cache option`);
  }
}

/** A medium from a file name, with QEMU's `blkdebug:[CONF]:FILE` prefix. */
function mediumFromFile(
  option: string,
  file: string,
  format: ImageFormat | undefined,
  readOnly: boolean,
  direct: boolean,
  node: string,
): Medium {
  let parsed: { config: string; image: string } | null;
  try {
    parsed = parseBlkdebugFilename(file);
  } catch (e) {
    throw new QemuUsageError(`${option}: ${(e as Error).message}`);
  }
  if (!parsed)
    return { option, image: nbdName(option, file), format, readOnly, direct, blkdebug: null, nodeName: node };
  let rules: BlkdebugRule[] = [];
  if (parsed.config !== "") rules = readRules(option, parsed.config);
  return {
    option,
    image: nbdName(option, parsed.image),
    format,
    readOnly,
    direct,
    blkdebug: rules,
    nodeName: node,
  };
}

/** QEMU's legacy `nbd:unix:PATH[:exportname=E]` / `nbd:HOST:PORT` file names, as the NBD URL xenide opens. */
function nbdName(option: string, file: string): string {
  try {
    const legacy = parseQemuNbdFilename(file);
    return legacy ? formatNbdAddress(legacy) : file;
  } catch (e) {
    if (e instanceof NbdError) throw new QemuUsageError(`${option}: ${e.message}`);
    throw e;
  }
}

/** `format=`: raw or qcow2 (absent: probed, as QEMU does). */
function formatOpt(option: string, format: string | undefined): ImageFormat | undefined {
  if (format === undefined) return undefined;
  if (!isImageFormat(format))
    throw new QemuUsageError(
      `${option}: only raw and qcow2 images are supported by xenide (format=${format})`,
    );
  return format;
}

function readRules(option: string, path: string): BlkdebugRule[] {
  try {
    return readBlkdebugConfig(path);
  } catch (e) {
    if (e instanceof BlkdebugConfigError) throw new QemuUsageError(`${option}: ${e.message}`);
    throw e;
  }
}

interface DriveOpt {
  opts: QemuOpts;
  /** null: no file= (an empty drive: a CD drive's empty tray; a hard disk refuses to start on it, as QEMU's). */
  medium: Medium | null;
  id: string;
  /** if=ide: the position it asked for (index, or bus/unit), else null (first free). */
  ide: { index: number | null } | null;
  cdrom: boolean;
  used: boolean;
  writeCache: boolean;
  noFlush: boolean;
  rerror: OnError;
  werror: OnError;
}

interface DeviceOpt {
  opts: QemuOpts;
  driver: "ide-hd" | "ide-cd";
  drive: DriveOpt | null;
  /** null: an ide-cd without a drive (empty tray). */
  medium: Medium | null;
  position: IdePosition | null;
  bus: number | null;
}

/** Properties `-global ide-hd.*` and `-device ide-hd` accept. */
const IDE_HD_PROPS = ["serial", "model", "ver", "wwn", "write-cache"] as const;

/**
 * A uint64 property as QEMU 7.2's option parser reads it (qemu_strtou64, base 0: decimal, 0x hex or 0 octal, with
 * leading blanks and strtoull's wrap of a minus sign), e.g. `wwn=0x5000c50015ea71ac`; anything else, or a value
 * past 64 bits, is the error QEMU gives ("Parameter 'wwn' expects integer", observed).
 */
function parseU64(option: string, name: string, v: string, expects = "integer"): bigint {
  const m = /^\s*(-?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(v);
  const digits = m?.[2] ?? "";
  const n = m ? (/^0[0-7]+$/.test(digits) ? BigInt(`0o${digits.slice(1)}`) : BigInt(digits)) : -1n;
  if (n < 0n || n > 0xffffffffffffffffn)
    throw new QemuUsageError(`${option}: Parameter '${name}' expects ${expects}`);
  return m?.[1] === "-" ? BigInt.asUintN(64, -n) : n;
}

/** Turn a command line (argv without the program name) into what the launcher builds. */
export function planLaunch(argv: readonly string[]): LaunchPlan {
  const opts = splitCommandLine(argv);
  let compat: CompatProfile = "qemu-7.2";
  let ram = 128 * 1024 * 1024; // QEMU's default -m
  let startPaused = false;
  let qtest: ChardevSpec | null = null;
  let qtestLog: string | undefined;
  const chardevs = new Map<string, ChardevSpec>();
  const monitors: ChardevSpec[] = [];
  const warnings: string[] = [];
  /** The first -global QEMU would refuse when it applies it to a device (reported as a device's error). */
  let globalError: string | null = null;
  const drives: DriveOpt[] = [];
  const nodes = new Map<string, Medium>();
  const devices: QemuOpts[] = [];
  let defaults = true;
  const globals = new Map<string, string>();
  /** Each global as QEMU names it when it cannot apply one (`ide-hd.wwn=1e3`). */
  const globalText = new Map<string, string>();
  let info: LaunchPlan["info"] = null;
  let autoNode = 0;
  const trace = new TraceOptions(warnings);
  let logFile: string | null = null;
  const nextNode = (): string => `#block${(++autoNode * 100 + 19).toString()}`;

  const addDrive = (o: QemuOpts): void => {
    o.only([
      "file",
      "if",
      "index",
      "bus",
      "unit",
      "id",
      "media",
      "format",
      "cache",
      "readonly",
      "rerror",
      "werror",
      "aio",
      "discard",
      "node-name",
    ]);
    const file = o.get("file");
    if (!file) {
      // An empty drive takes no block-driver option (observed on QEMU 7.2, in its words).
      if (o.has("format"))
        throw new QemuUsageError(`${o.option}: A block device must be specified for "file"`);
      if (["cache", "readonly", "discard", "node-name"].some((k) => o.has(k)))
        throw new QemuUsageError(`${o.option}: Must specify either driver or file`);
    }
    const format = formatOpt(o.option, o.get("format"));
    const aio = o.get("aio");
    if (aio !== undefined && aio !== "threads")
      throw new QemuUsageError(`${o.option}: aio=${aio} is not supported by xenide (aio=threads is)`);
    const media = o.get("media") ?? "disk";
    if (media !== "disk" && media !== "cdrom")
      throw new QemuUsageError(`${o.option}: '${media}' invalid media`);
    const iface = o.get("if") ?? "ide";
    if (iface !== "ide" && iface !== "none")
      throw new QemuUsageError(`${o.option}: only if=ide and if=none are supported by xenide (if=${iface})`);
    const cache = cacheMode(o);
    // A CD is read-only whatever the option says (QEMU opens media=cdrom read-only).
    const readOnly = o.bool("readonly", false) || media === "cdrom";
    // An empty drive has no block node, so it takes no automatic node name.
    const medium = file
      ? mediumFromFile(o.option, file, format, readOnly, cache.direct, o.get("node-name") ?? nextNode())
      : null;
    let index: number | null = null;
    const idx = o.uint("index");
    const bus = o.uint("bus");
    const unit = o.uint("unit");
    if (idx !== undefined) {
      if (bus !== undefined || unit !== undefined)
        throw new QemuUsageError(`${o.option}: index cannot be used with bus and unit`);
      index = idx;
    } else if (bus !== undefined || unit !== undefined) index = (bus ?? 0) * 2 + (unit ?? 0);
    if (index !== null && index > 3)
      throw new QemuUsageError(`${o.option}: index ${index}: the PC has IDE positions 0-3 only`);
    let id = o.get("id");
    if (iface === "none" && !id) throw new QemuUsageError(`${o.option}: if=none needs id=`);
    const d: DriveOpt = {
      opts: o,
      medium,
      id: id ?? "",
      ide: iface === "ide" ? { index } : null,
      cdrom: media === "cdrom",
      used: false,
      writeCache: cache.writeCache,
      noFlush: cache.noFlush,
      rerror: onError(o, "rerror"),
      werror: onError(o, "werror"),
    };
    if (id !== undefined && drives.some((x) => x.id === id))
      throw new QemuUsageError(`${o.option}: Duplicate ID '${id}' for drive`);
    id ??= "";
    drives.push(d);
  };

  for (const { name, arg } of opts) {
    const option = `-${name}`;
    switch (name) {
      case "version":
      case "h":
      case "help":
        info = name === "version" ? "version" : "help";
        break;
      case "machine":
      case "M": {
        const o = parseOpts(option, arg, "type").only(["type", "accel"]);
        const type = o.get("type");
        if (type !== undefined && type !== "pc" && !/^pc-i440fx-/.test(type))
          throw new QemuUsageError(
            `${option} ${type}: only the pc machine (i440FX + PIIX3) is emulated by xenide`,
          );
        const accel = o.get("accel");
        if (accel !== undefined) checkAccel(option, accel);
        break;
      }
      case "accel":
        checkAccel(option, parseOpts(option, arg, "accel").only(["accel"]).get("accel") ?? "");
        break;
      case "m": {
        const o = parseOpts(option, arg, "size").only(["size"]);
        ram = parseMemSize(option, o.get("size") ?? "");
        ram = Math.ceil(ram / 4096) * 4096;
        // Guest RAM is one flat range below 4 GiB here (QEMU would put the rest above 4 GiB).
        if (ram > MAX_GUEST_RAM)
          throw new QemuUsageError(
            `${o.option}: xenide's guest RAM is at most ${MAX_GUEST_RAM / 1024}K (just under 4 GiB)`,
          );
        break;
      }
      case "display": {
        const type = parseOpts(option, arg, "type").get("type");
        if (type !== "none") throw new QemuUsageError(`${option} ${arg}: Display '${type}' is not available`);
        break;
      }
      case "nodefaults":
        // Of QEMU's default devices only the CD-ROM drive is on the IDE controller (below); the others (NIC,
        // serial and parallel ports, VGA, floppy drive, monitor) are not part of xenide's PC.
        defaults = false;
        break;
      case "S":
        startPaused = true;
        break;
      case "qtest":
        qtest = parseChardevCompat(option, "qtest", arg);
        break;
      case "qtest-log":
        qtestLog = arg;
        break;
      case "chardev": {
        const c = parseChardev(arg);
        if (chardevs.has(c.id)) throw new QemuUsageError(`${option}: Duplicate ID '${c.id}' for chardev`);
        chardevs.set(c.id, c);
        break;
      }
      case "mon": {
        const o = parseOpts(option, arg, "chardev").only(["chardev", "mode", "pretty", "id"]);
        const mode = o.get("mode") ?? "readline";
        if (mode !== "control")
          throw new QemuUsageError(
            `${option} mode=${mode}: only QMP monitors (mode=control) are supported by xenide`,
          );
        if (o.bool("pretty", false)) warnings.push(`${option}: pretty=on: replies are not pretty-printed`);
        const id = o.get("chardev") ?? "";
        const c = chardevs.get(id);
        if (!c) throw new QemuUsageError(`${option}: chardev "${id}" not found`);
        monitors.push(c);
        break;
      }
      case "qmp":
        monitors.push(parseChardevCompat(option, `compat_monitor${monitors.length}`, arg));
        break;
      case "drive":
        addDrive(parseOpts(option, arg));
        break;
      case "hda":
      case "hdb":
      case "hdc":
      case "hdd":
      case "cdrom": {
        // QEMU's shorthands for -drive: -hda..-hdd FILE at index 0-3, -cdrom FILE the CD drive at index 2 (the
        // secondary master). Messages name the option as written.
        const at = name === "cdrom" ? "index=2,media=cdrom" : `index=${"abcd".indexOf(name[2]!)}`;
        addDrive(parseOpts(option, `file=${arg.replace(/,/g, ",,")},${at}`, undefined, `${option} ${arg}`));
        break;
      }
      case "blockdev":
        addBlockdev(parseOpts(option, arg), nodes, drives);
        break;
      case "device":
        devices.push(parseOpts(option, arg, "driver"));
        break;
      case "global": {
        let o: QemuOpts;
        let key: string;
        let value: string;
        if (/^[^=,]+\.[^=,]+=/.test(arg)) {
          const eq = arg.indexOf("=");
          key = arg.slice(0, eq);
          value = arg.slice(eq + 1);
        } else {
          o = parseOpts(option, arg).only(["driver", "property", "value"]);
          key = `${o.get("driver") ?? ""}.${o.get("property") ?? ""}`;
          value = o.get("value") ?? "";
        }
        const [driver, prop] = [key.slice(0, key.indexOf(".")), key.slice(key.indexOf(".") + 1)];
        // A global applies when a device is made, after the character devices are connected: so is its error.
        if (driver !== "ide-hd" && driver !== "ide-cd" && driver !== "ide-drive") {
          globalError ??= `${option} ${arg}: driver '${driver}' not supported by xenide (ide-hd, ide-cd)`;
          break;
        }
        if (!(IDE_HD_PROPS as readonly string[]).includes(prop)) {
          globalError ??= `${option} ${arg}: property '${prop}' not supported by xenide`;
          break;
        }
        // ide-drive (QEMU's older name) and ide-hd set the hard disks' properties.
        const gkey = `${driver === "ide-cd" ? "ide-cd" : "ide-hd"}.${prop}`;
        globals.set(gkey, value);
        globalText.set(gkey, `${key}=${value}`);
        break;
      }
      case "trace":
        trace.add(option, arg);
        break;
      case "D":
        logFile = arg;
        break;
      case "compat": {
        if (!(COMPAT_PROFILES as readonly string[]).includes(arg))
          throw new QemuUsageError(`${option} ${arg}: unknown profile (${COMPAT_PROFILES.join(", ")})`);
        compat = arg as CompatProfile;
        break;
      }
    }
  }

  // Devices: explicit -device first claims its position; -drive if=ide takes the position it names or the
  // first free one, in command-line order (QEMU's drive_new auto-index, then the board creates ide-hd devices).
  // QEMU 7.2 makes its devices after connecting the character devices, so a device it refuses fails the start
  // with the sockets connected (observed): such an error becomes the plan's startError, and the machine is
  // planned without drives (its images are still opened first, as `imageChecks`, as QEMU opens them before it
  // makes the devices; the start fails before anything is served).
  let placed: { planned: PlannedDrive[]; startError: string | null };
  try {
    placed = placeDevices();
  } catch (e) {
    if (!(e instanceof QemuUsageError)) throw e;
    placed = { planned: [], startError: e.message };
  }
  function placeDevices(): { planned: PlannedDrive[]; startError: string | null } {
    const taken = new Map<IdePosition, { dev: DeviceOpt | null; drive: DriveOpt | null }>();
    const devs: DeviceOpt[] = [];
    for (const o of devices) {
      o.only(["driver", "drive", "bus", "unit", "id", ...IDE_HD_PROPS]);
      const driver = o.get("driver");
      if (driver !== "ide-hd" && driver !== "ide-cd")
        throw new QemuUsageError(`${o.option}: '${driver ?? ""}' is not a valid device model name`);
      // QEMU finds the bus before it makes the device and sets its properties (qdev_device_add, observed).
      let bus: number | null = null;
      const b = o.get("bus");
      if (b !== undefined) {
        const m = /^ide\.([01])$/.exec(b);
        if (!m) throw new QemuUsageError(`${o.option}: Bus '${b}' not found`);
        bus = Number(m[1]);
      }
      const ref = o.get("drive");
      let drive: DriveOpt | null = null;
      let medium: Medium | null = null;
      if (!ref) {
        // An ide-cd without a drive is a CD-ROM drive with an empty tray; a hard disk needs one.
        if (driver === "ide-hd") throw new QemuUsageError(`${o.option}: No drive specified`); // QEMU 7.2's words (observed)
      } else {
        medium = nodes.get(ref) ?? null;
        if (!medium) {
          drive = drives.find((d) => d.id === ref) ?? null;
          if (!drive)
            throw new QemuUsageError(`${o.option}: Property '${driver}.drive' can't find value '${ref}'`);
          if (drive.used || drive.ide)
            throw new QemuUsageError(`${o.option}: Drive '${ref}' is already in use by another device`);
          drive.used = true;
          medium = drive.medium;
        }
        if (driver === "ide-cd" && medium) medium = { ...medium, readOnly: true };
      }
      const unit = o.uint("unit");
      if (unit !== undefined && unit > 1)
        throw new QemuUsageError(`${o.option}: Invalid IDE unit number ${unit}`);
      let position: IdePosition | null = null;
      if (unit !== undefined) position = IDE_POSITIONS[(bus ?? 0) * 2 + unit]!;
      devs.push({ opts: o, driver, drive, medium, position, bus });
    }
    const claim = (p: IdePosition, dev: DeviceOpt | null, drive: DriveOpt | null, what: string): void => {
      if (taken.has(p))
        throw new QemuUsageError(`${what}: IDE position ${IDE_POSITIONS.indexOf(p)} is already in use`);
      taken.set(p, { dev, drive });
    };
    const firstFree = (bus: number | null): IdePosition => {
      for (let i = 0; i < 4; i++) {
        const p = IDE_POSITIONS[i]!;
        if (bus !== null && Math.floor(i / 2) !== bus) continue;
        if (!taken.has(p)) return p;
      }
      throw new QemuUsageError("no free IDE position left (the PC has four)");
    };
    for (const d of drives)
      if (d.ide && d.ide.index !== null) claim(IDE_POSITIONS[d.ide.index]!, null, d, d.opts.option);
    for (const dev of devs) if (dev.position) claim(dev.position, dev, dev.drive, dev.opts.option);
    for (const d of drives) if (d.ide && d.ide.index === null) claim(firstFree(null), null, d, d.opts.option);
    // QEMU's default CD-ROM drive (vl.c default_drive): without -nodefaults, and unless a -device ide-hd or ide-cd
    // is given, an empty CD drive "ide1-cd0" goes to index 2 (the secondary master) once the -drive options are
    // placed, if none of them is there.
    if (defaults && devs.length === 0 && !taken.has(IDE_POSITIONS[2]!)) {
      addDrive(parseOpts("-drive", "if=ide,index=2,media=cdrom")); // vl.c's drive_add(..., 2, NULL, CDROM_OPTS)
      const cd = drives[drives.length - 1]!;
      claim(IDE_POSITIONS[2]!, null, cd, cd.opts.option);
    }
    for (const dev of devs)
      if (!dev.position) claim((dev.position = firstFree(dev.bus)), dev, dev.drive, dev.opts.option);

    const planned: PlannedDrive[] = [];
    let startError: string | null = null;
    let deviceError: { at: number; text: string } | null = null;
    // QOM paths as QEMU 7.2's pc gives them (observed in query-block): the drives the board creates are
    // /machine/unattached/device[N] from 18 (23 with the default devices) in position order; a -device without
    // id= is /machine/peripheral-anon/device[N], N counting those in command-line order.
    let boardSeq = defaults ? 23 : 18;
    const anon = devs.filter((d) => d.opts.get("id") === undefined);
    for (const p of IDE_POSITIONS) {
      const t = taken.get(p);
      if (!t) continue;
      const idx = IDE_POSITIONS.indexOf(p);
      const drive = t.drive;
      const medium = t.dev ? t.dev.medium : drive!.medium;
      const kind = (t.dev ? t.dev.driver === "ide-cd" : drive!.cdrom) ? "cd" : "hd";
      const prop = (k: (typeof IDE_HD_PROPS)[number]): string | undefined =>
        t.dev?.opts.get(k) ?? globals.get(`ide-${kind}.${k}`);
      const blkName = drive ? drive.id || `ide${idx >> 1}-${kind}${idx & 1}` : "";
      const devId = t.dev?.opts.get("id");
      const qdev = t.dev
        ? (devId ?? `/machine/peripheral-anon/device[${anon.indexOf(t.dev)}]`)
        : `/machine/unattached/device[${boardSeq++}]`;
      const wwn = prop("wwn");
      const wc = prop("write-cache");
      let writeCache = drive ? drive.writeCache : true;
      if (wc === "on") writeCache = true;
      else if (wc === "off") writeCache = false;
      else if (wc !== undefined && wc !== "auto")
        throw new QemuUsageError(`-device ide-hd: write-cache=${wc}: expects on, off or auto`);
      planned.push({
        position: p,
        kind,
        option: medium?.option ?? "",
        image: medium?.image ?? null,
        format: medium?.format,
        readOnly: kind === "cd" || (medium?.readOnly ?? false),
        direct: medium?.direct ?? false,
        writeCache,
        noFlush: (drive?.noFlush ?? false) || (medium?.noFlush ?? false),
        blkdebug: medium?.blkdebug ?? null,
        rerror: drive ? drive.rerror : "report",
        werror: drive ? drive.werror : "enospc",
        blkName,
        nodeName: medium?.nodeName ?? "",
        qdev,
        // QEMU lists its BlockBackends as they were made: every -drive in command-line order (the default CD
        // after them), then the anonymous ones devices make for a -blockdev node or an empty ide-cd.
        blockOrder: drive ? drives.indexOf(drive) : drives.length + devs.indexOf(t.dev!),
        names: [blkName, medium?.nodeName ?? "", ...(devId ? [devId] : [])].filter((n) => n !== ""),
        model: prop("model"),
        serial: prop("serial"),
        firmware: prop("ver"),
        wwn:
          wwn === undefined
            ? undefined
            : t.dev?.opts.get("wwn") !== undefined
              ? parseU64(t.dev.opts.option, "wwn", wwn)
              : parseU64(`can't apply global ${globalText.get(`ide-${kind}.wwn`)}`, "wwn", wwn, "uint64"),
      });
      // What QEMU 7.2's ide_init_drive (and the permission check before it) refuse when the device is realized,
      // after the character devices are connected: a hard disk needs a medium it can write. A drive the board
      // made (-drive if=ide) is realized with no option as its location; a -device leads with its own.
      if (kind === "hd" && (!medium || medium.readOnly)) {
        const why = !medium ? "Device needs media, but drive is empty" : "Block node is read-only";
        if (!t.dev) startError ??= why;
        else {
          const at = devs.indexOf(t.dev);
          if (!deviceError || at < deviceError.at) deviceError = { at, text: `${t.dev.opts.option}: ${why}` };
        }
      }
    }
    // The board's drives are realized with the machine (in position order), the -device ones after it, in
    // command-line order.
    startError ??= deviceError?.text ?? null;
    return { planned, startError };
  }
  for (const d of drives)
    if (!d.ide && !d.used) warnings.push(`${d.opts.option}: drive not attached to any device`);
  const tracePlan = trace.plan();
  const plannedDrives = globalError ? [] : placed.planned;
  // Every medium the command line names, as QEMU makes them: the -blockdev nodes, then the -drive options.
  const media = [...nodes.values(), ...drives.flatMap((d) => (d.medium ? [d.medium] : []))];
  const opened = new Set(plannedDrives.flatMap((p) => (p.image === null ? [] : [p.image])));
  const imageChecks: ImageCheck[] = [];
  for (const m of media) {
    if (opened.has(m.image)) continue;
    opened.add(m.image);
    imageChecks.push({
      option: m.option,
      image: m.image,
      format: m.format,
      readOnly: m.readOnly,
      direct: m.direct,
    });
  }
  // QEMU opens its log files with "w": one that is an image would be truncated before the drive opens it.
  const images = media.map((m) => m.image);
  const traceFile = tracePlan.file ?? logFile;
  if (traceFile !== null) refuseImageAsLog(tracePlan.file !== null ? "-trace file" : "-D", traceFile, images);
  if (qtestLog !== undefined && qtestLog !== "none") refuseImageAsLog("-qtest-log", qtestLog, images);

  return {
    compat,
    ram,
    startPaused,
    qtest,
    qtestLog,
    monitors,
    drives: plannedDrives,
    imageChecks,
    startError: globalError ?? placed.startError,
    warnings,
    info: info ?? (tracePlan.help ? "trace-help" : null),
    trace: tracePlan,
    traceFile,
  };
}

/** A log file that is (or links to) one of the images is refused: opening it would empty the image. */
function refuseImageAsLog(option: string, file: string, images: readonly string[]): void {
  const id = fileIdentity(file);
  if (id === null) return;
  const image = images.find((i) => fileIdentity(i) === id);
  if (image !== undefined)
    throw new QemuUsageError(`${option} ${file}: that is the image ${image}; the log would overwrite it`);
}

function checkAccel(option: string, accel: string): void {
  // No guest CPU runs here: the vCPU is the qtest client (qtest), or nothing (tcg with no firmware).
  for (const a of accel.split(":"))
    if (a !== "qtest" && a !== "tcg")
      throw new QemuUsageError(`${option} ${accel}: accelerator '${a}' not supported by xenide (qtest, tcg)`);
}

/** `-blockdev driver=file|raw|blkdebug,node-name=N,...` (dotted keys, no implied key). */
function addBlockdev(o: QemuOpts, nodes: Map<string, Medium>, drives: readonly DriveOpt[]): void {
  const driver = o.get("driver");
  const node = o.get("node-name");
  if (!driver) throw new QemuUsageError(`${o.option}: Parameter 'driver' is missing`);
  if (!node) throw new QemuUsageError(`${o.option}: A top-level blockdev needs a node-name`);
  if (nodes.has(node) || drives.some((d) => d.medium?.nodeName === node))
    throw new QemuUsageError(`${o.option}: Duplicate nodes with node-name='${node}'`);
  const ro = o.bool("read-only", false);
  const child = (key: string): Medium => {
    const ref = o.get(key);
    if (!ref) throw new QemuUsageError(`${o.option}: Parameter '${key}' is missing`);
    const m = nodes.get(ref);
    if (!m) throw new QemuUsageError(`${o.option}: Cannot find device='' nor node-name='${ref}'`);
    nodes.delete(ref); // a node has one parent
    return m;
  };
  switch (driver) {
    case "file": {
      o.only([
        "driver",
        "node-name",
        "filename",
        "read-only",
        "cache.direct",
        "cache.no-flush",
        "aio",
        "discard",
        "locking",
      ]);
      const filename = o.get("filename");
      if (!filename) throw new QemuUsageError(`${o.option}: Parameter 'filename' is missing`);
      const aio = o.get("aio");
      if (aio !== undefined && aio !== "threads")
        throw new QemuUsageError(`${o.option}: aio=${aio} is not supported by xenide (aio=threads is)`);
      const locking = o.get("locking");
      if (locking === "off")
        throw new QemuUsageError(`${o.option}: locking=off: xenide always takes QEMU's image locks`);
      // A protocol node used as the device's medium is its bytes as they are: raw, never probed.
      nodes.set(node, {
        option: o.option,
        image: filename,
        format: "raw",
        readOnly: ro,
        direct: o.bool("cache.direct", false),
        noFlush: o.bool("cache.no-flush", false),
        blkdebug: null,
        nodeName: node,
      });
      return;
    }
    case "raw":
    case "qcow2": {
      o.only(["driver", "node-name", "file", "read-only", "cache.no-flush"]);
      const m = child("file");
      if (m.blkdebug !== null && driver === "qcow2")
        throw new QemuUsageError(`${o.option}: a qcow2 node over blkdebug is not supported by xenide`);
      nodes.set(node, {
        ...m,
        format: driver,
        readOnly: m.readOnly || ro,
        noFlush: (m.noFlush ?? false) || o.bool("cache.no-flush", false),
        nodeName: node,
      });
      return;
    }
    case "nbd": {
      // -blockdev driver=nbd,server.type=unix,server.path=P[,export=E] or server.type=inet,server.host=H,server.port=P
      o.only([
        "driver",
        "node-name",
        "read-only",
        "export",
        "server.type",
        "server.path",
        "server.host",
        "server.port",
      ]);
      const type = o.get("server.type");
      const exportName = o.get("export") ?? "";
      let url: string;
      if (type === "unix") {
        const path = o.get("server.path");
        if (!path) throw new QemuUsageError(`${o.option}: Parameter 'server.path' is missing`);
        url = formatNbdAddress({ target: { transport: "unix", path }, exportName });
      } else if (type === "inet") {
        const host = o.get("server.host");
        if (!host) throw new QemuUsageError(`${o.option}: Parameter 'server.host' is missing`);
        const port = Number(o.get("server.port") ?? "10809");
        if (!Number.isInteger(port) || port < 1 || port > 65535)
          throw new QemuUsageError(`${o.option}: server.port ${o.get("server.port")} is not a port number`);
        url = formatNbdAddress({ target: { transport: "tcp", host, port }, exportName });
      } else {
        throw new QemuUsageError(`${o.option}: xenide's NBD client takes server.type unix or inet`);
      }
      nodes.set(node, {
        option: o.option,
        image: url,
        format: "raw",
        readOnly: ro,
        direct: false,
        blkdebug: null,
        nodeName: node,
      });
      return;
    }
    case "blkdebug": {
      o.only(["driver", "node-name", "image", "config", "read-only"]);
      const m = child("image");
      const config = o.get("config");
      const rules = config ? readRules(o.option, config) : [];
      nodes.set(node, {
        ...m,
        readOnly: m.readOnly || ro,
        blkdebug: [...(m.blkdebug ?? []), ...rules],
        nodeName: node,
      });
      return;
    }
    default:
      throw new QemuUsageError(
        `${o.option}: driver ${driver} is not supported by xenide (file, raw, qcow2, nbd, blkdebug)`,
      );
  }
}

export type { CommandLineOption };
