/**
 * Who may use an image at once: any number of readers, or one writer and nobody else. Two locks carry the rule.
 *
 * 1. **The kernel lock, as QEMU takes it** (`block/file-posix.c`). Open-file-description (OFD) byte-range locks
 *    on the image file itself: a shared (F_RDLCK) lock on byte 100+i says "I use permission i", one on byte
 *    200+i says "I do not let others have permission i", and before using the image an opener tests
 *    (F_OFD_GETLK) that no one else holds the bytes that forbid it. The permissions are QEMU's: 0 consistent
 *    read, 1 write, 2 write-unchanged, 3 resize. A xenide reader takes what `qemu-img` and a `readonly=on` drive
 *    take (uses consistent read; shares consistent read and unchanged writes, not writes or resizes); a writer
 *    takes what a read-write guest drive takes (uses consistent read and write, shares the same). So xenide,
 *    QEMU, qemu-img and qemu-io refuse each other's writes in both directions, two readers share, and a reader
 *    and a writer exclude each other. The locks belong to xenide's own descriptor of the image: they go when it
 *    is closed, or when the process ends in any way (a crash or SIGKILL included), so they are never stale.
 *
 *    Node has no fcntl(2). The locks are taken by a short-lived helper — `perl` (Debian's perl-base, which every
 *    Debian system has), else `python3` — that receives a duplicate of xenide's descriptor as its fd 3: a
 *    duplicate shares the open file description, and the description is what owns an OFD lock, so the locks
 *    outlive the helper and last exactly as long as xenide's descriptor. No native build is involved. Without a
 *    helper (neither program on PATH, `XENIDE_LOCK_HELPER=none`), off 64-bit Linux, or on a filesystem that
 *    refuses OFD locks, there is no kernel lock and the lock files alone decide (QEMU then cannot see xenide).
 *
 * 2. **Lock files beside the image**, the only lock where there is no kernel lock, and the record of which
 *    xenide process holds the image and how. A writer's record is `IMG.lock`, created atomically: written to a
 *    private temporary file, then hard-linked (link(2) fails with EEXIST if the lock exists), so it is never
 *    seen half-written. Each reader has its own record, `IMG.lock.reader.PID.TOKEN`. A writer links `IMG.lock`
 *    and then looks for live readers; a reader creates its record and then looks for a live writer; each backs
 *    out when it sees the other, so a reader and a writer never both succeed (in a close race both may fail).
 *    A record is stale when its process is gone, or when it says its holder also held the kernel lock and that
 *    lock is free now (a pid reused by another program cannot keep it alive); a stale writer record is taken
 *    over: renamed to a private name, and removed only if it is still the stale record, so two processes
 *    taking over the same stale lock cannot both win. Where the image's directory is not writable the records
 *    cannot be made: with the kernel lock held that is fine (it alone excludes), and a writer without it is
 *    refused, since nothing would protect the image.
 *
 * Pass `lock: false` (RawImageOptions) to take neither, for example to inspect an image whose writer is
 * stopped in a debugger. Records are removed on close and when the process exits normally.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  type BigIntStats,
  closeSync,
  fstatSync,
  linkSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

import { ImageError, ImageLockedError } from "./errors.ts";

export type LockMode = "read" | "write";

export function lockPathOf(imagePath: string): string {
  return `${imagePath}.lock`;
}

// ---- the kernel lock (QEMU's OFD byte locks) ----

/** RAW_LOCK_PERM_BASE and RAW_LOCK_SHARED_BASE of QEMU's block/file-posix.c. */
const PERM_BASE = 100;
const SHARED_BASE = 200;
/** QEMU's BLK_PERM_* bit numbers (include/block/block-common.h). */
const CONSISTENT_READ = 0;
const WRITE = 1;
const RESIZE = 3;

/** The permissions a mode uses and the ones it does not share, as QEMU's drives and qemu-img take them. */
const PERMS: Record<LockMode, { use: number[]; unshared: number[] }> = {
  read: { use: [CONSISTENT_READ], unshared: [WRITE, RESIZE] },
  write: { use: [CONSISTENT_READ, WRITE], unshared: [WRITE, RESIZE] },
};

