/** The CLI run in this process (no start-up cost), with what it prints captured: stdout as bytes. */
import { vi } from "vitest";
import { runCli } from "../../src/cli/main.ts";

export interface InProcessResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

export async function cli(...argv: string[]): Promise<InProcessResult> {
  const out: Buffer[] = [];
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((s: string | Uint8Array) => {
    out.push(Buffer.from(typeof s === "string" ? Buffer.from(s) : s));
    return true;
  });
  const e = vi.spyOn(process.stderr, "write").mockImplementation((s: string | Uint8Array) => {
    err += typeof s === "string" ? s : Buffer.from(s).toString();
    return true;
  });
  try {
    const code = await runCli(argv);
    return { code, stdout: Buffer.concat(out), stderr: err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}
