/**
 * Build the C blkif frontend (test/support/xen-frontend/blkfront.c, Xen's own ring.h/blkif.h) to wasm32 for both ring
 * ABIs, into node_modules/.cache/xenide/. The tests build it on demand; this is for a CI step that should fail
 * early and loudly when clang, lld or libxen-dev is missing.
 *
 *   tsx scripts/build-xen-frontend.ts
 */
import { buildXenBlkfront } from "../test/support/xen-frontend/build.ts";

let failed = false;
for (const abi of ["x86_64-abi", "x86_32-abi"] as const) {
  const r = buildXenBlkfront(abi);
  if ("missing" in r) {
    console.error(`${abi}: ${r.missing}`);
    failed = true;
  } else {
    console.log(`${abi}: ${r.path}`);
  }
}
process.exit(failed ? 1 : 0);
