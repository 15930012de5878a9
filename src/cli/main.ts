/**
 * `xenide`: the command-line entry point. Commands live in ./commands, one module each.
 */
import { pathToFileURL } from "node:url";
import { Command, CommanderError } from "commander";
import { commandModules } from "./commands/index.ts";
import { AtaError } from "../guest/ata-driver.ts";
import { ImageError } from "../storage/errors.ts";
import { NbdError } from "../storage/nbd/url.ts";
import { IoError } from "../storage/types.ts";
import { UsageError } from "./errors.ts";

/** The exit status of every command (README "Exit status"). */
export const EXIT_STATUS_HELP =
  "\nExit status: 0 success, 1 the operation failed (a missing or locked image, an I/O error, a refused\n" +
  "command), 2 a usage error (an unknown option, a malformed or out-of-range value).";

export async function buildProgram(): Promise<Command> {
  const program = new Command();
  program
    .name("xenide")
    .description(
      "Emulates how a Xen VM reaches its disk: a PIIX IDE controller behind ioreq exits (HVM) and the blkif\n" +
        "ring (PV), on real raw images, counting every exit and modelled cycle.",
    )
    .version(process.env.npm_package_version ?? "0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  for (const load of commandModules) (await load()).register(program);
  program.hook("preAction", (_program, action) => refuseEmptyPaths(action));
  // Every command, and its own --help, states the same exit status.
  for (const cmd of [program, ...program.commands]) cmd.addHelpText("after", EXIT_STATUS_HELP);
  return program;
}

/** Placeholders of options and arguments that name files (`--image <path>`, `<image>`, `[json]`...). */
const PATH_PLACEHOLDER = /^[<[](?:image|file|path|dir|iso|json|socket|out)[\]>]$/;

/**
 * An empty string where a file name belongs (`--trace ""`, `read ""`) would reach the file system as '' and come
 * back as a raw ENOENT, or worse be taken as "no value": refuse it as a usage error naming the option.
 */
function refuseEmptyPaths(cmd: Command): void {
  for (const opt of cmd.options) {
    const placeholder = opt.flags.split(/\s+/).pop() ?? "";
    if (!PATH_PLACEHOLDER.test(placeholder)) continue;
    if (cmd.getOptionValue(opt.attributeName()) === "")
      throw new UsageError(`${opt.long ?? opt.short}: a file name is needed, not an empty string`, 2);
  }
  cmd.registeredArguments.forEach((arg, i) => {
    if (!PATH_PLACEHOLDER.test(arg.required ? `<${arg.name()}>` : `[${arg.name()}]`)) return;
    if (cmd.processedArgs[i] === "")
      throw new UsageError(`<${arg.name()}>: a file name is needed, not an empty string`, 2);
  });
}

/** Run the CLI with `argv` (user arguments only). Returns the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = await buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its one-line message (or the help/version text).
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError) {
      // An empty message: a child process already printed the line (bench re-running itself, say).
      if (e.message) process.stderr.write(`xenide: ${e.message}\n`);
      return e.exitCode;
    }
    if (e instanceof NbdError && e.reason === "url") {
      // A malformed NBD URL is the user's spelling, not a failed operation.
      process.stderr.write(`xenide: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ImageError || e instanceof IoError || e instanceof AtaError) {
      // Problems with the user's image (missing, locked, bad size, I/O failure) or a command the emulated
      // drive refused (ATA ERR: say SET MULTIPLE MODE with a block size it does not support): one line, no stack.
      process.stderr.write(`xenide: ${e.message}\n`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === "string" && typeof err.message === "string" && err.syscall) {
      // A file-system error the user caused (missing file, permission): one line, no stack.
      process.stderr.write(`xenide: ${err.message}\n`);
      return 1;
    }
    throw e;
  }
}

// `head` closing the pipe early is not an error worth a stack trace.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(
        `xenide: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
      );
      process.exitCode = 70;
    },
  );
}
