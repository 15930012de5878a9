/**
 * The ATA core of one device position (QEMU's IDEState, v86's IDEInterface): the position's task file and
 * Status/Error registers, and, when a drive is attached, the drive's command and transfer state machine: command
 * dispatch through its kind's table with one completion epilogue, the PIO data window (pio.ts), the DMA command
 * (dma.ts), and its storage requests. The channel (channel.ts) owns what both positions share: the register
 * interface, device selection, Device Control and the interrupt line, reached through `AtaBus`.
 *
 * Command handlers take the core. A handler returns true when the command is complete, and `execute` then runs
 * the epilogue (BSY off, DSC when flagged and successful, interrupt); a handler that starts a data transfer or a
 * storage request returns false and the protocol finishes the command.
 */

import type { IoEngine, IoError, IoRequest } from "../storage/types.ts";
import {
  ATA_SIGNATURE,
  ATA_CMD,
  DEV_OBS,
  type DeviceSignature,
  DIAG_PASSED,
  ERR_ABRT,
  ERR_IDNF,
  ERR_UNC,
  ST_BSY,
  ST_DF,
  ST_DRDY,
  ST_DSC,
  ST_ERR,
} from "../spec/ata.ts";
import type { Drive } from "./device.ts";
import type { IdeDmaOps } from "./dma-ops.ts";
import { type IoContinuation, StorageRequests } from "./requests.ts";
import { DriveSettings, MAX_MULT_SECTORS } from "./settings.ts";
import { TaskFile } from "./taskfile.ts";
import type { CompatProfile } from "./compat.ts";

/** What a core needs from its channel (QEMU's IDEBus). */
export interface AtaBus {
  /** Assert the channel's interrupt (unless nIEN is set at this moment). */
  raiseIrq(): void;
  /** EXECUTE DEVICE DIAGNOSTIC: both devices run it and device 0 is selected (ATA-6 §8.11). */
  executeDiagnostic(): void;
  /** The channel's DMA engine. */
  readonly dma: IdeDmaOps;
  /** Whose behaviour the device follows where the standard and QEMU 7.2 differ (default "xenide"). */
  readonly compat?: CompatProfile;
}

/** Set DSC in Status when the command completes without error (QEMU's SET_DSC). */
export const CMD_FLAG_DSC = 1;

export type CommandHandler = (core: AtaCore) => boolean;

export interface CommandEntry {
  readonly name: string;
  readonly flags: number;
  handler: CommandHandler;
}

/** One entry per opcode; an opcode without one aborts. */
export type CommandTable = readonly (CommandEntry | undefined)[];

/** What the core takes from its drive kind (the whole kind is in kind.ts). */
export interface KindProfile {
  readonly name: string;
  readonly commands: CommandTable;
  /** Count/LBA after a reset or EXECUTE DEVICE DIAGNOSTIC. */
  readonly signature: DeviceSignature;
  /** Status after power-on, a reset or EXECUTE DEVICE DIAGNOSTIC. */
  readonly readyStatus: number;
  /** Status at power-on when it differs from `readyStatus` (a PACKET device shows DRDY only until a reset). */
  readonly powerOnStatus?: number;
  /** The PACKET feature set (ATAPI): DEVICE RESET is accepted even while BSY or DRQ is set (ATA-6 §8.7). */
  readonly packet?: boolean;
  /** Set up the kind's own state in `core.kindState` (ATAPI: sense data, tray, media events). */
  attach?(core: AtaCore): void;
  /** The end of a software reset or DEVICE RESET, after the core's own reset. */
  reset?(core: AtaCore): void;
}

/** What happens when the host has moved the last byte of the current DRQ data block. */
export const enum EndTransfer {
  None,
  /** IDENTIFY / SMART READ DATA: the single block is done; DRQ drops, no interrupt. */
  Single,
  /** PIO data-in: present the next block or finish. */
  ReadNext,
  /** PIO data-out: commit the block to the medium. */
  WriteCommit,
  /** The drive kind's protocol decides (`AtaCore.blockEnd`): the ATAPI packet and its DRQ data blocks. */
  Kind,
}

/** Sectors the drive buffers at once for PIO and READ VERIFY: a whole 256-sector LBA28 command (128 KiB). */
export const IO_BUF_SECTORS = 256;

export type CoreContinuation = IoContinuation<AtaCore>;

export class AtaCore {
  readonly tf = new TaskFile();
  status = 0;
  error = 0;
  /** The "qemu-7.2" profile: QEMU 7.2's results where it departs from the standard (docs/conformance.md). */
  readonly qemu: boolean;
  /** IDENTIFY data as QEMU 7.2 caches it at the first IDENTIFY ("qemu-7.2" profile only). */
  identifyCache: Uint16Array | null = null;

