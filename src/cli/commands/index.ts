/**
 * Every CLI command registers itself here: one module per command, each exporting `register(program)`.
 */
import type { Command } from "commander";

export type CommandModule = { register(program: Command): void };

export const commandModules: (() => Promise<CommandModule>)[] = [
  () => import("./mkimage.ts"),
  () => import("./info.ts"),
  () => import("./pv-keys.ts"),
  () => import("./identify.ts"),
  () => import("./read.ts"),
  () => import("./write.ts"),
  () => import("./qtest.ts"),
  () => import("./bench.ts"),
  () => import("./report.ts"),
  () => import("./demo.ts"),
  () => import("./vm.ts"),
  () => import("./xenstored.ts"),
  () => import("./system-x86_64.ts"),
];
