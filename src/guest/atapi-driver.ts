/**
 * The guest's ATAPI driver: a small CD-ROM driver in the shape of Linux's ide-cd / libata ATAPI path. It finds a
 * PACKET device by its signature, reads IDENTIFY PACKET DEVICE, and sends MMC commands with the PACKET command
 * (ATA-6 §9.10): the packet in its DRQ block, then the data in DRQ blocks of the size the device puts in LBA
 * Mid/High (PIO), or through the Bus Master (DMA, Features bit 0). A CHECK CONDITION is followed by REQUEST SENSE,
 * and the sense key, ASC and ASCQ go into the error it throws. Like ata-driver.ts it uses a `Vcpu` and nothing
 * else: every port access is an exit.
 */

import type { Vcpu } from "../hypervisor/hypervisor.ts";
import { isFault, PAGE_SIZE, PageAllocator } from "../hypervisor/memory.ts";
import {
  ATA_CMD,
  BM_CMD_READ,
  BM_CMD_START,
  BM_REG_COMMAND,
  BM_REG_PRDT,
  BM_REG_STATUS,
  BM_ST_ACTIVE,
  BM_ST_ERROR,
  BM_ST_INTR,
  CTL_NIEN,
  DEV_OBS,
  PACKET_SIGNATURE,
  REG_COMMAND,
  REG_DATA,
  REG_DEVICE,
  REG_ERROR,
  REG_FEATURES,
  REG_LBA_HIGH,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS,
  ST_BSY,
  ST_DRQ,
  ST_ERR,
} from "../spec/ata.ts";
import { ATAPI_PACKET_SIZE, CD_SECTOR_SIZE, INT_REASON_COD, INT_REASON_IO, MMC_CMD } from "../spec/atapi.ts";
import { ATA_CHANNELS, type AtaChannel, ataString } from "./ata-driver.ts";
import { findPiixIde, setupBusMaster } from "./pci-scan.ts";

/** Sense data of a failed packet command (SPC-3 §4.5.3). */
export interface Sense {
  key: number;
  asc: number;
  ascq: number;
}

/** A packet command that failed: CHECK CONDITION (with the sense data REQUEST SENSE returned), or no answer. */
export class AtapiError extends Error {
  constructor(
    message: string,
    readonly opcode: number,
    readonly status: number,
    readonly error: number,
    readonly sense: Sense | null,
  ) {
    super(message);
    this.name = "AtapiError";
  }
}

export interface AtapiIdentity {
  model: string;
  serial: string;
  firmware: string;
  /** IDENTIFY PACKET DEVICE word 0 bits 12:8: 05h = CD-ROM. */
  deviceType: number;
  removable: boolean;
  dma: boolean;
}

export interface CdCapacity {
  /** Blocks on the medium (READ CAPACITY's last LBA + 1). */
  blocks: number;
  blockSize: number;
}

export interface AtapiDriveOptions {
  channel?: 0 | 1;
  unit?: 0 | 1;
  /** "pio" (default) or "dma". */
  via?: "pio" | "dma";
  /** Interrupt-driven (default) or polling with nIEN. */
  irq?: boolean;
  /** Byte count limit for PIO (default 0xFFFE, the largest even one). */
  byteCount?: number;
  allocator?: PageAllocator;
  timeoutMs?: number;
}

/** Bytes a single DMA read may move through the driver's buffer (one PRD entry per 64 KiB). */
const DMA_BUFFER_BYTES = 64 * 1024;

export class AtapiDrive {
  readonly channel: AtaChannel;
  readonly unit: 0 | 1;
  readonly via: "pio" | "dma";
  readonly useIrq: boolean;
  readonly byteCount: number;
  readonly timeoutMs: number;
  private allocator: PageAllocator | undefined;
  private bmBase: number | undefined;
  private prdGpa = -1;
  private bufGpa = -1;
  private ident: AtapiIdentity | undefined;

  constructor(
    readonly vcpu: Vcpu,
    opts: AtapiDriveOptions = {},
  ) {
    const ch = ATA_CHANNELS[opts.channel ?? 0];
    if (!ch) throw new RangeError(`no IDE channel ${String(opts.channel)}`);
    this.channel = ch;
    this.unit = opts.unit ?? 0;
    this.via = opts.via ?? "pio";
    this.useIrq = opts.irq ?? true;
    this.byteCount = opts.byteCount ?? 0xfffe;
    if (!(Number.isInteger(this.byteCount) && this.byteCount >= 2 && this.byteCount <= 0xfffe))
      throw new RangeError(`byte count limit must be 2..65534, got ${this.byteCount}`);
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.allocator = opts.allocator;
  }

