/**
 * Memory whose first byte sits on a page boundary, for O_DIRECT.
 *
 * JS cannot see buffer addresses. An ordinary ArrayBuffer/SharedArrayBuffer comes from malloc, and a large one
 * is typically 16 bytes past a page boundary (the allocator's chunk header), which O_DIRECT refuses. V8 allocates
 * the backing store of a `WebAssembly.Memory` through its page allocator instead, so its first byte is always
 * page-aligned (4 KiB, and 64 KiB wasm pages on top). We allocate aligned memory that way and remember which
 * ArrayBuffers we made, so a view into one at a sector-multiple offset can be used for O_DIRECT as is; any
 * other buffer is bounced through aligned memory.
 */

/** Required alignment of O_DIRECT memory, file offsets and lengths (the disk's logical block size). */
export const DIRECT_ALIGN = 512;

const WASM_PAGE = 65536;

/**
 * The process's registry of page-aligned buffers. Guest RAM (src/hypervisor/memory.ts) is allocated the same
 * way and recorded in the same registry, found under this well-known symbol (this layer may not import that
 * one), so an O_DIRECT read lands in guest pages without a bounce.
 */
const ALIGNED_REGISTRY = Symbol.for("xenide.page-aligned-buffers");
const alignedBuffers: WeakSet<ArrayBufferLike> = ((
  globalThis as { [ALIGNED_REGISTRY]?: WeakSet<ArrayBufferLike> }
)[ALIGNED_REGISTRY] ??= new WeakSet<ArrayBufferLike>());

/**
 * A zeroed Uint8Array of `bytes` bytes (rounded up to 64 KiB) whose first byte is page-aligned. Shared (a
 * SharedArrayBuffer) by default so it can also back guest RAM (`new GuestRam(size, { buffer: u8.buffer })`).
 */
export function allocAligned(bytes: number, shared = true): Uint8Array {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  const mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
  alignedBuffers.add(mem.buffer);
  return new Uint8Array(mem.buffer, 0, bytes);
}

/** True when `view` is known to start on a `DIRECT_ALIGN` boundary (a view into `allocAligned` memory). */
export function isDirectAligned(view: Uint8Array): boolean {
  return view.byteOffset % DIRECT_ALIGN === 0 && alignedBuffers.has(view.buffer);
}
