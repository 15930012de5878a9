/**
 * `xenide system-x86_64 [QEMU options]`: the QEMU drop-in launcher (also installed as `xenide-system-x86_64`),
 * with QEMU's own command line. Everything after the command name is QEMU's, handed over untouched.
 */
import type { Command } from "commander";
import { runSystem } from "../../qemu/main.ts";

export function register(program: Command): void {
  program
    .command("system-x86_64")
    .description(
      "QEMU's command line (-machine pc -qtest ... -qmp ... -drive ...) for xenide's PC: a drop-in for\n" +
        "qemu-system-x86_64 under libqtest (QTEST_QEMU_BINARY) and QMP; `-help` lists the options",
    )
    .argument("[qemu-options...]", "QEMU's options, as qemu-system-x86_64 takes them")
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (_args: string[], _opts: unknown, cmd: Command) => {
      // commander has sorted words into options and operands; QEMU's syntax is positional: take the raw words.
      // (rawArgs: commander's record of the words it was given; not in its type declarations.)
      const all = (cmd.parent as unknown as { rawArgs?: string[] } | null)?.rawArgs ?? process.argv;
      const at = all.indexOf("system-x86_64");
      const status = await runSystem(all.slice(at + 1));
      // QEMU's exit status (1 for a bad option, not the CLI's 2), and no socket or timer left to wait for.
      process.exit(status);
    });
}
