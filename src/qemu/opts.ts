/**
 * QEMU's command-line syntax, as qemu-system-x86_64 7.2 reads it: `-opt ARG` (or `--opt ARG`), and option
 * arguments in QemuOpts form, `key=val,key=val`, where `,,` is a literal comma, a first element without `=` is the
 * option's implied key (`-device ide-hd,...` is driver=ide-hd), and a bare `key` elsewhere means key=on.
 */

/** A command line QEMU would refuse: one line, in QEMU's words, naming the option. Exit status 1, as QEMU's. */
export class QemuUsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "QemuUsageError";
  }
}

/** One option argument's keys in order (a key given twice keeps both; `get` returns the last, as QemuOpts). */
export class QemuOpts {
  constructor(
    /**
     * The option and its argument as written (`-drive file=a.img,if=ide`): QEMU's messages about an option lead
     * with this (its error location), e.g. `-device ide-hd,drive=d0: Block node is read-only`.
     */
    readonly option: string,
    readonly entries: readonly (readonly [string, string])[],
  ) {}

  get(key: string): string | undefined {
    for (let i = this.entries.length - 1; i >= 0; i--)
      if (this.entries[i]![0] === key) return this.entries[i]![1];
    return undefined;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  keys(): string[] {
    return this.entries.map((e) => e[0]);
  }

  /** Refuse keys outside `allowed`, as QemuOpts does ("Invalid parameter 'x'"). */
  only(allowed: readonly string[]): this {
    for (const [k] of this.entries)
      if (!allowed.includes(k)) throw new QemuUsageError(`${this.option}: Invalid parameter '${k}'`);
    return this;
  }

  /** A QemuOpts boolean (on/off, yes/no, true/false). */
  bool(key: string, dflt: boolean): boolean {
    const v = this.get(key);
    if (v === undefined) return dflt;
    if (v === "on" || v === "yes" || v === "true") return true;
    if (v === "off" || v === "no" || v === "false") return false;
    throw new QemuUsageError(`${this.option}: Parameter '${key}' expects 'on' or 'off'`);
  }

  /** A non-negative decimal (or 0x hex) integer. */
  uint(key: string): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v))
      throw new QemuUsageError(`${this.option}: Parameter '${key}' expects a non-negative number below 2^64`);
    return Number(v);
  }
}

/**
 * Split an option argument into keys and values (QEMU's opts_do_parse): `,,` escapes a comma; `implied` names
 * the key of a first element without `=`; a later element without `=` is `key=on` (`nokey` is `key=off`).
 */
export function parseOpts(
  option: string,
  arg: string,
  implied?: string,
  where = arg === "" ? option : `${option} ${arg}`,
): QemuOpts {
  const parts: string[] = [];
  let cur = "";
  for (let i = 0; i < arg.length; i++) {
    const c = arg[i]!;
    if (c === ",") {
      if (arg[i + 1] === ",") {
        cur += ",";
        i++;
        continue;
      }
      parts.push(cur);
      cur = "";
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  const entries: [string, string][] = [];
  parts.forEach((p, i) => {
    const eq = p.indexOf("=");
    if (eq >= 0) {
      const key = p.slice(0, eq);
      if (key === "") throw new QemuUsageError(`${where}: Invalid parameter ''`);
      entries.push([key, p.slice(eq + 1)]);
    } else if (i === 0 && implied !== undefined) {
      entries.push([implied, p]);
    } else if (p === "") {
      if (i !== parts.length - 1 || parts.length === 1)
        throw new QemuUsageError(`${where}: Invalid parameter ''`);
    } else if (p.startsWith("no") && p.length > 2) {
      entries.push([p.slice(2), "off"]);
    } else entries.push([p, "on"]);
  });
  return new QemuOpts(where, entries);
}

/**
 * A size as QEMU's `-m` reads it (qemu_strtosz with MiB as the default unit): a number, optionally with a
 * fraction, and a suffix B, K, M, G, T (powers of 1024).
 */
export function parseMemSize(option: string, v: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)([bBkKmMgGtT]?)$/.exec(v);
  if (!m) throw new QemuUsageError(`${option}: Parameter 'size' expects a non-negative number below 2^64`);
  const unit = { "": 1 << 20, b: 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 }[m[2]!.toLowerCase()]!;
  const n = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n <= 0) throw new QemuUsageError(`${option}: invalid size ${v}`);
  return n;
}

/** How an option of the command line takes its argument. */
interface OptionDef {
  /** The option takes an argument. */
  arg: boolean;
}

/** The options the launcher understands (without the leading dash). */
const OPTIONS: Readonly<Record<string, OptionDef>> = {
  machine: { arg: true },
  M: { arg: true },
  accel: { arg: true },
  m: { arg: true },
  display: { arg: true },
  nodefaults: { arg: false },
  S: { arg: false },
  qtest: { arg: true },
  "qtest-log": { arg: true },
  chardev: { arg: true },
  mon: { arg: true },
  qmp: { arg: true },
  drive: { arg: true },
  blockdev: { arg: true },
  device: { arg: true },
  global: { arg: true },
  trace: { arg: true },
  D: { arg: true },
  hda: { arg: true },
  hdb: { arg: true },
  hdc: { arg: true },
  hdd: { arg: true },
  cdrom: { arg: true },
  compat: { arg: true },
  version: { arg: false },
  h: { arg: false },
  help: { arg: false },
};

/** One option of the command line, in order. */
export interface CommandLineOption {
  /** The name without dashes (`drive`). */
  readonly name: string;
  /** The argument (empty for a flag). */
  readonly arg: string;
}

/**
 * Split argv into options (QEMU's lookup_opt): each word starting with `-` is an option, `--opt` equals `-opt`;
 * an unknown option is refused as QEMU refuses it (`-foo: invalid option`), and so is a non-option word.
 */
export function splitCommandLine(argv: readonly string[]): CommandLineOption[] {
  const out: CommandLineOption[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (!word.startsWith("-") || word === "-") {
      // QEMU takes a lone word as the image of -hda; we ask for it to be named.
      throw new QemuUsageError(`${word}: give the image with -drive file=${word} (or -hda ${word})`);
    }
    const name = word.startsWith("--") ? word.slice(2) : word.slice(1);
    const def = OPTIONS[name];
    if (!def) throw new QemuUsageError(`-${name}: invalid option`);
    if (!def.arg) {
      out.push({ name, arg: "" });
      continue;
    }
    const arg = argv[i + 1];
    if (arg === undefined) throw new QemuUsageError(`-${name}: requires an argument`);
    out.push({ name, arg });
    i++;
  }
  return out;
}
