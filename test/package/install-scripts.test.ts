/**
 * `npm ci` on a fresh machine prints no warning a user has to wonder about: npm 11 warns about every
 * dependency whose install scripts the project has not approved or denied in package.json `allowScripts`.
 * Every package the lock file marks `hasInstallScript` must be named there.
 */
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../../", import.meta.url));
const pkg = JSON.parse(fs.readFileSync(`${root}package.json`, "utf8")) as {
  allowScripts?: Record<string, boolean>;
};
const lock = JSON.parse(fs.readFileSync(`${root}package-lock.json`, "utf8")) as {
  packages: Record<string, { hasInstallScript?: boolean; optional?: boolean }>;
};

describe("install scripts", () => {
  it("every dependency with an install script is approved or denied in allowScripts", () => {
    const withScripts = Object.entries(lock.packages)
      .filter(([p, e]) => p.startsWith("node_modules/") && e.hasInstallScript)
      .map(([p]) => p.slice(p.lastIndexOf("node_modules/") + "node_modules/".length));
    expect(withScripts.length).toBeGreaterThan(0);
    const covered = Object.keys(pkg.allowScripts ?? {});
    expect(withScripts.filter((n) => !covered.includes(n))).toEqual([]);
  });
});
