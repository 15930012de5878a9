/**
 * Drive kinds (src/ide/kind.ts, registry.ts) with a second kind beside the hard disk: a stub with its own
 * signature, ready status and a one-command table (IDENTIFY PACKET DEVICE, answered with a PIO data-in block;
 * everything else aborts), attached as the slave next to a hard disk master. Each position runs its own kind's
 * table and leaves its own signature after power-on, SRST and EXECUTE DEVICE DIAGNOSTIC; the hard disk's table
 * is untouched. This is the shape an ATAPI kind plugs into.
 */
import { describe, expect, it } from "vitest";
import type { AtaCore } from "../../src/ide/core.ts";
import { getString } from "../../src/ide/identify.ts";
import { HD_COMMANDS } from "../../src/ide/hd/commands.ts";
import { commandTable, type DriveKind } from "../../src/ide/kind.ts";
import { startSingleIn } from "../../src/ide/pio.ts";
import { driveKind, registerDriveKind } from "../../src/ide/registry.ts";
import { createPc } from "../../src/machine/pc.ts";
import {
  ATA_CMD,
  CTL_SRST,
  DIAG_PASSED,
  ERR_ABRT,
  ID,
  ID_MODEL_WORDS,
  ST_BSY,
  ST_DRDY,
  ST_DRQ,
  ST_DSC,
  ST_ERR,
} from "../../src/spec/ata.ts";
import { makeEngine } from "../../src/storage/index.ts";
import {
  ALT,
  bareHv,
  CMDREG,
  CTL,
  DEV,
  ENGINES,
  ERR,
  IRQ,
  LBAH,
  LBAL,
  LBAM,
  NSECT,
  patternedDisk,
  readWords,
  STATUS,
} from "./helpers.ts";

declare module "../../src/ide/device.ts" {
  interface DriveKindNames {
    "test-stub": true;
  }
}

const STUB_SIGNATURE = { sectorCount: 0x01, lbaLow: 0x01, lbaMid: 0x5a, lbaHigh: 0xa5 };
/** Ready without DSC, so the test sees the kind's own value. */
const STUB_READY = ST_DRDY;
const REPLY = Uint8Array.from({ length: 512 }, (_, i) => (i * 3) ^ 0x5a);

const STUB: DriveKind = {
  name: "test-stub",
  signature: STUB_SIGNATURE,
  readyStatus: STUB_READY,
  medium: { sectorSize: 512, defaultModel: "STUB", chs: false },
  commands: commandTable([
    [
      ATA_CMD.IDENTIFY_PACKET_DEVICE,
      "IDENTIFY PACKET DEVICE",
      0,
      (d: AtaCore) => {
        startSingleIn(d, REPLY);
        return false;
      },
    ],
  ]),
};
registerDriveKind(STUB);

function machine(engine: (typeof ENGINES)[number]) {
  const hv = bareHv();
  createPc({
    hv,
    firmwareInit: true,
    primary: {
      master: { engine: makeEngine(patternedDisk(2048), engine) },
      slave: { engine: makeEngine(patternedDisk(64), engine), kind: "test-stub" },
    },
  });
  const cpu = hv.vcpu(0);
  const select = (unit: 0 | 1) => cpu.outb(DEV, 0xa0 | (unit << 4));
  const signature = () => [cpu.inb(NSECT), cpu.inb(LBAL), cpu.inb(LBAM), cpu.inb(LBAH)];
  return { cpu, select, signature };
}