/** Bytes to read-lock for `mode`, and bytes that must be free of other holders' locks (raw_check_lock_bytes). */
function kernelBytes(mode: LockMode): { set: number[]; test: number[] } {
  const p = PERMS[mode];
  return {
    set: [...p.use.map((i) => PERM_BASE + i), ...p.unshared.map((i) => SHARED_BASE + i)],
    test: [...p.use.map((i) => SHARED_BASE + i), ...p.unshared.map((i) => PERM_BASE + i)],
  };
}

/**
 * The helpers' exit status after "ok". A caller that only needs to know that the locks are set can run a helper
 * without reading its output (`runHelperAsync`); a status no program exits with by accident (unlike 0) keeps a
 * program that ignores its arguments from passing for one that set the locks.
 */
const HELPER_OK_STATUS = 42;

// The helper: read-locks the bytes of argv[1] on fd 3 (F_OFD_SETLK = 37, F_RDLCK), then tests the bytes of
// argv[2] for a conflicting lock of another description (F_OFD_GETLK = 36 with F_WRLCK, as QEMU's test). It
// prints "ok", "conflict BYTE PID" (PID -1 for an OFD lock, whose owner the kernel does not say) or
// "error ERRNO TEXT"; on anything but "ok" it unlocks what it set. struct flock on 64-bit Linux: short l_type,
// short l_whence, 4 bytes padding, off_t l_start, off_t l_len, pid_t l_pid, 4 bytes padding (32 bytes).
// F_RDLCK 0, F_WRLCK 1, F_UNLCK 2; EAGAIN 11 and EACCES 13 mean "held by someone else". After "ok" it exits
// with HELPER_OK_STATUS, after any other verdict with 0.
// No `use` at all (not even strict): each module is a file perl finds and compiles at every start.
const PERL_HELPER = String.raw`
my $F = "s s x4 q q i x4";
open(my $fh, "<&=", 3) or do { print "error 9 fd 3: $!\n"; exit 0 };
my @set = grep { length } split(/,/, $ARGV[0] // "");
my @test = grep { length } split(/,/, $ARGV[1] // "");
sub unlock { for my $b (@set) { my $f = pack($F, 2, 0, $b, 1, 0); fcntl($fh, 37, $f); } }
for my $b (@set) {
  my $f = pack($F, 0, 0, $b, 1, 0);
  unless (fcntl($fh, 37, $f)) {
    my $e = $! + 0; my $t = "$!"; unlock();
    print(($e == 11 || $e == 13) ? "conflict $b 0\n" : "error $e $t\n"); exit 0;
  }
}
for my $b (@test) {
  my $f = pack($F, 1, 0, $b, 1, 0);
  unless (fcntl($fh, 36, $f)) { my $e = $! + 0; my $t = "$!"; unlock(); print "error $e $t\n"; exit 0; }
  my ($type, $whence, $start, $len, $pid) = unpack($F, $f);
  if ($type != 2) { unlock(); print "conflict $b $pid\n"; exit 0; }
}
print "ok\n";
exit ${HELPER_OK_STATUS};
`;

const PYTHON_HELPER = `
import fcntl, struct, sys
F = "=hh4xqqi4x"
def arg(i):
    return [int(b) for b in sys.argv[i].split(",") if b] if len(sys.argv) > i else []
s, t = arg(1), arg(2)
def unlock():
    for b in s:
        try:
            fcntl.fcntl(3, 37, struct.pack(F, 2, 0, b, 1, 0))
        except OSError:
            pass
def main():
    for b in s:
        try:
            fcntl.fcntl(3, 37, struct.pack(F, 0, 0, b, 1, 0))
        except OSError as e:
            unlock()
            return "conflict %d 0" % b if e.errno in (11, 13) else "error %d %s" % (e.errno, e.strerror)
    for b in t:
        try:
            r = fcntl.fcntl(3, 36, struct.pack(F, 1, 0, b, 1, 0))
        except OSError as e:
            unlock()
            return "error %d %s" % (e.errno, e.strerror)
        typ, _w, _s, _l, pid = struct.unpack(F, r)
        if typ != 2:
            unlock()
            return "conflict %d %d" % (b, pid)
    return "ok"
r = main()
print(r)
sys.exit(${HELPER_OK_STATUS} if r == "ok" else 0)
`;

