#!/usr/bin/env node
// Runs the TypeScript CLI directly: tsx registers a loader so no build step is needed.
import { register } from "tsx/esm/api";
register();
await import("../src/cli/main.ts");