  get identity(): AtapiIdentity {
    if (!this.ident) throw new Error("ATAPI drive not probed: call probe() first");
    return this.ident;
  }

  /**
   * Find a PACKET device at the position: select it, and if it shows the PACKET signature (ATA-6 §9.12: a reset
   * leaves it; IDENTIFY DEVICE aborts and writes it again), read IDENTIFY PACKET DEVICE. Null otherwise.
   */
  async probe(): Promise<AtapiIdentity | null> {
    const v = this.vcpu;
    const base = this.channel.cmd;
    v.outb(this.channel.ctl, this.useIrq ? 0 : CTL_NIEN);
    v.outb(base + REG_DEVICE, DEV_OBS | (this.unit << 4));
    const st = v.inb(this.channel.ctl);
    if (st === 0xff) return null;
    if (!this.signature()) {
      // Ask with IDENTIFY DEVICE: a PACKET device aborts it and shows its signature.
      await this.until(() => !(v.inb(this.channel.ctl) & (ST_BSY | ST_DRQ)), ATA_CMD.IDENTIFY_DEVICE);
      v.outb(base + REG_COMMAND, ATA_CMD.IDENTIFY_DEVICE);
      await this.waitIntr(ATA_CMD.IDENTIFY_DEVICE);
      if (!this.signature()) return null;
    }
    await this.until(() => !(v.inb(this.channel.ctl) & (ST_BSY | ST_DRQ)), ATA_CMD.IDENTIFY_PACKET_DEVICE);
    v.outb(base + REG_COMMAND, ATA_CMD.IDENTIFY_PACKET_DEVICE);
    const s = await this.waitIntr(ATA_CMD.IDENTIFY_PACKET_DEVICE);
    if (s & ST_ERR || !(s & ST_DRQ)) return null;
    const w = new Uint16Array(256);
    for (let i = 0; i < 256; i++) w[i] = v.inw(base + REG_DATA);
    this.ident = {
      model: ataString(w, 27, 20),
      serial: ataString(w, 10, 10),
      firmware: ataString(w, 23, 4),
      deviceType: (w[0]! >> 8) & 0x1f,
      removable: (w[0]! & 0x80) !== 0,
      dma: (w[49]! & 0x100) !== 0,
    };
    if (this.via === "dma") this.busMaster();
    return this.ident;
  }

  private signature(): boolean {
    const v = this.vcpu;
    const base = this.channel.cmd;
    return (
      v.inb(base + REG_LBA_MID) === PACKET_SIGNATURE.lbaMid &&
      v.inb(base + REG_LBA_HIGH) === PACKET_SIGNATURE.lbaHigh
    );
  }

  // ---- MMC commands ------------------------------------------------------------------------------------------

  async testUnitReady(): Promise<void> {
    await this.packet(cdb(MMC_CMD.TEST_UNIT_READY), 0);
  }