interface Helper {
  program: string;
  args: string[];
}

function helperFor(program: string): Helper {
  return basename(program).startsWith("python")
    ? { program, args: ["-S", "-E", "-c", PYTHON_HELPER] }
    : { program, args: ["-e", PERL_HELPER] };
}

/** The helper's environment: ours without what would load other code into perl (python runs with -S -E). */
function helperEnv(): NodeJS.ProcessEnv {
  // Usually none is set: then ours as it is (copying the environment costs ~1 ms of a launcher's start here).
  const e = process.env;
  if (e.PERL5OPT === undefined && e.PERL5LIB === undefined && e.PERLLIB === undefined) return e;
  const env = { ...e };
  delete env.PERL5OPT;
  delete env.PERL5LIB;
  delete env.PERLLIB;
  return env;
}

/** Per XENIDE_LOCK_HELPER setting: the helper found to work in this process, or why none does. */
const helperChoice = new Map<string, { helper: Helper } | { helper: null; reason: string }>();

function helperSetting(): string {
  return process.env.XENIDE_LOCK_HELPER ?? "perl,python3";
}

/** The programs to try, in order, or why there is no kernel lock here. */
function helperPrograms(setting: string): string[] | string {
  if (process.platform !== "linux") return `OFD locks are Linux's (this is ${process.platform})`;
  if (process.arch !== "x64" && process.arch !== "arm64") {
    return `the lock helper knows struct flock on 64-bit x86 and Arm only (this is ${process.arch})`;
  }
  const list = setting
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "" && s !== "none");
  return list.length > 0 ? list : "turned off by XENIDE_LOCK_HELPER=none";
}

type KernelResult =
  { kind: "ok" } | { kind: "conflict"; byte: number; pid: number } | { kind: "unavailable"; reason: string };

/** The programs to run for the current setting (the one known to work first), or the verdict without one. */
function helperCandidates(): { setting: string; programs: string[] } | KernelResult {
  const setting = helperSetting();
  const known = helperChoice.get(setting);
  if (known && !known.helper) return { kind: "unavailable", reason: known.reason };
  const programs = known?.helper ? [known.helper.program] : helperPrograms(setting);
  if (typeof programs === "string") return { kind: "unavailable", reason: programs };
  return { setting, programs };
}

