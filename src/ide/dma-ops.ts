/**
 * The seam between a drive's DMA commands and the engine that moves their data to and from host memory, after
 * QEMU's IDEDMAOps (hw/ide/internal.h): the ATA core asks for memory and reports the end of the command, and
 * knows nothing of how the engine finds that memory. The PIIX Bus Master (bmdma.ts) implements it with a PRD
 * table in guest memory; a test implements it with a plain buffer.
 *
 * The life of one DMA command, as the core drives it (dma.ts):
 *
 *   start(owner, run)    the command waits for the engine (QEMU start_dma). The engine calls run(owner) when it
 *                        is going (for the Bus Master: Start set and bus mastering enabled), now or later, and
 *                        again whenever it starts anew until `end`.
 *   prepare(bytes)       map `bytes` of host memory for the transfer (QEMU prepare_buf): Ok, Short (the engine
 *                        describes fewer bytes: nothing moves) or Fault (the memory is not there; the engine has
 *                        recorded its error).
 *   buffers(toDevice)    storage buffers covering the prepared memory, in order: views of host memory where they
 *                        can be, else a bounce buffer, filled from host memory when `toDevice` (a write).
 *   rw(buf, toDevice)    copy between a drive buffer and the prepared memory (QEMU rw_buf), for payloads the
 *                        drive reads itself (TRIM ranges).
 *   commit(toMemory)     the storage request over `buffers` is done: data for host memory is made visible there
 *                        (QEMU commit_buf).
 *   end(transferred)     the command is over (QEMU set_inactive). `transferred`: it moved its data; an engine
 *                        whose table described more may stay active, as BMIDE §3.1 says.
 *   cancel(owner, ...)   a reset abandoned the owner's command; a request still in flight may write into the
 *                        buffers it was given (QEMU reset).
 *   interrupt()          the channel asserted INTRQ (the Bus Master's Interrupt bit, BMIDE §2.2).
 */

/** How `prepare` went. */
export const enum DmaPrepared {
  /** The memory for every byte of the transfer is mapped. */
  Ok,
  /** The engine describes fewer bytes than the transfer needs. */
  Short,
  /** Part of the described memory is not there. */
  Fault,
}

export interface IdeDmaOps {
  start<T>(owner: T, run: (owner: T) => void): void;
  prepare(bytes: number): DmaPrepared;
  buffers(toDevice: boolean): Uint8Array[];
  rw(buf: Uint8Array, toDevice: boolean): void;
  commit(toMemory: boolean): void;
  end(transferred: boolean): void;
  cancel(owner: unknown, inFlight: boolean): void;
  interrupt(): void;
}
