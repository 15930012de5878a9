/**
 * The entry point of `xenide-system-x86_64` (bin/xenide-system-x86_64 runs the bundle built from it): QEMU's
 * command line, nothing else loaded, so that a machine per test case starts fast.
 */
import { runLauncher } from "./launcher.ts";

export { runLauncher };

/** Run with `argv` (user arguments only) on the process's stdio; resolves with the exit status. */
export function runSystem(argv: readonly string[]): Promise<number> {
  // Getters: Node builds a stdio stream the first time it is asked for (stdin's costs ~4 ms of start-up here),
  // and most runs never use stdin or stdout (libqtest's use sockets).
  return runLauncher(argv, {
    get stdin() {
      return process.stdin;
    },
    get stdout() {
      return process.stdout;
    },
    get stderr() {
      return process.stderr;
    },
  });
}