/** How one helper run ended. */
interface HelperRun {
  error?: Error;
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The verdict of a helper run, or why the program is broken (then the next one is tried). */
function verdictOf(setting: string, h: Helper, r: HelperRun): KernelResult | { broken: string } {
  const line = r.stdout.split("\n")[0]!.trim();
  const m = /^(?:(ok)|conflict (\d+) (-?\d+)|error (\d+) ?(.*))$/.exec(line);
  if (r.error || !m || r.status !== (m[1] === "ok" ? HELPER_OK_STATUS : 0)) {
    const why = r.error?.message ?? (r.stderr.trim().split("\n")[0] || `exit status ${r.status}`);
    return { broken: `the lock helper ${h.program} failed (${why})` };
  }
  helperChoice.set(setting, { helper: h });
  if (m[1] === "ok") return { kind: "ok" };
  if (m[2] !== undefined) return { kind: "conflict", byte: Number(m[2]), pid: Number(m[3]) };
  return {
    kind: "unavailable",
    reason: `the kernel refused an OFD lock on this file (errno ${m[4]}${m[5] ? `, ${m[5]}` : ""})`,
  };
}

/** No program ran: the last one's failure, or that none is installed. */
function noHelper(setting: string, programs: string[], failed: string | undefined): KernelResult {
  if (failed) return { kind: "unavailable", reason: failed };
  const reason = `no lock helper: ${programs.join(" and ")} ${programs.length > 1 ? "are" : "is"} not on PATH`;
  helperChoice.set(setting, { helper: null, reason });
  return { kind: "unavailable", reason };
}

const HELPER_TIMEOUT_MS = 20_000;

/** Run the helper on `fd`: set the read locks `set` on its description, then test `test`. */
function runHelper(fd: number, set: number[], test: number[]): KernelResult {
  const c = helperCandidates();
  if ("kind" in c) return c;
  let failed: string | undefined;
  for (const program of c.programs) {
    const h = helperFor(program);
    const r = spawnSync(h.program, [...h.args, set.join(","), test.join(",")], {
      stdio: ["ignore", "pipe", "pipe", fd],
      encoding: "utf8",
      timeout: HELPER_TIMEOUT_MS,
      env: helperEnv(),
    });
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") continue;
    const v = verdictOf(c.setting, h, {
      ...(r.error ? { error: r.error } : {}),
      status: r.status,
      stdout: r.stdout ?? "",
      stderr: r.stderr ?? "",
    });
    if ("broken" in v) {
      failed = v.broken;
      continue; // a broken program: try the next one
    }
    return v;
  }
  return noHelper(c.setting, c.programs, failed);
}

/**
 * Start helper `h` on `fd`; `end` gets how it ended once it has, with its output when `piped` (without, its
 * stdout and stderr go to /dev/null: no pipes to make and read).
 */
function spawnHelper(
  h: Helper,
  args: string[],
  fd: number,
  piped: boolean,
  end: (r: HelperRun) => void,
): void {
  const child = spawn(h.program, [...h.args, ...args], {
    stdio: piped ? ["ignore", "pipe", "pipe", fd] : ["ignore", "ignore", "ignore", fd],
    env: helperEnv(),
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), HELPER_TIMEOUT_MS);
  let ended = false;
  const finish = (error: Error | undefined, status: number | null): void => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    end({ ...(error ? { error } : {}), status, stdout, stderr });
  };
  child.once("error", (e) => finish(e, null));
  child.once("close", (status) => finish(undefined, status));
}

/**
 * `runHelper` without waiting: the process goes on while the helper starts and runs; `done` gets the verdict.
 * Each program runs first without pipes, its verdict read from its exit status alone: locks set (the common
 * case) cost one process and no streams. Anything else runs it again with its output read, for the verdict's
 * details or the failure's text (a refusal leaves nothing locked, so the second run sees what the first did).
 */
