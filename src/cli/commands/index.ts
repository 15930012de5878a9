/**
 * Every CLI command registers itself here: one module per command, each exporting `register(program)`.
 */
import type { Command } from "commander";

export type CommandModule = { register(program: Command): void };

export const commandModules: (() => Promise<CommandModule>)[] = [];
