/**
 * `xenide-system-x86_64`: xenide behind QEMU's command line, so that a program that launches QEMU for qtest
 * (libqtest's QTEST_QEMU_BINARY) or drives it over QMP launches xenide instead. It builds the PC with the drives
 * the options describe, connects the qtest and QMP character devices (as a client of the sockets libqtest
 * listens on, or listening, or on stdio), applies QEMU's rerror/werror policy and blkdebug rules, and exits 0 on
 * SIGTERM, SIGINT, SIGHUP, QMP `quit` or the end of the qtest input, after every acknowledged write is written.
 */

import { closeSync, openSync, unlinkSync, writeSync } from "node:fs";
import { type Server, type Socket, connect, createServer } from "node:net";
import type { Readable, Writable } from "node:stream";
import { buildMachine, type Machine } from "../machine/builder.ts";
import { ideIndex, type IdeDriveSpec } from "../machine/description.ts";
import { QtestServer } from "../qtest/server.ts";
import { serveStream, staleSocketAt } from "../qtest/transport.ts";
import type { IoErrorPolicy } from "../ide/requests.ts";
import { QEMU_IDE_TRACE_EVENTS, type QemuIdeTrace } from "../ide/qemu-trace.ts";
import { BlkdebugBackend, BlkdebugBreakError, ioErrorReason } from "../storage/blkdebug.ts";
import { NoFlushBackend, openMedium } from "../storage/index.ts";
import { LockDeferral } from "../storage/lock.ts";
import type { BlockBackend } from "../storage/types.ts";
import { type ChardevSpec, type LaunchPlan, type PlannedDrive, planLaunch } from "./config.ts";
import { driveOpenError, qemuOpenError } from "./open-error.ts";
import { QemuUsageError } from "./opts.ts";
import { type Json, type JsonObject, QmpError, type QmpHost, QmpMonitor } from "./qmp.ts";

export const PROGRAM = "xenide-system-x86_64";

/** QEMU's RunState names that the launcher goes through. */
type RunState = "prelaunch" | "running" | "paused" | "io-error" | "suspended" | "shutdown";

interface DriveRuntime {
  readonly plan: PlannedDrive;
  readonly blkdebug: BlkdebugBackend | null;
  /**
   * What the launcher opened itself when it layers something over the image (blkdebug's rules, cache=unsafe's
   * no-flush): the top medium, closed after the machine, and the image under it, flushed first.
   */
  readonly own: { readonly top: BlockBackend; readonly image: BlockBackend } | null;
  /** The image in the drive now (a CD's changes), or null for none. */
  image: string | null;
  iostatus: "ok" | "failed" | "nospace";
}

export interface LauncherIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

const HELP = `usage: ${PROGRAM} [options]
QEMU's command line for xenide's PC (i440FX + PIIX3 IDE), without a guest CPU: the vCPU is the qtest client.
  -machine pc  -accel qtest|tcg  -m SIZE  -display none  -nodefaults  -S
  -qtest unix:PATH|stdio  -qtest-log FILE|none
  -chardev socket,id=ID,path=PATH[,server=on|off][,wait=on|off]   -mon chardev=ID,mode=control
  -qmp unix:PATH[,server=on|off][,wait=on|off]|stdio
         (server=on listens; with wait=on, its default, nothing starts until the first client connects)
  -drive file=[blkdebug:[CONF]:]FILE,if=ide|none,index=N|bus=B,unit=U,id=ID,media=disk|cdrom,format=raw,
         cache=MODE,readonly=on|off,rerror=report|ignore|stop,werror=report|ignore|stop|enospc
         (without file= a CD drive's tray is empty)
  -blockdev driver=file|raw|blkdebug,node-name=N,...   -hda..-hdd FILE   -cdrom FILE
  -device ide-hd|ide-cd,drive=ID,bus=ide.N,unit=U,id=ID,serial=S,model=M,ver=V,write-cache=on|off|auto
          (an ide-cd without drive= has an empty tray)
  -global ide-hd|ide-cd.serial|model|ver|write-cache=VALUE
  -trace [enable=]PATTERN[,events=FILE][,file=FILE]   -D FILE   (QEMU's IDE and Bus Master events:
          -trace help lists them; output to file=, else -D's file, else stderr)
  -compat qemu-7.2|xenide (default qemu-7.2)
Exit status: 0 on SIGTERM/SIGINT/SIGHUP, QMP quit or the end of the qtest input; 1 on a bad option or a
failure to start.
Environment: XENIDE_QTEST_POLL_US=N polls a qtest socket or pipe N microseconds after each reply for the
client's next command before waiting in the event loop (default 150; 0: never).
`;

