/**
 * What a PCI function offers the configuration mechanism: reads and writes of its 256-byte configuration space
 * (PCI Local Bus Specification 3.0 §6.1). Under Xen the hypervisor decodes CONFIG_ADDRESS/CONFIG_DATA itself and
 * forwards each access to the ioreq server that registered the function's BDF (`IOREQ_TYPE_PCI_CONFIG`), so this
 * interface sits with the hypervisor; the PCI host that decodes the ports lives in the machine layer.
 */

export interface PciFunction {
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
}

/** Little-endian stores and loads into a configuration space (reads past byte 255 give 0xFF). */
export function put16(a: Uint8Array, off: number, v: number): void {
  a[off] = v & 0xff;
  a[off + 1] = (v >>> 8) & 0xff;
}

export function put32(a: Uint8Array, off: number, v: number): void {
  a[off] = v & 0xff;
  a[off + 1] = (v >>> 8) & 0xff;
  a[off + 2] = (v >>> 16) & 0xff;
  a[off + 3] = (v >>> 24) & 0xff;
}

export function readLE(a: Uint8Array, off: number, size: 1 | 2 | 4): number {
  let v = 0;
  for (let i = 0; i < size; i++) v |= (off + i < 256 ? a[off + i]! : 0xff) << (8 * i);
  return v >>> 0;
}

/** A write of `size` bytes at `offset` through a write mask: bytes whose mask bit is 0 keep their value. */
export function maskedWrite(
  config: Uint8Array,
  wmask: Uint8Array,
  offset: number,
  size: 1 | 2 | 4,
  value: number,
): void {
  for (let i = 0; i < size && offset + i < 256; i++) {
    const m = wmask[offset + i]!;
    const b = (value >>> (8 * i)) & 0xff;
    config[offset + i] = (config[offset + i]! & ~m) | (b & m);
  }
}