  /** Wait for the medium: TEST UNIT READY until it passes, reading past the unit attention of a new medium. */
  async waitReady(tries = 4): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.testUnitReady();
        return;
      } catch (e) {
        if (!(e instanceof AtapiError) || i + 1 >= tries) throw e;
      }
    }
  }

  async readCapacity(): Promise<CdCapacity> {
    const d = await this.packet(cdb(MMC_CMD.READ_CAPACITY), 8);
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    return { blocks: dv.getUint32(0, false) + 1, blockSize: dv.getUint32(4, false) };
  }

  async inquiry(): Promise<Uint8Array> {
    return this.packet(cdb(MMC_CMD.INQUIRY, 0, 0, 0, 36), 36);
  }

  async requestSense(): Promise<Sense> {
    const d = await this.packet(cdb(MMC_CMD.REQUEST_SENSE, 0, 0, 0, 18), 18, false);
    return { key: d[2]! & 0x0f, asc: d[12]!, ascq: d[13]! };
  }

  /** READ(10) of `count` 2048-byte blocks from `lba`, split into commands the drive buffer takes. */
  async read(lba: number, count: number): Promise<Uint8Array> {
    const out = new Uint8Array(count * CD_SECTOR_SIZE);
    const per = this.via === "dma" ? DMA_BUFFER_BYTES / CD_SECTOR_SIZE : 0xffff;
    for (let done = 0; done < count;) {
      const n = Math.min(per, count - done);
      const at = lba + done;
      const data = await this.packet(
        cdb(MMC_CMD.READ_10, 0, at >>> 24, at >>> 16, at >>> 8, at, 0, n >> 8, n),
        n * CD_SECTOR_SIZE,
      );
      out.set(data, done * CD_SECTOR_SIZE);
      done += n;
    }
    return out;
  }

  /** START STOP UNIT with LoEj: open (eject) or close (load) the tray. */
  async startStop(load: boolean): Promise<void> {
    await this.packet(cdb(MMC_CMD.START_STOP_UNIT, 0, 0, 0, load ? 3 : 2), 0);
  }

  async preventRemoval(prevent: boolean): Promise<void> {
    await this.packet(cdb(MMC_CMD.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, prevent ? 1 : 0), 0);
  }

  // ---- the PACKET protocol -----------------------------------------------------------------------------------

  /**
   * Send `packet` and take up to `expect` bytes of data. On CHECK CONDITION, REQUEST SENSE (when `sense`) and
   * throw an AtapiError with the sense data.
   */
  async packet(packet: readonly number[], expect: number, sense = true): Promise<Uint8Array> {
    const v = this.vcpu;
    const base = this.channel.cmd;
    const op = packet[0]!;
    const dma = this.via === "dma" && expect > 0;
    if (dma && expect > DMA_BUFFER_BYTES)
      throw new RangeError(`DMA transfers are at most ${DMA_BUFFER_BYTES} bytes`);
    await this.until(() => !(v.inb(this.channel.ctl) & (ST_BSY | ST_DRQ)), op);
    v.outb(base + REG_DEVICE, DEV_OBS | (this.unit << 4));
    v.outb(base + REG_FEATURES, dma ? 1 : 0);
    v.outb(base + REG_LBA_MID, this.byteCount & 0xff);
    v.outb(base + REG_LBA_HIGH, this.byteCount >> 8);
    v.outb(base + REG_COMMAND, ATA_CMD.PACKET);
    // The device asks for the packet with DRQ and CoD set, IO clear (no interrupt).
    await this.until(() => (v.inb(this.channel.ctl) & (ST_BSY | ST_DRQ)) === ST_DRQ, op);
    if ((v.inb(base + REG_SECTOR_COUNT) & (INT_REASON_COD | INT_REASON_IO)) !== INT_REASON_COD)
      throw new AtapiError(
        `packet 0x${hex2(op)}: the device did not ask for a packet`,
        op,
        v.inb(this.channel.ctl),
        0,
        null,
      );
    let bm = 0;
    if (dma) bm = this.dmaSetup(expect);
    for (let i = 0; i < ATAPI_PACKET_SIZE; i += 2)
      v.outw(base + REG_DATA, packet[i]! | (packet[i + 1]! << 8));
    const out = new Uint8Array(expect);
    let got = 0;
    let st: number;
    if (dma) {
      v.outb(bm + BM_REG_COMMAND, BM_CMD_START | BM_CMD_READ);
      st = await this.waitIntr(op, true);
      const bms = v.inb(bm + BM_REG_STATUS);
      v.outb(bm + BM_REG_COMMAND, 0);
      v.outb(bm + BM_REG_STATUS, bms);
      if (!(st & ST_ERR)) {
        // With nIEN the drive raises no interrupt, so the Bus Master's Interrupt bit stays clear too.
        if (bms & BM_ST_ERROR || bms & BM_ST_ACTIVE || (this.useIrq && !(bms & BM_ST_INTR)))
          throw new AtapiError(
            `packet 0x${hex2(op)}: DMA failed (BM status 0x${hex2(bms)})`,
            op,
            st,
            0,
            null,
          );
        const f = v.mem.read(this.bufGpa, out);
        if (f) throw new Error(f.message);
        got = expect;
      }
    } else {
      // Data-in: each DRQ block announces its size in LBA Mid/High; CoD|IO with DRQ clear is the status phase.
      for (;;) {
        st = await this.waitIntr(op);
        if (st & ST_ERR || !(st & ST_DRQ)) break;
        const n = v.inb(base + REG_LBA_MID) | (v.inb(base + REG_LBA_HIGH) << 8);
        for (let i = 0; i < n; i += 2) {
          const w = v.inw(base + REG_DATA);
          if (got < expect) out[got] = w & 0xff;
          if (got + 1 < expect) out[got + 1] = w >> 8;
          got += 2;
        }
      }
    }
    if (st & ST_ERR) {
      const err = v.inb(base + REG_ERROR);
      const sd = sense && op !== MMC_CMD.REQUEST_SENSE ? await this.requestSense().catch(() => null) : null;
      const what = sd ? `sense ${hex2(sd.key)}/${hex2(sd.asc)}/${hex2(sd.ascq)}` : `error 0x${hex2(err)}`;
      throw new AtapiError(`packet 0x${hex2(op)}: CHECK CONDITION, ${what}`, op, st, err, sd);
    }
    return out.subarray(0, Math.min(got, expect));
  }

  private pages(): PageAllocator {
    this.allocator ??= new PageAllocator(this.vcpu.mem, 0x20_0000);
    return this.allocator;
  }

  private busMaster(): number {
    if (this.bmBase === undefined) {
      const fn = findPiixIde(this.vcpu);
      if (!fn) throw new AtapiError("no PIIX IDE function on PCI for DMA", 0, 0, 0, null);
      this.bmBase = setupBusMaster(this.vcpu, fn) + this.channel.bmOffset;
    }
    return this.bmBase;
  }

  /** One PRD entry over the driver's 64 KiB buffer, for `bytes`. */
  private dmaSetup(bytes: number): number {
    const v = this.vcpu;
    const bm = this.busMaster();
    if (this.prdGpa < 0) {
      this.prdGpa = this.pages().alloc(PAGE_SIZE);
      this.bufGpa = this.pages().alloc(DMA_BUFFER_BYTES, DMA_BUFFER_BYTES);
    }
    const prd = v.mem.view(this.prdGpa, 8);
    if (isFault(prd)) throw new Error(prd.message);
    const dv = new DataView(prd.buffer, prd.byteOffset, 8);
    dv.setUint32(0, this.bufGpa, true);
    dv.setUint32(4, ((bytes + 1) & 0xfffe) | 0x8000_0000, true);
    v.mem.written(this.prdGpa, 8);
    v.outb(bm + BM_REG_COMMAND, 0);
    v.outb(bm + BM_REG_STATUS, v.inb(bm + BM_REG_STATUS));
    v.outl(bm + BM_REG_PRDT, this.prdGpa);
    return bm;
  }

  /**
   * Wait for INTRQ and read STATUS (acknowledging it), or poll STATUS while BSY with nIEN set (for DMA, while
   * BSY or DRQ: the drive waits for the engine with DRQ).
   */
  private async waitIntr(op: number, dma = false): Promise<number> {
    const v = this.vcpu;
    if (this.useIrq) {
      if (!(await v.waitIrq(this.channel.irq, this.timeoutMs)))
        throw new AtapiError(`command 0x${hex2(op)}: no interrupt`, op, v.inb(this.channel.ctl), 0, null);
      return v.inb(this.channel.cmd + REG_STATUS);
    }
    const busy = dma ? ST_BSY | ST_DRQ : ST_BSY;
    await this.until(() => !(v.inb(this.channel.ctl) & busy), op);
    return v.inb(this.channel.cmd + REG_STATUS);
  }

  private async until(ok: () => boolean, op: number): Promise<void> {
    const v = this.vcpu;
    const deadline = Date.now() + this.timeoutMs;
    while (!ok()) {
      if (Date.now() > deadline)
        throw new AtapiError(`command 0x${hex2(op)}: timed out`, op, v.inb(this.channel.ctl), 0, null);
      await v.relax();
    }
  }
}

/** A 12-byte packet from its leading bytes. */
export function cdb(...bytes: number[]): number[] {
  const out = new Array<number>(ATAPI_PACKET_SIZE).fill(0);
  bytes.forEach((b, i) => (out[i] = b & 0xff));
  return out;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}