describe.each(ENGINES)("a second drive kind beside the hard disk (%s engine)", (engine) => {
  it("each position shows its own kind's signature and ready status from power-on", () => {
    const { cpu, select, signature } = machine(engine);
    select(1);
    expect(signature()).toEqual([0x01, 0x01, 0x5a, 0xa5]);
    expect(cpu.inb(ALT)).toBe(STUB_READY);
    expect(cpu.inb(ERR)).toBe(DIAG_PASSED);
    select(0);
    expect(signature()).toEqual([0x01, 0x01, 0x00, 0x00]);
    expect(cpu.inb(ALT)).toBe(ST_DRDY | ST_DSC);
  });

  it("the stub answers its one opcode from its own table", () => {
    const { cpu, select } = machine(engine);
    select(1);
    cpu.inb(STATUS);
    cpu.outb(CMDREG, ATA_CMD.IDENTIFY_PACKET_DEVICE);
    expect(cpu.inb(ALT)).toBe(ST_DRDY | ST_DSC | ST_DRQ);
    expect(cpu.irqRaised(IRQ)).toBe(true);
    expect(readWords(cpu, 256)).toEqual(REPLY);
    expect(cpu.inb(STATUS)).toBe(ST_DRDY | ST_DSC);
  });

  it("every other opcode aborts on the stub, IDENTIFY DEVICE and READ SECTORS included", () => {
    const { cpu, select } = machine(engine);
    for (const op of [ATA_CMD.IDENTIFY_DEVICE, ATA_CMD.READ_SECTORS, ATA_CMD.READ_DMA, ATA_CMD.NOP]) {
      select(1);
      cpu.inb(STATUS);
      cpu.outb(CMDREG, op);
      expect(cpu.inb(ALT), op.toString(16)).toBe(ST_DRDY | ST_ERR);
      expect(cpu.inb(ERR)).toBe(ERR_ABRT);
      expect(cpu.irqRaised(IRQ)).toBe(true);
    }
  });

  it("the hard disk beside it keeps the hard disk's table", () => {
    const { cpu, select } = machine(engine);
    select(0);
    cpu.inb(STATUS);
    cpu.outb(CMDREG, ATA_CMD.IDENTIFY_PACKET_DEVICE);
    expect(cpu.inb(ALT)).toBe(ST_DRDY | ST_ERR);
    expect(cpu.inb(ERR)).toBe(ERR_ABRT);
    cpu.inb(STATUS);
    cpu.outb(CMDREG, ATA_CMD.IDENTIFY_DEVICE);
    expect(cpu.inb(ALT)).toBe(ST_DRDY | ST_DSC | ST_DRQ);
    const bytes = readWords(cpu, 256);
    const words = new Uint16Array(bytes.buffer);
    expect(getString(words, ID.MODEL_NUMBER, ID_MODEL_WORDS).trimEnd()).toBe("XENIDE HARDDISK");
    expect(HD_COMMANDS[ATA_CMD.IDENTIFY_PACKET_DEVICE]).toBeUndefined();
  });

  it("SRST and EXECUTE DEVICE DIAGNOSTIC leave each kind's signature and status", () => {
    const { cpu, select, signature } = machine(engine);
    // Scribble over the shadow registers of both positions.
    cpu.outb(LBAM, 0x33);
    cpu.outb(LBAH, 0x44);
    cpu.outb(CTL, CTL_SRST);
    select(0);
    expect(cpu.inb(ALT)).toBe(ST_BSY | ST_DRDY | ST_DSC);
    cpu.outb(CTL, 0);
    select(1);
    expect(signature()).toEqual([0x01, 0x01, 0x5a, 0xa5]);
    expect(cpu.inb(ALT)).toBe(STUB_READY);
    select(0);
    expect(signature()).toEqual([0x01, 0x01, 0x00, 0x00]);
    cpu.outb(LBAM, 0x33);
    cpu.outb(LBAH, 0x44);
    cpu.outb(CMDREG, ATA_CMD.EXECUTE_DEVICE_DIAGNOSTIC);
    expect(cpu.inb(STATUS)).toBe(ST_DRDY | ST_DSC);
    select(1);
    expect(signature()).toEqual([0x01, 0x01, 0x5a, 0xa5]);
    expect(cpu.inb(ALT)).toBe(STUB_READY);
    expect(cpu.inb(ERR)).toBe(DIAG_PASSED);
  });
});

describe("the drive kind registry", () => {
  it("gives the hard disk by default, the stub by name, and refuses unknown or duplicate kinds", () => {
    expect(driveKind(undefined).name).toBe("hd");
    expect(driveKind("hd").name).toBe("hd");
    expect(driveKind("test-stub")).toBe(STUB);
    expect(() => registerDriveKind(STUB)).toThrow(RangeError);
    expect(() => driveKind("floppy" as "hd")).toThrow(/unknown drive kind/);
  });

  it("a command table refuses an opcode defined twice", () => {
    const h = () => true;
    expect(() =>
      commandTable([
        [0x20, "A", 0, h],
        [0x20, "B", 0, h],
      ]),
    ).toThrow(RangeError);
  });
});
