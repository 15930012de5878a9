/**
 * The NBD client medium: a disk on an NBD server (qemu-nbd, nbdkit, nbd-server...) behind `BlockBackend`.
 */
export { type NbdAsyncPath, NbdBackend, type NbdOptions } from "./backend.ts";
export type { NbdExportInfo } from "./handshake.ts";
export {
  formatNbdAddress,
  isNbdUrl,
  NBD_DEFAULT_PORT,
  type NbdAddress,
  NbdError,
  type NbdFailure,
  type NbdTarget,
  parseNbdUrl,
  parseQemuNbdFilename,
} from "./url.ts";
