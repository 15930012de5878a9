/**
 * Refcount block entries of any width the spec allows: refcount_bits = 1 << refcount_order, 1 to 64 bits.
 * Entries narrower than a byte are packed from the least significant bit up; wider ones are big-endian
 * (qcow2.txt, "Host cluster management"; QEMU's get_refcount_ro0..ro6).
 */

/** The refcount of entry `i` of `block`. */
export function getRefcount(block: Uint8Array, order: number, i: number): number {
  switch (order) {
    case 0:
      return (block[i >>> 3]! >>> (i & 7)) & 1;
    case 1:
      return (block[i >>> 2]! >>> (2 * (i & 3))) & 3;
    case 2:
      return (block[i >>> 1]! >>> (4 * (i & 1))) & 15;
    case 3:
      return block[i]!;
    case 4:
      return (block[2 * i]! << 8) | block[2 * i + 1]!;
    case 5:
      return (
        ((block[4 * i]! << 24) | (block[4 * i + 1]! << 16) | (block[4 * i + 2]! << 8) | block[4 * i + 3]!) >>>
        0
      );
    default: {
      const v = new DataView(block.buffer, block.byteOffset, block.byteLength).getBigUint64(8 * i);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
  }
}

/** Store `value` (at most `maxRefcount(order)`) in entry `i` of `block`. */
export function setRefcount(block: Uint8Array, order: number, i: number, value: number): void {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const per = 8 >>> order;
      const shift = bits * (i % per);
      const byte = Math.floor(i / per);
      const mask = ((1 << bits) - 1) << shift;
      block[byte] = (block[byte]! & ~mask) | ((value << shift) & mask);
      return;
    }
    case 3:
      block[i] = value;
      return;
    case 4:
      block[2 * i] = value >>> 8;
      block[2 * i + 1] = value & 0xff;
      return;
    case 5:
      new DataView(block.buffer, block.byteOffset, block.byteLength).setUint32(4 * i, value);
      return;
    default:
      new DataView(block.buffer, block.byteOffset, block.byteLength).setBigUint64(8 * i, BigInt(value));
  }
}

/** The largest refcount an entry of `order` holds. */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}
