/**
 * qcow2 images: the medium (`Qcow2Backend`), creating them (`createQcow2`), and the format's constants.
 */
export {
  type BackingOpener,
  MAX_BACKING_DEPTH,
  Qcow2Backend,
  type Qcow2Info,
  type Qcow2Options,
  resolveBackingName,
} from "./image.ts";
export { createQcow2, type CreateQcow2Options, DEFAULT_CLUSTER_SIZE } from "./create.ts";
export { ImageFormatError, type ImageFormatReason, looksLikeQcow2, QCOW_MAGIC } from "./format.ts";
