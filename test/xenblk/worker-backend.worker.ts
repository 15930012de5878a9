/** Worker side of worker-backend.test.ts: blkback's data path over the shared host state. */
import { parentPort, workerData } from "node:worker_threads";
import { attachXenShared, type XenSharedState } from "../../src/hypervisor/xen-shared.ts";
import { MemoryBackend, SyncEngine } from "../../src/storage/index.ts";
import { blkifLayout } from "../../src/xenblk/abi.ts";
import { BlkbackIo } from "../../src/xenblk/blkback-io.ts";

const wd = workerData as {
  shared: XenSharedState;
  disk: SharedArrayBuffer;
  refs: number[];
  remotePort: number;
};
const peer = attachXenShared(wd.shared);
const io = new BlkbackIo({
  name: "worker",
  engine: new SyncEngine(new MemoryBackend(new Uint8Array(wd.disk))),
  grants: peer.grants(0),
  evtchn: peer.evtchn,
  frontDom: 1,
  backDom: 0,
  frontMem: peer.mem,
  layout: blkifLayout("x86_64-abi"),
  readOnly: false,
  persistent: false,
});
const ring = io.attachRing({ refs: wd.refs, remotePort: wd.remotePort });
const stop = peer.evtchn.listen(0);
parentPort!.on("message", (m: string) => {
  if (m !== "stop") return;
  stop();
  parentPort!.postMessage({ stats: io.stats, hypercalls: peer.acct.counts.hypercall });
  parentPort!.close();
});
parentPort!.postMessage({ port: ring.port });
