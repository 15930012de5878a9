// QEMU's own image tools as the judge of xenide's qcow2 images: qemu-img (create, convert, check, compare,
// info) and qemu-io (writes into images through QEMU's block layer). Debian's qemu-utils.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { it } from "vitest";

/** Why the qemu-utils tests cannot run here, or undefined. */
export function qemuUtilsMissing(): string | undefined {
  for (const program of ["qemu-img", "qemu-io"]) {
    if (spawnSync(program, ["--version"]).status !== 0)
      return `${program} not found (apt-get install qemu-utils)`;
  }
  return undefined;
}

/**
 * The skip decision of a qemu-utils test file: under CI a missing program is a failing test; elsewhere the file
 * skips with one line saying why. Returns true when the tests can run.
 */
export function requireQemuUtils(what: string): boolean {
  const reason = qemuUtilsMissing();
  if (reason && process.env.CI === "true") {
    it("qemu-utils is installed (required under CI)", () => {
      throw new Error(reason);
    });
  } else if (reason) {
    console.log(`skipping ${what}: ${reason}`);
  }
  return reason === undefined;
}

export interface Run {
  status: number | null;
  out: string;
}

function run(program: string, args: string[], cwd?: string): Run {
  const r = spawnSync(program, args, { encoding: "utf8", timeout: 60_000, ...(cwd ? { cwd } : {}) });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** qemu-img, failing the test when it fails (`mayFail`: return its result instead). */
export function qemuImg(args: string[], opts: { cwd?: string; mayFail?: boolean } = {}): Run {
  const r = run("qemu-img", args, opts.cwd);
  if (r.status !== 0 && !opts.mayFail)
    throw new Error(`qemu-img ${args.join(" ")} failed (${r.status}): ${r.out}`);
  return r;
}

/** qemu-io commands (`-c` each) on an image of format `format`. */
export function qemuIo(format: string, image: string, commands: string[]): void {
  const r = run("qemu-io", ["-f", format, image, ...commands.flatMap((c) => ["-c", c])]);
  if (r.status !== 0 || /error|failed/i.test(r.out)) {
    throw new Error(`qemu-io ${commands.join("; ")} on ${image} failed (${r.status}): ${r.out}`);
  }
}

/** The guest-visible bytes of `image` as QEMU reads them: `qemu-img convert -O raw`. */
export function qemuRaw(image: string, dir: string): Buffer {
  const out = path.join(dir, `${path.basename(image)}.converted.raw`);
  qemuImg(["convert", "-O", "raw", image, out]);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

export interface CheckResult {
  status: number | null;
  corruptions: number;
  leaks: number;
  checkErrors: number;
  out: string;
}

/** `qemu-img check --output=json` (with `repair`: `-r all`). */
export function qemuCheck(image: string, repair = false): CheckResult {
  const r = spawnSync("qemu-img", ["check", ...(repair ? ["-r", "all"] : []), "--output=json", image], {
    encoding: "utf8",
    timeout: 60_000,
  });
  let json: Record<string, number> = {};
  try {
    json = JSON.parse(r.stdout) as Record<string, number>;
  } catch {
    // not JSON: the numbers stay 0 and `out` says what happened
  }
  return {
    status: r.status,
    corruptions: json["corruptions"] ?? 0,
    leaks: json["leaks"] ?? 0,
    checkErrors: json["check-errors"] ?? 0,
    out: `${r.stdout}${r.stderr}`,
  };
}

/** Whether `qemu-img compare` finds the two images' guest contents identical. */
export function qemuCompare(a: string, b: string): Run {
  return run("qemu-img", ["compare", a, b]);
}

/**
 * A fresh directory on tmpfs where there is one (/dev/shm), else the usual temporary folder: the storms flush
 * hundreds of times, and on a busy disk each fdatasync costs milliseconds that prove nothing here.
 */
export function fastTempDir(): string {
  try {
    fs.accessSync("/dev/shm", fs.constants.W_OK);
    return fs.mkdtempSync(path.join("/dev/shm", "xenide-qcow2-"));
  } catch {
    return fs.mkdtempSync(path.join(os.tmpdir(), "xenide-qcow2-"));
  }
}
