// Preloaded (`node --import`) into a CLI child by the memory tests: on exit, the process's peak resident set
// size (KiB, from getrusage) goes to the file named by XENIDE_MAXRSS_FILE.
import { writeFileSync } from "node:fs";

process.on("exit", () => {
  const file = process.env.XENIDE_MAXRSS_FILE;
  if (file) writeFileSync(file, String(process.resourceUsage().maxRSS));
});
