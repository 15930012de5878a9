// The command-line options of the scripts in bench/: `--name value` pairs anywhere among the arguments.

/**
 * Take `--name value` out of `args` (so what is left are the positional arguments) and return the value, or
 * `fallback` when the option is not there.
 */
export function takeOption(args, name, fallback) {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
}