  // --- The attached drive (an empty position has none and never executes a command).
  readonly present: boolean;
  readonly drive: Drive | null;
  readonly kind: KindProfile | null;
  /**
   * The commands this position runs: its kind's table, or for QEMU 7.2's empty device 0 the table of a hard
   * disk without a backend (hd/absent.ts, docs/conformance.md A4); null where commands are ignored.
   */
  readonly commands: CommandTable | null;
  /** Highest sector + 1 a command may touch (of the medium now inserted, for removable media). */
  sectorCount: number;
  readOnly: boolean;
  /** The drive kind's own state (`KindProfile.attach`), opaque to the core. */
  kindState: unknown = null;
  /** What `EndTransfer.Kind` runs when the host has moved the last byte of the DRQ block. */
  blockEnd: ((d: AtaCore) => void) | null = null;
  readonly settings: DriveSettings;
  /** Requests to the medium; null without a drive or when a removable drive holds no medium. */
  requests: StorageRequests<AtaCore> | null;

  // --- PIO data window: the host moves `xfer[dataPtr, dataEnd)` through the data port while DRQ is set.
  xfer: Uint8Array;
  dataPtr = 0;
  dataEnd = 0;
  /** True while the window is a data-out block (the host writes the data port). */
  dataOut = false;
  endTransfer: EndTransfer = EndTransfer.None;
  /** The drive's sector buffer (PIO prefetch and commit, READ VERIFY, TRIM payloads, SMART pages). */
  buf: Uint8Array;
  /** A 512-byte reply block built per command (IDENTIFY data), as words and as the bytes that go out. */
  readonly replyWords = new Uint16Array(256);
  readonly replyBytes = new Uint8Array(this.replyWords.buffer);

  // --- The command in progress.
  cmd = -1;
  lba = 0;
  remaining = 0;
  blockSectors = 1;
  /** Sectors [pfStart, pfStart + pfValid) are in `buf` (PIO data-in prefetch); pfError is the failing one. */
  pfStart = 0;
  pfValid = 0;
  pfError = -1;
  pfErrorCode = "";
  /** PIO data-out blocks held in `buf` (write cache): `wbCount` sectors from `wbStart`. */
  wbStart = 0;
  wbCount = 0;

  // --- The DMA command (dma.ts): waiting for the engine, or its storage request in flight.
  dmaPending = false;
  dmaWrite = false;
  dmaTrim = false;
  dmaInflight = false;
  /** The transfer in flight: its first sector and sector count. */
  dmaLba = 0;
  dmaCount = 0;

  constructor(
    readonly unit: 0 | 1,
    readonly bus: AtaBus,
    drive: Drive | null,
    kind: KindProfile | null,
    absentCommands: CommandTable | null = null,
  ) {
    this.qemu = bus.compat === "qemu-7.2";
    // QEMU 7.2's empty position holds the state of its reset: READY|SEEK (seen only with device 0 absent, A4).
    if (this.qemu && !drive) this.status = ST_DRDY | ST_DSC;
    // An empty position transfers no sectors: at most a SMART page when it runs commands (A4).
    this.buf = new Uint8Array(drive ? IO_BUF_SECTORS * 512 : absentCommands ? 512 : 0);
    this.xfer = this.buf;
    this.drive = drive;
    this.kind = drive ? kind : null;
    this.present = drive !== null && kind !== null;
    this.commands = this.kind ? this.kind.commands : absentCommands;
    this.sectorCount = drive ? drive.sectorCount : 0;
    this.readOnly = drive ? drive.readOnly : true;
    this.settings = new DriveSettings(
      drive ? drive.writeCacheDefault : true,
      drive ? drive.defaultGeometry : null,
      (enabled) => this.requests?.engine.backend.setWriteCache?.(enabled),
    );
    this.requests = drive?.engine
      ? new StorageRequests<AtaCore>(drive.engine, this, drive.errorPolicy)
      : null;
    this.requests?.engine.backend.setWriteCache?.(this.settings.writeCache);
    if (this.kind) {
      this.tf.setSignature(this.kind.signature);
      // Power-on: the diagnostic ran (ATA-6 §9.1), so the Error register holds its result.
      this.status = this.kind.powerOnStatus ?? this.kind.readyStatus;
      // QEMU 7.2 leaves 00h there until the first reset or diagnostic (docs/conformance.md A1).
      this.error = this.qemu ? 0 : DIAG_PASSED;
      this.kind.attach?.(this);
    }
  }

