/**
 * Storage: media (`BlockBackend`s) and the engines that carry device requests to them.
 */
import { AsyncEngine, type AsyncEngineOptions, SyncEngine } from "./engine.ts";
import { RawImageBackend, type RawImageOptions } from "./raw.ts";
import type { BlockBackend, IoEngine } from "./types.ts";

export * from "./types.ts";
export * from "./errors.ts";
export { DIRECT_ALIGN, allocAligned, isDirectAligned } from "./aligned.ts";
export { ImageLock, type LockMode, kernelLockUnavailable, lockHolder, lockPathOf } from "./lock.ts";
export { RawImageBackend, type RawImageOptions } from "./raw.ts";
export { MemoryBackend, type MemoryBackendOptions } from "./memory-backend.ts";
export { NullBackend } from "./null.ts";
export { NoFlushBackend } from "./no-flush.ts";
export { FaultInjectingBackend, type ArmedRule, type FaultCounts, type FaultRule } from "./fault.ts";
export { AsyncEngine, type AsyncEngineOptions, SyncEngine, performSync, validateRequest } from "./engine.ts";
export { createImage, parseByteSize, parseSize, type CreateImageOptions } from "./image.ts";
export { TapEngine } from "./tap.ts";
export {
  formatNbdAddress,
  isNbdUrl,
  NbdBackend,
  NbdError,
  type NbdAddress,
  type NbdExportInfo,
  type NbdFailure,
  type NbdOptions,
  type NbdTarget,
  parseNbdUrl,
  parseQemuNbdFilename,
} from "./nbd/index.ts";
export {
  IMAGE_FORMATS,
  type ImageFormat,
  isImageFormat,
  openMedium,
  type OpenMediumOptions,
  probeFormat,
} from "./open.ts";
export {
  createQcow2,
  type CreateQcow2Options,
  ImageFormatError,
  type ImageFormatReason,
  Qcow2Backend,
  type Qcow2Info,
  resolveBackingName,
} from "./qcow2/index.ts";

export {
  BLKDEBUG_EVENTS,
  BlkdebugBackend,
  BlkdebugConfigError,
  type BlkdebugEvent,
  type BlkdebugRule,
  parseBlkdebugConfig,
  parseBlkdebugFilename,
  readBlkdebugConfig,
} from "./blkdebug.ts";

/** Open a raw image file (see `RawImageBackend.open`). */
export function openImage(path: string, options: RawImageOptions = {}): RawImageBackend {
  return RawImageBackend.open(path, options);
}

export type EngineKind = "sync" | "async";

/** The engine of the given kind over `backend`. */
export function makeEngine(
  backend: BlockBackend,
  kind: EngineKind,
  options: AsyncEngineOptions = {},
): IoEngine {
  return kind === "sync" ? new SyncEngine(backend) : new AsyncEngine(backend, options);
}