/** Run the launcher; resolves with the exit status once the machine has stopped. */
export async function runLauncher(argv: readonly string[], io: LauncherIo): Promise<number> {
  let plan: LaunchPlan;
  try {
    plan = planLaunch(argv);
  } catch (e) {
    if (e instanceof QemuUsageError) {
      io.stderr.write(`${PROGRAM}: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
  if (plan.info === "help") {
    io.stdout.write(HELP);
    return 0;
  }
  if (plan.info === "trace-help") {
    // QEMU's trace_list_events: the names, one per line.
    io.stdout.write(QEMU_IDE_TRACE_EVENTS.map((ev) => `${ev}\n`).join(""));
    return 0;
  }
  if (plan.info === "version") {
    io.stdout.write(`${PROGRAM}: xenide's PC with QEMU 7.2's command line (QEMU emulator version 7.2.22)\n`);
    return 0;
  }
  for (const w of plan.warnings) io.stderr.write(`${PROGRAM}: warning: ${w}\n`);
  return new Vm(plan, io).run();
}

class Vm implements QmpHost {
  readonly version = { major: 7, minor: 2, micro: 22, package: "xenide" };
  // Made by build(), once the monitors' character devices are connected (run()); nothing is served before.
  private machine!: Machine;
  private drives: DriveRuntime[] = [];
  private server!: QtestServer;
  private readonly monitors: QmpMonitor[] = [];
  private readonly held: (() => void)[] = [];
  private runstate: RunState;
  private readonly servers: Server[] = [];
  /** The listening socket of each server chardev, by id. */
  private readonly serverOf = new Map<string, Server>();
  /** The socket of each chardev connected before anything was served (`connectChardevs`). */
  private readonly connected = new Map<string, Socket>();
  private readonly sockets: Socket[] = [];
  private logFd: number | null = null;
  /** The -trace file's descriptor, when the trace goes to one. */
  private traceFd: number | null = null;
  private exit: ((status: number) => void) | null = null;
  private stopping = false;
  /** The image locks' verdicts (see build()): settled before anything is served. */
  private lockVerdicts: Promise<void> = Promise.resolve();

  constructor(
    private readonly plan: LaunchPlan,
    private readonly io: LauncherIo,
  ) {
    this.runstate = plan.startPaused ? "prelaunch" : "running";
  }

  /**
   * Open the media and build the machine: QEMU 7.2 opens its drives after connecting the monitors' character
   * devices and before the qtest one (a drive that cannot be opened ends the start with QMP connected only:
   * observed), so that a libqtest client sees the failure at once instead of waiting for a connection.
   */
  private build(): void {
    const plan = this.plan;
    // The images no drive of the machine opens: QEMU opens them all the same, and fails on one it cannot open.
    // Opened without a lock and closed at once: nothing is read or written.
    for (const c of plan.imageChecks) {
      let m: BlockBackend;
      try {
        m = openMedium(c.image, {
          ...(c.format !== undefined ? { format: c.format } : {}),
          readOnly: c.readOnly,
          direct: c.direct,
          lock: false,
        });
      } catch (e) {
        throw new Error(qemuOpenError(c.option, c.image, e));
      }
      m.close();
    }
    const drives: DriveRuntime[] = [];
    const specs: IdeDriveSpec[] = [];
    const qemuStrings = plan.compat === "qemu-7.2";
    // Each image's kernel lock is taken by a helper process (storage/lock.ts), which runs while the machine is
    // built instead of before it; run() waits for the verdicts after connecting the character devices and
    // before serving anything (QEMU 7.2 connects its chardevs, then fails on a locked image: observed).
    const locks = LockDeferral.begin();
    try {
      for (const p of plan.drives) {
        // A hard disk without a medium: the start fails (plan.startError) once the chardevs are connected.
        if (p.kind === "hd" && p.image === null) continue;
        let rt: DriveRuntime;
        const spec: IdeDriveSpec = {
          position: p.position,
          medium: { empty: true },
          writeCache: p.writeCache,
        };
        if (p.kind === "cd") spec.kind = "cd";
        if (p.image === null) {
          rt = { plan: p, blkdebug: null, own: null, image: p.image, iostatus: "ok" };
          spec.engine = "sync";
        } else if (p.blkdebug || p.noFlush) {
          const image = openMedium(p.image, {
            ...(p.format !== undefined ? { format: p.format } : {}),
            readOnly: p.readOnly,
            direct: p.direct,
          });
          // cache=unsafe: the guest's flushes go nowhere (the image is still flushed when the launcher ends).
          const base = p.noFlush ? new NoFlushBackend(image) : image;
          const bd = p.blkdebug ? new BlkdebugBackend(base, p.blkdebug) : null;
          const top = bd ?? base;
          rt = { plan: p, blkdebug: bd, own: { top, image }, image: p.image, iostatus: "ok" };
          spec.medium = { backend: top };
          // A request held at a breakpoint completes later: only the async engine can wait for it.
          spec.engine = bd ? "async" : "sync";
        } else {
          rt = { plan: p, blkdebug: null, own: null, image: p.image, iostatus: "ok" };
          spec.medium = {
            image: p.image,
            ...(p.format !== undefined ? { format: p.format } : {}),
            readOnly: p.readOnly,
            direct: p.direct,
          };
          spec.engine = "sync";
        }
        drives.push(rt);
        // QEMU's ide-hd/ide-cd defaults: "QEMU HARDDISK" or "QEMU DVD-ROM", firmware "2.5+", and "QM%05d" of
        // the counter ide_init1 advances for every position the PIIX creates, attached or not: the drive at
        // index N (bus * 2 + unit) is QM0000(N+1).
        const serialSeq = ideIndex(p.position) + 1;
        const qemuModel = p.kind === "cd" ? "QEMU DVD-ROM" : "QEMU HARDDISK";
        const model = p.model ?? (qemuStrings ? qemuModel : undefined);
        const serial = p.serial ?? (qemuStrings ? `QM${String(serialSeq).padStart(5, "0")}` : undefined);
        const firmware = p.firmware ?? (qemuStrings ? "2.5+" : undefined);
        if (model !== undefined) spec.model = model;
        if (serial !== undefined) spec.serial = serial;
        if (firmware !== undefined) spec.firmware = firmware;
        if (p.wwn !== undefined) spec.wwn = p.wwn;
        spec.errorPolicy = this.errorPolicy(rt);
        specs.push(spec);
      }
      this.machine = buildMachine({ ram: plan.ram, compat: plan.compat, ide: specs });
      this.attachTrace();
    } catch (e) {
      for (const d of drives) d.own?.top.close();
      throw driveOpenError(plan.drives, e);
    } finally {
      this.lockVerdicts = locks.end();
      this.lockVerdicts.catch(() => {}); // run() reports a refusal; a failed start has closed its media already
    }
    this.drives = drives;
    // A reset the guest asks for through PIIX3's Reset Control register (0xCF9).
    if (this.machine.pc) this.machine.pc.onGuestReset = () => this.resetDone(true, "guest-reset");
    // ACPI soft-off (PM1a_CNT SLP_EN with sleep type 0, or S4): QEMU 7.2 requests a shutdown with cause
    // guest-shutdown and its main loop ends the process after the write is answered. S3 (type 1): its main loop
    // suspends the VM (runstate suspended, the SUSPEND event) until QMP's system_wakeup; the devices keep their
    // state meanwhile and qtest still reaches them (observed).
    const pm = this.machine.pc?.pm;
    if (pm) {
      pm.onSleepRequest = (kind) => {
        setImmediate(() => {
          if (this.stopping) return;
          if (kind === "suspend") {
            if (this.runstate === "suspended") return;
            this.runstate = "suspended";
            this.broadcast("SUSPEND");
            return;
          }
          this.broadcast("SHUTDOWN", { guest: true, reason: "guest-shutdown" });
          void this.shutdown(0);
        });
      };
    }
    const engines = this.machine.engines;
    const heldCount = (): number => {
      let n = 0;
      for (const d of drives) if (d.blkdebug) n += d.blkdebug.heldCount;
      return n;
    };
    // Busy while a request is on its way; a request held at a breakpoint waits for QMP, not for the event loop.
    // (Asked after every qtest input chunk: no allocation.)
    const busy = (): boolean => {
      let n = 0;
      for (const e of engines) n += e.inflight;
      return n > 0 && n > heldCount();
    };
    this.server = new QtestServer({
      hv: this.machine.hv,
      vcpu: this.machine.hv.vcpu(0),
      busy,
      settle: async () => {
        for (let i = 0; i < 100_000 && busy(); i++) await new Promise<void>((r) => setImmediate(r));
      },
      // A Bus Master stopped with its transfer in flight: the write is answered once the request is drained.
      takeDrainRequest: () => this.machine.takeDrainRequest(),
    });
  }

  /** QEMU's blk_get_error_action and blk_error_action for one drive. */
  private errorPolicy(d: DriveRuntime): IoErrorPolicy {
    const p = d.plan;
    // blk_iostatus_is_enabled: the drive reports nospace only when one of its actions can stop.
    const iostatus = p.werror === "stop" || p.werror === "enospc" || p.rerror === "stop";
    return {
      action: (op, err) => {
        const isRead = op === "read";
        const on = isRead ? p.rerror : p.werror;
        const action =
          on === "enospc" ? (err.code === "ENOSPC" ? "stop" : "report") : on === "stop" ? "stop" : on;
        if (action === "stop") d.iostatus = err.code === "ENOSPC" ? "nospace" : "failed";
        const data: JsonObject = {
          device: p.blkName,
          "node-name": p.nodeName,
          operation: isRead ? "read" : "write",
          action,
        };
        if (iostatus) data.nospace = err.code === "ENOSPC";
        data.reason = ioErrorReason(err.code);
        this.broadcast("BLOCK_IO_ERROR", data);
        if (action === "stop") this.vmStop("io-error");
        return action;
      },
      held: (retry) => {
        this.held.push(retry);
      },
    };
  }

  /**
   * After a machine reset (QEMU's qemu_system_reset and main_loop_should_exit): the RESET event, and a stopped VM
   * (paused, io-error) comes back in prelaunch; requests held for `cont` were cancelled with their commands.
   */
  private resetDone(guest: boolean, reason: "host-qmp-system-reset" | "guest-reset"): void {
    this.held.length = 0;
    this.broadcast("RESET", { guest, reason });
    if (this.runstate !== "running") this.runstate = "prelaunch";
  }

  private broadcast(event: string, data?: JsonObject): void {
    for (const m of this.monitors) m.event(event, data);
  }

  private vmStop(state: "paused" | "io-error"): void {
    // A suspended VM stays suspended (QEMU 7.2 answers `stop` with {} and no STOP event: observed).
    if (this.runstate === "suspended") return;
    if (this.runstate === "running") {
      this.runstate = state;
      this.broadcast("STOP");
    } else if (state === "io-error" && this.runstate === "paused") this.runstate = "io-error";
  }

  // ---- QMP ----

  execute(name: string, args: JsonObject): Json | Promise<Json> {
    switch (name) {
      case "query-status":
        return { status: this.runstate, singlestep: false, running: this.runstate === "running" };
      case "stop":
        this.vmStop("paused");
        return {};
      case "cont": {
        // Suspended, `cont` changes nothing: only system_wakeup ends a suspend (observed).
        if (this.runstate === "running" || this.runstate === "suspended") return {};
        this.runstate = "running";
        for (const d of this.drives) d.iostatus = "ok";
        this.broadcast("RESUME");
        // The held requests run again once the reply is out (QEMU's ide_restart_cb runs from a bottom half).
        const retries = this.held.splice(0);
        setImmediate(() => {
          for (const r of retries) r();
        });
        return {};
      }
      case "quit":
        return {};
      case "system_wakeup":
        // QEMU's qemu_system_wakeup_request, then its main loop: the machine is reset (no RESET event: the reset's
        // cause is none), runs again, and WAKEUP goes out before the reply (observed).
        if (this.runstate !== "suspended")
          throw new QmpError("GenericError", "Unable to wake up: guest is not in suspended state");
        this.machine.reset();
        this.held.length = 0;
        this.runstate = "running";
        this.broadcast("WAKEUP");
        return {};
      case "system_reset":
        // QEMU 7.2 performs the requested reset before the reply goes out: the RESET event comes first (observed).
        this.machine.reset();
        this.resetDone(false, "host-qmp-system-reset");
        return {};
      case "query-block":
        return [...this.drives]
          .sort((a, b) => a.plan.blockOrder - b.plan.blockOrder)
          .map((d) => this.blockInfo(d));
      case "eject":
      case "blockdev-change-medium":
        return this.changeMedium(name, args);
      case "human-monitor-command":
        return this.hmp(String(args["command-line"] ?? ""));
      case "query-version":
        return {
          qemu: { major: this.version.major, minor: this.version.minor, micro: this.version.micro },
          package: this.version.package,
        };
      default:
        throw new QmpError("CommandNotFound", `The command ${name} has not been found`);
    }
  }

  afterReply(name: string): void {
    if (name === "quit") {
      this.broadcast("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
      void this.shutdown(0);
    }
  }

  private findDrive(name: string): DriveRuntime | undefined {
    return this.drives.find((d) => d.plan.names.includes(name) || d.plan.qdev === name);
  }

  /** QMP `eject` and `blockdev-change-medium` on a CD drive (QEMU's blockdev.c and block/qapi-sysemu.c). */
  private async changeMedium(name: string, args: JsonObject): Promise<Json> {
    const dev = String(args.id ?? args.device ?? "");
    const d = this.findDrive(dev);
    if (!d) throw new QmpError("DeviceNotFound", `Device '${dev}' not found`);
    const handle = this.machine.ide.get(d.plan.position)!;
    if (d.plan.kind !== "cd") throw new QmpError("GenericError", `Device '${dev}' is not removable`);
    const moved = (open: boolean): void =>
      this.broadcast("DEVICE_TRAY_MOVED", { device: d.plan.blkName, id: d.plan.qdev, "tray-open": open });
    if (name === "eject") {
      const wasOpen = handle.tray().open;
      try {
        await handle.eject({ force: args.force === true });
      } catch (e) {
        if ((e as Error).name === "TrayLockedError")
          throw new QmpError(
            "GenericError",
            `Device '${dev}' is locked and force was not specified, wait for tray to open and try again`,
          );
        throw new QmpError("GenericError", (e as Error).message);
      }
      d.image = null;
      if (!wasOpen) moved(true);
      return {};
    }
    const filename = args.filename;
    if (typeof filename !== "string") throw new QmpError("GenericError", "Parameter 'filename' is missing");
    const format = args.format;
    if (format !== undefined && format !== "raw")
      throw new QmpError("GenericError", `Unknown driver '${String(format)}' (xenide reads raw images)`);
    const wasOpen = handle.tray().open;
    try {
      await handle.insert({ image: filename, readOnly: true });
    } catch (e) {
      throw new QmpError("GenericError", (e as Error).message);
    }
    d.image = filename;
    if (!wasOpen) moved(true);
    moved(false);
    return {};
  }

  private blockInfo(d: DriveRuntime): JsonObject {
    const p = d.plan;
    const handle = this.machine.ide.get(p.position)!;
    const tray = handle.tray();
    const info: JsonObject = {
      device: p.blkName,
      qdev: p.qdev,
      locked: tray.locked,
      removable: p.kind === "cd",
      type: "unknown",
    };
    if (p.kind === "cd") info.tray_open = tray.open;
    if (p.werror === "stop" || p.werror === "enospc" || p.rerror === "stop") info["io-status"] = d.iostatus;
    if (!handle.hasMedium || d.image === null) return info;
    const backend = handle.backend;
    info.inserted = {
      file: p.blkdebug ? `blkdebug::${d.image}` : d.image,
      "node-name": p.nodeName,
      ro: p.readOnly,
      drv: p.blkdebug ? "blkdebug" : "raw",
      encrypted: false,
      detect_zeroes: "off",
      bps: 0,
      bps_rd: 0,
      bps_wr: 0,
      iops: 0,
      iops_rd: 0,
      iops_wr: 0,
      write_threshold: 0,
      cache: { writeback: p.writeCache, direct: p.direct, "no-flush": false },
      image: {
        filename: d.image,
        format: "raw",
        "virtual-size": backend.sectorCount * backend.sectorSize,
      },
    };
    return info;
  }

  /** The HMP commands served through `human-monitor-command` (its output, lines ending in \r\n). */
  private hmp(line: string): string {
    const words = hmpWords(line);
    if (words.length === 0) return "";
    const cmd = words[0]!;
    if (cmd !== "qemu-io") return `unknown command: '${cmd}'\r\n`;
    let at = 1;
    if (words[at] === "-d") at++; // the name is a device id: we accept every name anyway
    const dev = words[at];
    const sub = words[at + 1];
    if (dev === undefined || sub === undefined) return "Parameter 'device' is missing\r\n";
    const d = this.findDrive(dev);
    if (!d) return `Device '${dev}' not found\r\n`;
    const argv = sub.split(/\s+/).filter((w) => w !== "");
    const bd = d.blkdebug;
    const op = argv[0] ?? "";
    const errno = (e: unknown): string => {
      if (e instanceof BlkdebugBreakError)
        return e.errno === "ENOENT" ? "No such file or directory" : "Invalid argument";
      throw e;
    };
    switch (op) {
      case "break":
        if (argv.length !== 3) return "break: invalid number of arguments\r\n";
        if (!bd) return "Could not set breakpoint: Operation not supported\r\n";
        try {
          bd.breakpoint(argv[1]!, argv[2]!);
          return "";
        } catch (e) {
          return `Could not set breakpoint: ${errno(e)}\r\n`;
        }
      case "resume":
        if (argv.length !== 2) return "resume: invalid number of arguments\r\n";
        try {
          if (!bd) throw new BlkdebugBreakError("no blkdebug", "ENOENT");
          bd.resume(argv[1]!);
          return "";
        } catch (e) {
          return `Could not resume request: ${errno(e)}\r\n`;
        }
      case "remove_break":
        if (argv.length !== 2) return "remove_break: invalid number of arguments\r\n";
        try {
          if (!bd) throw new BlkdebugBreakError("no blkdebug", "ENOENT");
          bd.removeBreak(argv[1]!);
          return "";
        } catch (e) {
          return `Could not remove breakpoint ${argv[1]}: ${errno(e)}\r\n`;
        }
      default:
        return `command "${op}" not found\r\n`;
    }
  }

  // ---- character devices ----

  /**
   * Connect the socket chardevs of `list` in order, as QEMU 7.2 creates them (run() says when: the monitors'
   * before the drives are opened, the qtest one after). A client connects; a listening one with wait=on (QEMU's
   * default for server=on) blocks until its first client connects, saying so on stderr in QEMU's words (scripts
   * wait for that line before they connect). Nothing is served yet.
   */
  private async connectChardevs(list: readonly ChardevSpec[]): Promise<void> {
    for (const c of list) {
      if (c.kind !== "socket" || this.stopping) continue;
      if (!c.server) {
        this.connected.set(c.id, await this.connectTo(c.path!));
      } else if (c.wait) {
        const srv = await this.listen(c);
        this.io.stderr.write(
          `${PROGRAM}: ${c.origin ?? c.path}: info: QEMU waiting for connection on: ` +
            `disconnected:unix:${c.path},server=on\n`,
        );
        this.connected.set(c.id, await this.accept(srv));
      }
    }
  }

  /** Connect to a listening socket (libqtest's, say) as a client. */
  private async connectTo(path: string): Promise<Socket> {
    const sock = connect(path);
    this.sockets.push(sock);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", (e) =>
        reject(
          new Error(`Failed to connect to '${path}': ${(e as NodeJS.ErrnoException).code ?? e.message}`),
        ),
      );
    });
    sock.on("error", () => sock.destroy());
    return sock;
  }

  /** Listen at a chardev's path (a stale socket file there is replaced). */
  private async listen(c: ChardevSpec): Promise<Server> {
    const path = c.path!;
    if (staleSocketAt(path)) unlinkSync(path);
    const srv = createServer();
    this.servers.push(srv);
    this.serverOf.set(c.id, srv);
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(path, () => resolve());
    });
    return srv;
  }

  /** The next client of a listening chardev. */
  private async accept(srv: Server): Promise<Socket> {
    const sock = await new Promise<Socket>((resolve) => srv.once("connection", resolve));
    this.sockets.push(sock);
    sock.on("error", () => sock.destroy());
    return sock;
  }

  /** Open a chardev: resolves with its stream once connected (a listening one: once its first client is). */
  private async open(c: ChardevSpec): Promise<{ input: Readable; output: Writable }> {
    if (c.kind === "stdio") return { input: this.io.stdin, output: this.io.stdout };
    const early = this.connected.get(c.id);
    if (early) {
      this.connected.delete(c.id);
      return { input: early, output: early };
    }
    const sock = c.server ? await this.accept(await this.listen(c)) : await this.connectTo(c.path!);
    return { input: sock, output: sock };
  }

  private async serveMonitor(c: ChardevSpec): Promise<void> {
    let first = await this.open(c);
    for (;;) {
      const mon = new QmpMonitor(this, first.output);
      this.monitors.push(mon);
      await mon.serve(first.input);
      this.monitors.splice(this.monitors.indexOf(mon), 1);
      // A listening monitor takes the next client when one goes (as QEMU's server socket chardev does).
      if (c.kind !== "socket" || !c.server || this.stopping) break;
      const sock = await this.accept(this.serverOf.get(c.id)!);
      first = { input: sock, output: sock };
    }
    // The end of a monitor on stdio is the end of its user; a socket monitor can go without stopping the VM.
    if (c.kind === "stdio" && !this.plan.qtest) await this.shutdown(0);
  }

  private async serveQtest(c: ChardevSpec): Promise<void> {
    const { input, output } = await this.open(c);
    this.openLog();
    await serveStream(this.server, input, output);
    this.log(`[I +${this.elapsed()}] CLOSED\n`);
    await this.shutdown(0);
  }

  // ---- -trace (QEMU's IDE and Bus Master events, as its log backend prints them) ----

  /**
   * The events -trace enabled, one line each (`name text`), to the trace file (-trace file=, -D) or stderr, as
   * QEMU 7.2's log backend writes them. With none enabled the devices keep their untraced paths.
   */
  private attachTrace(): void {
    const { enabled } = this.plan.trace;
    const ide = this.machine.pc?.ide;
    if (enabled.size === 0 || !ide) return;
    const file = this.plan.traceFile;
    let emit: (line: string) => void;
    if (file === null) emit = (line) => void this.io.stderr.write(line);
    else {
      let fd: number;
      try {
        fd = openSync(file, "w");
      } catch (e) {
        throw new Error(`${file}: cannot write the trace there (${(e as NodeJS.ErrnoException).code ?? e})`);
      }
      this.traceFd = fd;
      emit = (line) => void writeSync(fd, line);
    }
    const sink: QemuIdeTrace = { on: (ev) => enabled.has(ev), emit: (ev, text) => emit(`${ev} ${text}\n`) };
    for (const ch of ide.channels) ch.qemuTrace = sink;
    for (const bm of ide.busMasters) bm.qemuTrace = sink;
  }

  // ---- -qtest-log (QEMU's format: [R +secs] request, [S +secs] reply) ----

  private t0 = 0n;

  private elapsed(): string {
    return (Number(process.hrtime.bigint() - this.t0) / 1e9).toFixed(6);
  }

  private log(s: string): void {
    if (this.logFd !== null) writeSync(this.logFd, s);
  }

  private openLog(): void {
    const where = this.plan.qtestLog;
    // /dev/null (what libqtest passes) keeps nothing: skip the formatting and two writes per request.
    if (where === "none" || where === "/dev/null") return;
    this.logFd = where === undefined ? 2 : openSync(where, "w+");
    this.t0 = process.hrtime.bigint();
    this.log(`[I ${this.elapsed()}] OPENED\n`);
    this.server.traffic = (dir, text) => {
      if (dir === "R") this.log(`[R +${this.elapsed()}] ${text.replace(/\r$/, "")}\n`);
      else this.log(`[S +${this.elapsed()}] ${text}`);
    };
  }

  // ---- life cycle ----

  run(): Promise<number> {
    return new Promise<number>((resolve) => {
      this.exit = resolve;
      const onSignal = (): void => {
        this.broadcast("SHUTDOWN", { guest: false, reason: "host-signal" });
        void this.shutdown(0);
      };
      for (const s of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(s, onSignal);
      const fail = (e: unknown): void => {
        this.io.stderr.write(`${PROGRAM}: ${(e as Error)?.message ?? String(e)}\n`);
        void this.shutdown(1);
      };
      // QEMU 7.2's order, observed: the monitors' character devices, the drives (an image that cannot be opened
      // fails the start with QMP connected), the qtest character device, then the devices: a locked image or a
      // device QEMU would refuse to realize (a hard disk on a read-only drive, a bus that does not exist) fails
      // the start with the sockets connected and nothing served. A libqtest client, which waits for both
      // connections, so sees the failure at once.
      this.connectChardevs(this.plan.monitors)
        .then(() => {
          if (!this.stopping) this.build();
        })
        .then(() => this.connectChardevs(this.plan.qtest ? [this.plan.qtest] : []))
        .then(() => this.lockVerdicts)
        .then(() => {
          if (this.plan.startError !== null) throw new Error(this.plan.startError);
          if (this.stopping) return;
          // libqtest accepts the qtest connection first, then QMP; both sockets listen before we start.
          if (this.plan.qtest) this.serveQtest(this.plan.qtest).catch(fail);
          for (const m of this.plan.monitors) this.serveMonitor(m).catch(fail);
        })
        .catch(fail);
    });
  }

  /** Stop: held requests go on, acknowledged writes reach the media, media are flushed and closed. */
  private async shutdown(status: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    try {
      for (const d of this.drives) d.blkdebug?.releaseAll();
      for (const r of this.held.splice(0)) r();
      await this.machine?.close(); // none when the start failed before it was built
      for (const d of this.drives) {
        if (!d.own) continue;
        // The image itself, under its layers: its acknowledged writes are flushed.
        if (!d.own.image.readOnly) d.own.image.flush();
        d.own.top.close();
      }
    } catch (e) {
      this.io.stderr.write(`${PROGRAM}: ${(e as Error)?.message ?? String(e)}\n`);
      status = 1;
    } finally {
      if (this.logFd !== null && this.logFd !== 2) closeSync(this.logFd);
      if (this.traceFd !== null) closeSync(this.traceFd);
      for (const s of this.sockets) s.destroy();
      for (const s of this.servers) s.close();
      this.exit?.(status);
    }
  }
}

/** HMP's argument splitting for qemu-io: words, and double-quoted strings with backslash escapes. */
function hmpWords(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) break;
    if (line[i] === '"') {
      i++;
      let s = "";
      while (i < line.length && line[i] !== '"') {
        if (line[i] === "\\" && i + 1 < line.length) i++;
        s += line[i++];
      }
      i++;
      out.push(s);
    } else {
      let s = "";
      while (i < line.length && !/\s/.test(line[i]!)) s += line[i++];
      out.push(s);
    }
  }
  return out;
}
