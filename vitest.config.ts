import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // One test file per core. Vitest's default in run mode is one fewer, which on a 2-core machine runs every
    // file one after another; most files spend their time waiting on processes they start (QEMU, the CLI, real
    // guests). Measured in a clean clone on a 2-core machine: 9.9 minutes two at a time; one at a time, 17.7
    // (that run shared the machine with other work).
    maxWorkers: Math.max(2, availableParallelism()),
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: ["test/hosts/**", "**/node_modules/**"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        // Real guests (SeaBIOS, Linux ata_piix) booted inside v86 on xenide's IDE: slow boots, one at a time.
        test: {
          name: "guests",
          include: ["test/hosts/**/*.test.ts"],
          testTimeout: 600_000,
          hookTimeout: 600_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
