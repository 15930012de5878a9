/** Where the real-guest runs leave their cost ledgers as JSON (git-ignored `report/guests/`). */

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./pieces.ts";

export function writeGuestReport(name: string, data: unknown): string {
  const dir = process.env.XENIDE_REPORT_DIR ?? join(REPO_ROOT, "report", "guests");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(data, null, 2) + "\n");
  return path;
}