function runHelperAsync(fd: number, set: number[], test: number[], done: (r: KernelResult) => void): void {
  const c = helperCandidates();
  if ("kind" in c) return done(c);
  const args = [set.join(","), test.join(",")];
  let failed: string | undefined;
  const notFound = (r: HelperRun): boolean =>
    (r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
  const quiet = (i: number): void => {
    if (i >= c.programs.length) return done(noHelper(c.setting, c.programs, failed));
    const h = helperFor(c.programs[i]!);
    spawnHelper(h, args, fd, false, (r) => {
      if (notFound(r)) return quiet(i + 1);
      if (!r.error && r.status === HELPER_OK_STATUS) {
        helperChoice.set(c.setting, { helper: h });
        return done({ kind: "ok" });
      }
      spawnHelper(h, args, fd, true, (r2) => {
        if (notFound(r2)) return quiet(i + 1);
        const v = verdictOf(c.setting, h, r2);
        if (!("broken" in v)) return done(v);
        failed = v.broken;
        quiet(i + 1); // a broken program: try the next one
      });
    });
  };
  quiet(0);
}

/** Why this process cannot take kernel locks, or undefined when it can (tries the helper on /dev/null). */
export function kernelLockUnavailable(): string | undefined {
  const fd = openSync("/dev/null", "r");
  try {
    const r = runHelper(fd, [], []);
    return r.kind === "unavailable" ? r.reason : undefined;
  } finally {
    closeSync(fd);
  }
}

// ---- who holds an image ----

/** A process holding QEMU-style locks on an image. */
interface Holder {
  pid: number;
  /** How it holds the image: "write" when it uses the write or resize permission. */
  mode: LockMode | undefined;
  /** Its command name (/proc/PID/comm). */
  program?: string;
}

const LOCK_LINE =
  /^lock:\s+\d+:\s+(?:OFDLCK|POSIX)\s+\S+\s+(?:READ|WRITE)\s+-?\d+\s+\S+:(\d+)\s+(\d+)\s+(\d+|EOF)/;

/**
 * The processes holding QEMU-style byte locks on the file `st` (by /proc/PID/fd and /proc/PID/fdinfo, which
 * list each descriptor's locks), writers first. Processes of other users are invisible without privileges.
 */
function kernelHolders(st: BigIntStats): Holder[] {
  const found: Holder[] = [];
  let pids: string[];
  try {
    pids = readdirSync("/proc");
  } catch {
    return found;
  }
  for (const pid of pids) {
    if (!/^\d+$/.test(pid)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    let mode: LockMode | undefined;
    let holds = false;
    for (const fd of fds) {
      let fst: BigIntStats | undefined;
      try {
        fst = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
      } catch {
        continue;
      }
      if (fst.ino !== st.ino || fst.dev !== st.dev) continue;
      let info: string;
      try {
        info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8");
      } catch {
        continue;
      }
      for (const line of info.split("\n")) {
        const m = LOCK_LINE.exec(line);
        if (!m || BigInt(m[1]!) !== st.ino) continue;
        const start = Number(m[2]);
        const end = m[3] === "EOF" ? Infinity : Number(m[3]);
        const covers = (b: number) => start <= b && b <= end;
        const overlaps = (lo: number) => start <= lo + 9 && end >= lo;
        if (!overlaps(PERM_BASE) && !overlaps(SHARED_BASE)) continue; // not one of QEMU's lock bytes
        holds = true;
        if (covers(PERM_BASE + WRITE) || covers(PERM_BASE + RESIZE)) mode = "write";
        else if (covers(PERM_BASE + CONSISTENT_READ) && mode === undefined) mode = "read";
      }
    }
    if (!holds) continue;
    let program: string | undefined;
    try {
      program = readFileSync(`/proc/${pid}/comm`, "utf8").trim() || undefined;
    } catch {
      // gone meanwhile: name it without its program
    }
    found.push({ pid: Number(pid), mode, ...(program ? { program } : {}) });
  }
  return found.sort((a, b) => Number(b.mode === "write") - Number(a.mode === "write"));
}

// ---- lock files ----

interface LockRecord {
  pid: number;
  mode: LockMode;
  /** The holder also held the kernel lock. */
  kernel: boolean;
  text: string;
}

/** True when a process with this pid exists (EPERM: it exists but belongs to someone else). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A record: "PID MODE[ kernel] TOKEN" (or an older lock's bare "PID", a writer without the kernel lock). */
function readRecord(file: string, defaultMode: LockMode): LockRecord | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EISDIR") return undefined;
    throw e;
  }
  const words = text.trim().split(/\s+/);
  const pid = Number.parseInt(words[0] ?? "", 10);
  // An unparsable record cannot come from us (we never expose a partial one): treat it as held by pid 0,
  // which is never a live user process, so it is stale.
  return {
    pid: Number.isSafeInteger(pid) && pid > 0 ? pid : 0,
    mode: words[1] === "read" || words[1] === "write" ? words[1] : defaultMode,
    kernel: words[2] === "kernel",
    text,
  };
}

/**
 * Is this record's holder still there? Its process must run, and if it held the kernel lock while we now hold
 * one that conflicts with it, it is gone (its pid may have been reused by another program).
 */
function recordLive(r: LockRecord, ourKernelLock: boolean): boolean {
  if (r.pid <= 0 || !pidAlive(r.pid)) return false;
  return !(r.kernel && ourKernelLock);
}

function readerPrefix(lockPath: string): string {
  return `${basename(lockPath)}.reader.`;
}

/** Reader records beside the image (file names). */
function readerRecords(lockPath: string): string[] {
  const dir = dirname(lockPath);
  const prefix = readerPrefix(lockPath);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.startsWith(prefix)).map((n) => join(dir, n));
}

function token(): string {
  return Math.random().toString(36).slice(2, 10);
}

/** Records this process created, removed at exit if still ours. */
const held = new Map<string, string>();
let exitHookInstalled = false;

function removeIfOurs(file: string, text: string): void {
  try {
    if (readFileSync(file, "utf8") === text) unlinkSync(file);
  } catch {
    // already gone: nothing to release
  }
}