  /**
   * Removable media (a CD drive's eject and insert): the medium under the drive changes. The drive kind
   * abandons its command first; requests of the old medium still in flight are dropped when they complete.
   */
  changeMedium(engine: IoEngine | null): void {
    this.requests?.abandon();
    const policy = this.drive?.errorPolicy ?? null;
    this.requests = engine ? new StorageRequests<AtaCore>(engine, this, policy) : null;
    engine?.backend.setWriteCache?.(this.settings.writeCache);
    this.sectorCount = engine ? engine.backend.sectorCount : 0;
    this.readOnly = engine ? engine.backend.readOnly : true;
  }

  // ------------------------------------------------------------------------------------------------
  // Command dispatch (QEMU's ide_exec_cmd shape) and the common completion epilogue.

  /** A command written while the device is present and neither BSY nor DRQ. */
  execute(op: number): void {
    const entry = this.commands![op];
    this.cmd = op;
    this.error = 0;
    if (!entry) {
      this.abort();
      this.bus.raiseIrq();
      return;
    }
    this.status = ST_DRDY | ST_BSY;
    if (entry.handler(this)) this.complete((entry.flags & CMD_FLAG_DSC) !== 0);
  }

  /** The one epilogue: BSY off, DSC on success when the command asks for it, interrupt. */
  complete(dsc: boolean): void {
    this.status &= ~ST_BSY;
    if (dsc && !(this.status & ST_ERR)) this.status |= ST_DSC;
    this.bus.raiseIrq();
  }

  raiseIrq(): void {
    this.bus.raiseIrq();
  }

  abort(): void {
    this.status = ST_DRDY | ST_ERR;
    this.error = ERR_ABRT;
  }

  /** End a command with an error pointing at `sector` (the task file holds the failing address); -1: leave it. */
  fail(error: number, sector: number, statusExtra = 0): void {
    this.stopTransfer();
    this.dmaPending = this.dmaInflight = this.dmaTrim = false;
    if (sector >= 0) {
      // Sectors still to do counted from the failing one (it may lie in an earlier, cached block).
      this.tf.sectorCount = (this.remaining - (sector - this.lba)) & 0xff;
      this.setAddress(sector);
    }
    this.status = ST_DRDY | ST_ERR | statusExtra;
    this.error = error;
    this.bus.raiseIrq();
  }

  /**
   * A range the device refuses (IDNF, "address outside the user-accessible range"). Nothing of the refused
   * block or command was attempted, so the task file stays where it was at its start: the first sector the
   * device did not accept (this is also where QEMU 7.2 leaves it; only its error code, ABRT, differs).
   */
  rangeError(): void {
    this.fail(this.qemu ? ERR_ABRT : ERR_IDNF, -1);
  }

  /** Storage failure mapped to ATA: out of range = IDNF, read = UNC, write/flush = device fault + ABRT. */
  failIo(err: IoError, write: boolean, fallbackSector: number): void {
    if (this.qemu) {
      // QEMU 7.2's "report" policy: ABRT for any failed request, task file at the start of that request.
      this.fail(ERR_ABRT, fallbackSector);
      return;
    }
    const s = err.sector ?? fallbackSector;
    if (err.code === "ERANGE") this.fail(ERR_IDNF, s);
    else if (write) this.fail(ERR_ABRT, s, ST_DF);
    else this.fail(ERR_UNC, s);
  }

  // ------------------------------------------------------------------------------------------------
  // Task-file addressing through the current CHS translation.

  commandCount(lba48: boolean): number {
    return this.tf.commandCount(lba48);
  }

  commandAddress(lba48: boolean): number {
    return this.tf.commandAddress(lba48, this.settings.currentGeometry, this.qemu);
  }

  setAddress(n: number): void {
    this.tf.setAddress(n, this.settings.currentGeometry);
  }

  // ------------------------------------------------------------------------------------------------
  // Storage.

  io(
    op: IoRequest["op"],
    sector: number,
    bufs: Uint8Array[] | undefined,
    cont: CoreContinuation,
    count?: number,
    restart: ((d: AtaCore) => void) | null = null,
  ): void {
    this.requests!.submit(op, sector, bufs, cont, count, restart);
  }

  /** After a write completes: flush as well when the write cache is off (every write reaches the medium). */
  afterWrite(cont: CoreContinuation): CoreContinuation {
    return (d, err) => {
      if (err || d.settings.writeCache) cont(d, err);
      else d.io("flush", 0, undefined, cont);
    };
  }

  // ------------------------------------------------------------------------------------------------
  // Ending and abandoning transfers; resets.

