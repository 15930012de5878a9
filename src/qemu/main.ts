/**
 * The entry point of `xenide-system-x86_64` (bin/xenide-system-x86_64 runs the bundle built from it): QEMU's
 * command line, nothing else loaded, so that a machine per test case starts fast.
 */
import { runLauncher } from "./launcher.ts";

export { runLauncher };

/** Run with `argv` (user arguments only) on the process's stdio; resolves with the exit status. */
export function runSystem(argv: readonly string[]): Promise<number> {
  return runLauncher(argv, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
}