function releaseAllOnExit(): void {
  for (const [file, text] of held) removeIfOurs(file, text);
  held.clear();
}

function remember(file: string, text: string): void {
  held.set(file, text);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", releaseAllOnExit);
  }
}

/** The writer record could not be created (its directory is not writable, say). */
class NoRecord {
  constructor(readonly reason: string) {}
}

/** What an `ImageLock` holds once taken. */
interface Taken {
  kernel: boolean;
  kernelUnavailable: string | undefined;
  record: string | null;
  recordText: string;
}

/** The open deferral, while one is (see `LockDeferral`). */
let deferral: LockDeferral | null = null;

/**
 * Kernel locks taken without waiting for the helper, so that a program's start-up goes on while it runs (the
 * QEMU launcher builds its machine meanwhile). While a deferral is open, `ImageLock.acquire` on a descriptor
 * starts the helper and returns at once a lock whose verdict is pending; when the verdict comes, the lock is
 * taken exactly as `acquire` takes it (the same checks and lock files, the same refusals). `end()` closes the
 * deferral and resolves once every verdict is in and every lock taken, or rejects with the first refusal, the
 * error `acquire` would have thrown. Nothing may let a guest use those images before it resolves; after a
 * refusal the caller closes them (which drops what the helper may have locked).
 */
export class LockDeferral {
  private readonly verdicts: Promise<void>[] = [];

  private constructor() {}

  /** Open a deferral (one at a time). */
  static begin(): LockDeferral {
    if (deferral) throw new Error("a lock deferral is already open");
    deferral = new LockDeferral();
    return deferral;
  }

  add(verdict: Promise<void>): void {
    this.verdicts.push(verdict);
  }

  /** Close the deferral (later acquires wait for their helper again) and wait for the verdicts. */
  async end(): Promise<void> {
    if (deferral === this) deferral = null;
    for (const r of await Promise.allSettled(this.verdicts)) if (r.status === "rejected") throw r.reason;
  }
}

export class ImageLock {
  private released = false;
  /** Null while the kernel lock's verdict is pending (see `LockDeferral`). */
  private taken: Taken | null;

  private constructor(
    readonly imagePath: string,
    readonly mode: LockMode,
    taken: Taken | null,
  ) {
    this.taken = taken;
  }

  /** The kernel lock is held (on the descriptor passed to `acquire`). */
  get kernel(): boolean {
    return this.taken?.kernel ?? false;
  }

  /** Why there is no kernel lock, when there is none. */
  get kernelUnavailable(): string | undefined {
    return this.taken ? this.taken.kernelUnavailable : "the lock helper's verdict is pending";
  }

  /** This holder's lock file, or null where none could be made (a read-only directory, with the kernel lock). */
  get record(): string | null {
    return this.taken?.record ?? null;
  }

  /** `IMG.lock`, the writer's lock file. */
  get lockPath(): string {
    return lockPathOf(this.imagePath);
  }

  /**
   * Take `imagePath` for `mode` or throw `ImageLockedError` naming a live holder. `fd` is the caller's open
   * descriptor of the image, which then carries the kernel lock until it is closed (null: lock files only).
   * On a throw the caller must close `fd` (that drops whatever kernel lock it got). While a `LockDeferral` is
   * open, the kernel lock's verdict and what follows from it come later, through the deferral.
   */
  static acquire(imagePath: string, fd: number | null, mode: LockMode): ImageLock {
    if (fd === null) return new ImageLock(imagePath, mode, ImageLock.take(imagePath, fd, mode, null));
    const k = kernelBytes(mode);
    if (deferral) {
      const lock = new ImageLock(imagePath, mode, null);
      deferral.add(
        new Promise<void>((resolve, reject) =>
          runHelperAsync(fd, k.set, k.test, (r) => {
            // Released (its descriptor closed) before the verdict: nothing to take any more.
            if (lock.released) return resolve();
            try {
              lock.taken = ImageLock.take(imagePath, fd, mode, r);
              resolve();
            } catch (e) {
              reject(e as Error);
            }
          }),
        ),
      );
      return lock;
    }
    return new ImageLock(imagePath, mode, ImageLock.take(imagePath, fd, mode, runHelper(fd, k.set, k.test)));
  }

