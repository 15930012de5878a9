/**
 * Node's built-in modules that most runs never use, loaded at their first use instead of at start-up: importing
 * node:worker_threads and node:zlib costs ~2.5 ms of a process's start here, and the QEMU launcher starts a
 * process per test case. Their types come from `import type`, which loads nothing.
 */
import { createRequire } from "node:module";
import type * as WorkerThreads from "node:worker_threads";
import type * as Zlib from "node:zlib";

// Built-in modules resolve from any base path, so the same call serves the ESM and the CommonJS builds.
const load = createRequire(process.execPath);

let workerThreadsModule: typeof WorkerThreads | undefined;
let zlibModule: typeof Zlib | undefined;

/** node:worker_threads (NBD's socket worker, the threaded PV machine). */
export function workerThreads(): typeof WorkerThreads {
  return (workerThreadsModule ??= load("node:worker_threads") as typeof WorkerThreads);
}

/** node:zlib (qcow2's compressed clusters). */
export function zlib(): typeof Zlib {
  return (zlibModule ??= load("node:zlib") as typeof Zlib);
}