  stopTransfer(): void {
    this.dataPtr = this.dataEnd = 0;
    this.dataOut = false;
    this.endTransfer = EndTransfer.None;
    this.xfer = this.buf;
  }

  /**
   * Send the PIO data-out blocks the write cache holds, already acknowledged to the host, to the medium; nobody
   * waits for the request (whoever needs it done drains the engine). A reset does this, since it does not drop
   * the cache, and so does an orderly power-down (`IdeChannel.writeBack`): what the guest was told is written
   * must not be lost when the machine stops in the middle of a command. The command in progress cannot go on
   * afterwards: callers cancel it or stop the machine.
   */
  writeBack(): void {
    const io = this.requests;
    if (io && this.wbCount > 0 && !io.pending) {
      const held = this.buf.subarray(0, this.wbCount * 512);
      this.buf = new Uint8Array(IO_BUF_SECTORS * 512);
      io.submitDetached(this.wbStart, [held]);
      this.wbCount = 0;
    }
  }

  /** Abandon the command: storage completions still in flight are ignored when they arrive. */
  cancel(): void {
    const io = this.requests;
    this.writeBack();
    this.wbCount = 0;
    // The old request may still write into the buffer: give the drive a fresh one.
    if (io && io.abandon()) this.buf = new Uint8Array(IO_BUF_SECTORS * 512);
    this.stopTransfer();
    this.bus.dma.cancel(this, this.dmaInflight);
    this.dmaPending = this.dmaInflight = this.dmaTrim = false;
    this.cmd = -1;
  }

  /** Signature and diagnostic result, as a reset or EXECUTE DEVICE DIAGNOSTIC leaves them. */
  setSignature(): void {
    this.tf.setSignature(this.kind ? this.kind.signature : ATA_SIGNATURE);
    this.error = DIAG_PASSED;
  }

  /**
   * The end of a software reset (SRST 1->0): signature and diagnostic code, Features and HOB cleared, the
   * multiple setting back to its power-on value (as QEMU 7.2's ide_reset; ATA leaves it vendor-specific), the
   * other settings too when SET FEATURES CCh asked for that. An empty position's shadow registers take the "no
   * device" signature (LBA Mid/High FFh), which is what a host reads after selecting it (as QEMU 7.2).
   */
  reset(): void {
    const s = this.settings;
    if (!this.kind) {
      this.stopTransfer();
      this.tf.clearForReset();
      this.setSignature();
      this.tf.lbaMid = this.tf.lbaHigh = 0xff;
      // QEMU 7.2 resets and diagnoses the empty position like a drive (seen only with device 0 absent, A4).
      if (this.qemu) this.status = ST_DRDY | ST_DSC;
      return;
    }
    // QEMU 7.2 reverts only the CHS translation, once (SET FEATURES CCh must be issued again).
    if (s.revertOnReset) {
      if (this.qemu) s.revertTranslation();
      else s.revert();
    }
    this.tf.clearForReset();
    s.multipleSectors = MAX_MULT_SECTORS;
    this.setSignature();
    s.power = "active";
    this.status = this.kind.readyStatus;
    this.kind.reset?.(this);
  }

  /**
   * A hardware reset (the machine's RESET: QEMU's ide_reset from ide_bus_reset; ATA-6 §9.1): the command in
   * progress is abandoned (blocks already acknowledged still go to the medium, `cancel`), then the software
   * reset's register state. The medium stays in. "qemu-7.2": no diagnostic runs, so every position, a PACKET
   * device and an empty one included, shows READY|SEEK (50h) with Error 00h, and the settings a reset keeps
   * (write cache, transfer modes, cached IDENTIFY data) stay. Otherwise the power-on state: the diagnostic's
   * Error 01h, the kind's power-on status, and every setting back to its power-on value (ATA-6 §8.37.2: SET
   * FEATURES settings last until the next power-on or hardware reset).
   */
  hardReset(): void {
    if (this.kind) this.cancel();
    if (this.qemu) {
      this.reset();
      this.status = ST_DRDY | ST_DSC;
      this.error = 0;
      return;
    }
    const s = this.settings;
    s.revert();
    s.revertOnReset = false;
    s.smartEnabled = true;
    this.reset();
    this.status = this.kind ? (this.kind.powerOnStatus ?? this.kind.readyStatus) : 0;
  }

  /** EXECUTE DEVICE DIAGNOSTIC on this device, whichever device the command was written to. */
  diagnose(): void {
    if (!this.kind) {
      this.tf.device = DEV_OBS;
      return;
    }
    if (this.cmd !== ATA_CMD.EXECUTE_DEVICE_DIAGNOSTIC) this.cancel();
    this.setSignature();
    this.status = this.kind.readyStatus;
  }
}