  /** After the kernel lock's verdict `r` (null: no descriptor): refuse, or make the lock file. */
  private static take(imagePath: string, fd: number | null, mode: LockMode, r: KernelResult | null): Taken {
    const lockPath = lockPathOf(imagePath);
    if (r?.kind === "conflict") throw ImageLock.kernelConflict(imagePath, fd!, mode, r.byte, r.pid);
    const kernel = r?.kind === "ok";
    const kernelUnavailable =
      r === null ? "no descriptor to lock" : r.kind === "unavailable" ? r.reason : undefined;
    const text = `${process.pid} ${mode}${kernel ? " kernel" : ""} ${token()}\n`;
    const record =
      mode === "write"
        ? ImageLock.writerRecord(imagePath, lockPath, text, kernel)
        : ImageLock.readerRecord(imagePath, lockPath, text, kernel);
    if (record instanceof NoRecord) {
      // A read-only directory: the kernel lock alone protects the image. Without it a writer is refused.
      if (mode === "write" && !kernel) {
        throw new ImageError(
          "EOPEN",
          `cannot lock ${imagePath} for writing: the lock file ${lockPath} cannot be created (${record.reason}) ` +
            `and there is no kernel lock (${kernelUnavailable ?? "unavailable"}); make the directory writable, ` +
            `or install perl or python3 so xenide can take the kernel lock QEMU uses`,
          imagePath,
        );
      }
      return { kernel, kernelUnavailable, record: null, recordText: text };
    }
    return { kernel, kernelUnavailable, record, recordText: text };
  }

  /** Link `IMG.lock`, then make sure no live reader has a record; returns the record or why there is none. */
  private static writerRecord(
    imagePath: string,
    lockPath: string,
    text: string,
    kernel: boolean,
  ): string | NoRecord {
    const dir = dirname(lockPath);
    const tmp = join(dir, `.${basename(lockPath)}.${process.pid}.${token()}`);
    try {
      writeFileSync(tmp, text, { flag: "wx", mode: 0o644 });
    } catch (e) {
      return new NoRecord((e as NodeJS.ErrnoException).code ?? (e as Error).message);
    }
    try {
      let linked = false;
      for (let attempt = 0; attempt < 8; attempt++) {
        try {
          linkSync(tmp, lockPath);
          linked = true;
          break;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          // A filesystem without hard links (vfat, some network and FUSE filesystems): no record here.
          if (code !== "EEXIST") return new NoRecord(`${code ?? (e as Error).message} from link(2)`);
        }
        const r = readRecord(lockPath, "write");
        if (r === undefined) continue; // released meanwhile: try again
        if (recordLive(r, kernel)) throw recordConflict(imagePath, lockPath, r);
        takeOverStale(lockPath, r.text);
      }
      if (!linked) {
        const r = readRecord(lockPath, "write");
        if (r && r.pid > 0) throw recordConflict(imagePath, lockPath, r);
        throw new ImageError(
          "EOPEN",
          `cannot take the lock file ${lockPath}: it is not a lock file`,
          imagePath,
        );
      }
    } finally {
      rmSync(tmp, { force: true });
    }
    remember(lockPath, text);
    // Published; now the readers (each published before it looked for a writer, see readerRecord).
    for (const file of readerRecords(lockPath)) {
      const r = readRecord(file, "read");
      if (r === undefined) continue;
      if (recordLive(r, kernel)) {
        held.delete(lockPath);
        removeIfOurs(lockPath, text);
        throw recordConflict(imagePath, file, r);
      }
      rmSync(file, { force: true }); // a reader that died: its name is unique, so this removes only its record
    }
    return lockPath;
  }

  /** Create this reader's record, then make sure no live writer holds `IMG.lock`. */
  private static readerRecord(
    imagePath: string,
    lockPath: string,
    text: string,
    kernel: boolean,
  ): string | NoRecord {
    const file = join(dirname(lockPath), `${readerPrefix(lockPath)}${process.pid}.${token()}`);
    let record: string | NoRecord;
    try {
      writeFileSync(file, text, { flag: "wx", mode: 0o644 });
      remember(file, text);
      record = file;
    } catch (e) {
      record = new NoRecord((e as NodeJS.ErrnoException).code ?? (e as Error).message);
    }
    const w = readRecord(lockPath, "write");
    if (w !== undefined && recordLive(w, kernel)) {
      if (typeof record === "string") {
        held.delete(file);
        rmSync(file, { force: true });
      }
      throw recordConflict(imagePath, lockPath, w);
    }
    return record;
  }

  /** The kernel lock refused us: name who holds it (by /proc, else by the lock files). */
  private static kernelConflict(
    imagePath: string,
    fd: number,
    mode: LockMode,
    byte: number,
    pid: number,
  ): Error {
    const lockPath = lockPathOf(imagePath);
    const holders = kernelHolders(fstatSync(fd, { bigint: true }));
    // Who conflicts with us: for a reader only writers do; for a writer anyone.
    const holder = holders.find((h) => mode === "write" || h.mode !== "read") ?? holders[0];
    if (holder) return new ImageLockedError(imagePath, holder.pid, lockPath, holder.mode, holder.program);
    const records = [lockPath, ...readerRecords(lockPath)]
      .map((f) => ({ f, r: readRecord(f, f === lockPath ? "write" : "read") }))
      .filter(
        (x) =>
          x.r !== undefined && x.r.pid > 0 && pidAlive(x.r.pid) && (mode === "write" || x.r.mode === "write"),
      );
    if (records[0]) {
      const { f, r } = records[0];
      return new ImageLockedError(imagePath, r!.pid, lockPath, r!.mode, undefined, f);
    }
    // Not visible to us. The byte says what it forbids: 100+i are used permissions, 200+i unshared ones.
    const how: LockMode | undefined =
      byte === PERM_BASE + WRITE || byte === PERM_BASE + RESIZE || byte === SHARED_BASE + CONSISTENT_READ
        ? "write"
        : undefined;
    return new ImageLockedError(imagePath, pid > 0 ? pid : 0, lockPath, how);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    const t = this.taken;
    if (t === null || t.record === null) return;
    held.delete(t.record);
    // Only remove the record if it is still ours (nobody should have taken it, but do not delete another's).
    removeIfOurs(t.record, t.recordText);
  }
}

function recordConflict(imagePath: string, file: string, r: LockRecord): ImageLockedError {
  return new ImageLockedError(imagePath, r.pid, lockPathOf(imagePath), r.mode, undefined, file);
}

/** Move a stale writer record out of the way, unless it changed since it was read (`staleText`). */
function takeOverStale(lockPath: string, staleText: string): void {
  const aside = `${lockPath}.stale.${process.pid}.${token()}`;
  try {
    renameSync(lockPath, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return; // someone else moved it: retry
    throw e;
  }
  let now: string | undefined;
  try {
    now = readFileSync(aside, "utf8");
  } catch {
    now = undefined;
  }
  if (now === staleText) {
    rmSync(aside, { force: true });
    return;
  }
  // Between our read and our rename a live writer replaced the stale lock: put its lock back.
  try {
    linkSync(aside, lockPath);
  } catch {
    // a third process has linked its own lock meanwhile; the next attempt reports it
  }
  rmSync(aside, { force: true });
}

/**
 * The pid of a live process holding the image for writing, if any: a xenide writer's lock file, or (where the
 * kernel lock works) any program holding QEMU's write lock on the file — 0 when that program is not visible.
 */
export function lockHolder(imagePath: string): number | undefined {
  const r = readRecord(lockPathOf(imagePath), "write");
  if (r !== undefined && r.pid > 0 && pidAlive(r.pid)) return r.pid;
  let fd: number;
  try {
    fd = openSync(imagePath, "r");
  } catch {
    return undefined;
  }
  try {
    const w = runHelper(fd, [], [PERM_BASE + WRITE, PERM_BASE + RESIZE]);
    if (w.kind !== "conflict") return undefined;
    const writer = kernelHolders(fstatSync(fd, { bigint: true })).find((h) => h.mode === "write");
    return writer?.pid ?? 0;
  } finally {
    closeSync(fd);
  }
}
