/**
 * QEMU's command-line syntax and its mapping: QemuOpts splitting (`,,` escapes, implied keys, bare booleans),
 * the command lines QEMU 7.2's ide-test launches with (tests/qtest/ide-test.c), and bad lines refused with one
 * message naming the option, in QEMU's words where QEMU has them.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { planLaunch } from "../../src/qemu/config.ts";
import { QemuUsageError, parseMemSize, parseOpts } from "../../src/qemu/opts.ts";

const dir = mkdtempSync(join(tmpdir(), "xenide-opts-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const img = join(dir, "a.img");
const img2 = join(dir, "b.img");
const rules = join(dir, "rules.ini");
writeFileSync(img, Buffer.alloc(4096));
writeFileSync(img2, Buffer.alloc(4096));
writeFileSync(rules, '[inject-error]\nevent = "flush_to_disk"\nerrno = "5"\nonce = "on"\n');

/** What libqtest puts before a case's options (libqtest.c qtest_init_without_qmp_handshake). */
const LIBQTEST = [
  "-qtest",
  "unix:/tmp/qtest-1.sock",
  "-qtest-log",
  "/dev/null",
  "-chardev",
  "socket,path=/tmp/qtest-1.qmp,id=char0",
  "-mon",
  "chardev=char0,mode=control",
  "-display",
  "none",
  "-machine",
  "pc",
];

function refused(argv: string[]): string {
  try {
    planLaunch(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(QemuUsageError);
    return (e as Error).message;
  }
  throw new Error(`accepted: ${argv.join(" ")}`);
}

describe("QemuOpts", () => {
  it("splits on commas, with ,, as a comma and the implied key first", () => {
    const o = parseOpts("-device", "ide-hd,drive=a,,b,serial=x=y,bus=ide.1", "driver");
    expect(o.entries).toEqual([
      ["driver", "ide-hd"],
      ["drive", "a,b"],
      ["serial", "x=y"],
      ["bus", "ide.1"],
    ]);
  });

  it("takes a bare key as on and nokey as off; a later key overrides", () => {
    const o = parseOpts("-chardev", "socket,server,nowait,id=a,id=b", "backend");
    expect(o.bool("server", false)).toBe(true);
    expect(o.bool("wait", true)).toBe(false);
    expect(o.get("id")).toBe("b");
  });

  it("reads -m sizes with MiB as the default unit", () => {
    expect(parseMemSize("-m", "128")).toBe(128 << 20);
    expect(parseMemSize("-m", "1G")).toBe(1 << 30);
    expect(parseMemSize("-m", "1.5G")).toBe(1.5 * (1 << 30));
    expect(() => parseMemSize("-m", "12Q")).toThrow(QemuUsageError);
  });
});

describe("ide-test's command lines", () => {
  it("wwn: QEMU's uint64 forms (decimal, 0x hex, 0 octal), from -device or -global", () => {
    const wwn = (...extra: string[]) => planLaunch(["-drive", `file=${img},if=ide`, ...extra]).drives[0]!.wwn;
    expect(wwn()).toBeUndefined();
    expect(wwn("-global", "ide-hd.wwn=0x5000c50015ea71ac")).toBe(0x5000c50015ea71acn);
    expect(wwn("-global", "ide-hd.wwn=18446744073709551615")).toBe(0xffffffffffffffffn);
    expect(wwn("-global", "ide-hd.wwn=010")).toBe(8n);
    expect(wwn("-global", "ide-hd.wwn= 5")).toBe(5n);
    expect(wwn("-global", "ide-hd.wwn=-1")).toBe(0xffffffffffffffffn); // strtoull's wrap, as QEMU accepts it
    const dev = planLaunch([
      "-device",
      "ide-cd,drive=c,wwn=42",
      "-drive",
      `id=c,if=none,file=${img},media=cdrom`,
    ]);
    expect(dev.drives[0]).toMatchObject({ kind: "cd", wwn: 42n });
  });

  it("identify: -drive if=ide with -global serial and ver", () => {
    const plan = planLaunch([
      ...LIBQTEST,
      "-drive",
      `file=${img},if=ide,cache=writeback,format=raw`,
      "-global",
      "ide-hd.serial=testdisk",
      "-global",
      "ide-hd.ver=version",
      "-accel",
      "qtest",
    ]);
    expect(plan.qtest).toEqual({
      id: "qtest",
      kind: "socket",
      path: "/tmp/qtest-1.sock",
      server: false,
      wait: true,
      origin: "-qtest unix:/tmp/qtest-1.sock",
    });
    expect(plan.qtestLog).toBe("/dev/null");
    expect(plan.monitors).toEqual([
      {
        id: "char0",
        kind: "socket",
        path: "/tmp/qtest-1.qmp",
        server: false,
        wait: true,
        origin: "-chardev socket,path=/tmp/qtest-1.qmp,id=char0",
      },
    ]);
    expect(plan.compat).toBe("qemu-7.2");
    // libqtest passes no -nodefaults: QEMU's default CD-ROM drive is at the secondary master (observed:
    // query-block lists "ide1-cd0", removable, no medium).
    expect(plan.drives).toHaveLength(2);
    expect(plan.drives[1]).toMatchObject({
      position: "secondary-master",
      kind: "cd",
      image: null,
      blkName: "ide1-cd0",
    });
    expect(plan.drives[0]).toMatchObject({
      position: "primary-master",
      kind: "hd",
      image: img,
      writeCache: true,
      noFlush: false,
      serial: "testdisk",
      firmware: "version",
      blkName: "ide0-hd0",
      rerror: "report",
      werror: "enospc",
    });
  });

  it("diagnostic: two -blockdev file nodes under -device ide-hd at units 0 and 1", () => {
    const plan = planLaunch([
      ...LIBQTEST,
      "-blockdev",
      `driver=file,node-name=hda,filename=${img}`,
      "-blockdev",
      `driver=file,node-name=hdb,filename=${img2}`,
      "-device",
      "ide-hd,drive=hda,bus=ide.0,unit=0",
      "-device",
      "ide-hd,drive=hdb,bus=ide.0,unit=1",
    ]);
    expect(plan.drives.map((d) => [d.position, d.image, d.blkName, d.nodeName])).toEqual([
      ["primary-master", img, "", "hda"],
      ["primary-slave", img2, "", "hdb"],
    ]);
  });

  it("retry_pci: blkdebug:CONF:FILE with rerror/werror=stop", () => {
    const plan = planLaunch([
      ...LIBQTEST,
      "-drive",
      `file=blkdebug:${rules}:${img},if=ide,cache=writeback,format=raw,rerror=stop,werror=stop`,
    ]);
    const d = plan.drives[0]!;
    expect(d.image).toBe(img);
    expect(d.rerror).toBe("stop");
    expect(d.werror).toBe("stop");
    expect(d.blkdebug).toEqual([
      expect.objectContaining({ kind: "inject-error", event: "flush_to_disk", errno: 5, once: true }),
    ]);
  });

  it("cdrom: an if=none drive with media=cdrom under -device ide-cd; an ide-cd without a drive is empty", () => {
    const plan = planLaunch([
      ...LIBQTEST,
      "-drive",
      `if=none,file=${img},media=cdrom,format=raw,id=sr0,index=0`,
      "-device",
      "ide-cd,drive=sr0,bus=ide.0",
    ]);
    expect(plan.drives[0]).toMatchObject({
      position: "primary-master",
      kind: "cd",
      image: img,
      readOnly: true,
    });
    expect(planLaunch(["-device", "ide-cd,bus=ide.1"]).drives[0]).toMatchObject({
      position: "secondary-master",
      kind: "cd",
      image: null,
    });
  });

  it("a -drive without file= is an empty CD drive; -cdrom FILE is the CD at index 2 (QEMU's aliases)", () => {
    // Observed with QEMU 7.2: -drive if=ide,index=2,media=cdrom and -drive if=none,id=e1 under -device ide-cd
    // both start, query-block listing "ide1-cd0" and "e1" with no medium inserted.
    const plan = planLaunch([
      "-drive",
      "if=ide,index=2,media=cdrom",
      "-drive",
      "if=none,id=e1",
      "-device",
      "ide-cd,drive=e1,bus=ide.0",
    ]);
    expect(plan.startError).toBeNull();
    expect(plan.drives.map((d) => [d.position, d.kind, d.image, d.blkName, d.nodeName])).toEqual([
      ["primary-master", "cd", null, "e1", ""],
      ["secondary-master", "cd", null, "ide1-cd0", ""],
    ]);
    // ... with no block-driver option (observed: QEMU's words for format= and for cache=, readonly=, discard=).
    expect(refused(["-drive", "if=ide,media=cdrom,format=raw"])).toBe(
      '-drive if=ide,media=cdrom,format=raw: A block device must be specified for "file"',
    );
    expect(refused(["-drive", "if=ide,media=cdrom,readonly=on"])).toBe(
      "-drive if=ide,media=cdrom,readonly=on: Must specify either driver or file",
    );
    expect(planLaunch(["-drive", "if=ide,media=cdrom,rerror=report,aio=threads"]).startError).toBeNull();
    expect(planLaunch(["-cdrom", img]).drives).toMatchObject([
      { position: "secondary-master", kind: "cd", image: img, readOnly: true, blkName: "ide1-cd0" },
    ]);
  });

  it("a hard disk QEMU would not realize fails the start (after the chardevs), the board's drives first", () => {
    // Observed with QEMU 7.2 (the messages, and that -device ones lead with the option).
    expect(planLaunch(["-drive", "if=ide"]).startError).toBe("Device needs media, but drive is empty");
    expect(planLaunch(["-drive", `file=${img},readonly=on`]).startError).toBe("Block node is read-only");
    expect(planLaunch(["-drive", `file=${img},readonly=on,media=cdrom`]).startError).toBeNull();
    expect(planLaunch(["-drive", `file=${img}`]).startError).toBeNull();
    const two = planLaunch([
      "-drive",
      `if=none,id=a,file=${img},readonly=on`,
      "-drive",
      `if=none,id=b,file=${img2},readonly=on`,
      "-device",
      "ide-hd,drive=a,bus=ide.1",
      "-device",
      "ide-hd,drive=b,bus=ide.0",
    ]);
    // Command-line order, not position order: the first -device is the one QEMU realizes (and refuses) first.
    expect(two.startError).toBe("-device ide-hd,drive=a,bus=ide.1: Block node is read-only");
    expect(
      planLaunch([
        "-drive",
        `if=none,id=a,file=${img},readonly=on`,
        "-device",
        "ide-hd,drive=a",
        "-drive",
        "if=ide,index=3",
      ]).startError,
    ).toBe("Device needs media, but drive is empty");
    // An ide-cd on a read-only drive is what a CD is.
    expect(
      planLaunch(["-drive", `if=none,id=a,file=${img},readonly=on`, "-device", "ide-cd,drive=a"]).startError,
    ).toBeNull();
  });

  it("places if=ide drives by index, then by bus/unit, then at the first free position", () => {
    const plan = planLaunch([
      "-drive",
      `file=${img},if=ide`,
      "-drive",
      `file=${img2},if=ide,index=0`,
      "-drive",
      `file=${img},if=ide,bus=1,unit=1,readonly=on`,
      "-qmp",
      "unix:/tmp/q.sock,server=on,wait=off",
      "-S",
      "-m",
      "64M",
    ]);
    expect(plan.drives.map((d) => [d.position, d.image, d.blkName, d.readOnly])).toEqual([
      ["primary-master", img2, "ide0-hd0", false],
      ["primary-slave", img, "ide0-hd1", false],
      ["secondary-master", null, "ide1-cd0", true], // QEMU's default CD-ROM drive
      ["secondary-slave", img, "ide1-hd1", true],
    ]);
    expect(plan.startError).toBe("Block node is read-only"); // a read-only hard disk, as QEMU refuses it
    expect(plan.monitors[0]).toMatchObject({ kind: "socket", server: true, wait: false });
    expect(plan.startPaused).toBe(true);
    expect(plan.ram).toBe(64 << 20);
  });

  it("QEMU's default CD-ROM drive: at index 2 unless -nodefaults, a -device ide-*, or a -drive is there", () => {
    const at2 = (argv: string[]) => planLaunch(argv).drives.find((d) => d.position === "secondary-master");
    expect(at2(["-drive", `file=${img},index=0`])).toMatchObject({
      kind: "cd",
      image: null,
      blkName: "ide1-cd0",
    });
    expect(at2([])).toMatchObject({ kind: "cd", image: null, blkName: "ide1-cd0" });
    expect(at2(["-nodefaults", "-drive", `file=${img},index=0`])).toBeUndefined();
    expect(at2(["-drive", `if=none,id=d,file=${img}`, "-device", "ide-hd,drive=d"])).toBeUndefined();
    expect(at2(["-device", "ide-cd,bus=ide.0"])).toBeUndefined(); // ide-test's flush/empty_drive
    expect(at2(["-hdc", img])).toMatchObject({ kind: "hd", image: img });
    // -drive options without an index take the first free positions first, the default only what is left.
    const three = planLaunch([
      "-drive",
      `file=${img}`,
      "-drive",
      `file=${img2}`,
      "-drive",
      `file=${img},media=cdrom`,
    ]);
    expect(three.drives.map((d) => [d.position, d.blkName])).toEqual([
      ["primary-master", "ide0-hd0"],
      ["primary-slave", "ide0-hd1"],
      ["secondary-master", "ide1-cd0"],
    ]);
    expect(three.drives[2]!.image).toBe(img);
  });

  it("-drive cache= sets O_DIRECT, the write cache and no-flush as QEMU's cache modes do", () => {
    const img = join(dir, "cache.img");
    writeFileSync(img, Buffer.alloc(1 << 20));
    const mode = (cache: string) => {
      const d = planLaunch(["-drive", `file=${img},if=ide,cache=${cache}`]).drives[0]!;
      return [d.direct, d.writeCache, d.noFlush];
    };
    expect(mode("writeback")).toEqual([false, true, false]);
    expect(mode("unsafe")).toEqual([false, true, true]);
    expect(mode("none")).toEqual([true, true, false]);
    expect(mode("writethrough")).toEqual([false, false, false]);
    expect(mode("directsync")).toEqual([true, false, false]);
    expect(() => mode("sometimes")).toThrow(/invalid cache option/);
    // -blockdev says it per node: cache.no-flush=on on the file node or the format node above it.
    const node = (fileOpts: string, rawOpts: string) =>
      planLaunch([
        "-blockdev",
        `driver=file,node-name=f,filename=${img}${fileOpts}`,
        "-blockdev",
        `driver=raw,node-name=r,file=f${rawOpts}`,
        "-device",
        "ide-hd,drive=r,bus=ide.0",
      ]).drives[0]!.noFlush;
    expect(node("", "")).toBe(false);
    expect(node(",cache.no-flush=on", "")).toBe(true);
    expect(node("", ",cache.no-flush=on")).toBe(true);
  });

  it("-compat xenide chooses the standard's profile", () => {
    expect(planLaunch(["-compat", "xenide"]).compat).toBe("xenide");
  });
});

describe("image formats and NBD, as QEMU names them", () => {
  it("-drive format=qcow2|raw is kept; without format= the image is probed", () => {
    const plan = planLaunch([
      "-drive",
      `file=${img},if=ide,index=0,format=qcow2`,
      "-drive",
      `file=${img2},if=ide,index=1,format=raw`,
      "-drive",
      `file=${img},if=ide,index=2,readonly=on`,
    ]);
    expect(plan.drives.map((d) => d.format)).toEqual(["qcow2", "raw", undefined]);
  });

  it("QEMU's legacy nbd: file names and -blockdev driver=nbd become NBD URLs", () => {
    const plan = planLaunch([
      "-drive",
      "file=nbd:unix:/run/n.sock:exportname=disk,if=ide,index=0,format=raw",
      "-drive",
      "file=nbd:example.org:10810,if=ide,index=1",
      "-blockdev",
      "driver=nbd,node-name=n0,server.type=unix,server.path=/run/m.sock,export=vm",
      "-device",
      "ide-hd,drive=n0,bus=ide.1,unit=0",
      "-blockdev",
      `driver=file,node-name=f0,filename=${img}`,
      "-blockdev",
      "driver=qcow2,node-name=q0,file=f0",
      "-device",
      "ide-hd,drive=q0,bus=ide.1,unit=1",
    ]);
    expect(plan.drives.map((d) => [d.position, d.image, d.format])).toEqual([
      ["primary-master", "nbd+unix:///disk?socket=/run/n.sock", "raw"],
      ["primary-slave", "nbd://example.org:10810/", undefined],
      ["secondary-master", "nbd+unix:///vm?socket=/run/m.sock", "raw"],
      ["secondary-slave", img, "qcow2"],
    ]);
  });
});

// What QEMU 7.2 refuses when it makes the devices, after connecting its character devices (observed: a libqtest
// client gets both connections, then the error): the plan carries it as startError, reported after connecting.
describe("devices QEMU refuses when it makes them: the start's error, after the connections", () => {
  it.each([
    // Observed: "-device foo,bus=x: 'foo' is not a valid device model name".
    [
      ["-device", "virtio-blk,drive=x"],
      "-device virtio-blk,drive=x: 'virtio-blk' is not a valid device model name",
    ],
    // Observed: "-device ide-hd,bus=ide.0: No drive specified".
    [["-device", "ide-hd,bus=ide.0"], "-device ide-hd,bus=ide.0: No drive specified"],
    // Observed: QEMU finds the bus first: "-device ide-hd,bus=ide.7: Bus 'ide.7' not found".
    [["-device", "ide-hd,bus=ide.7"], "-device ide-hd,bus=ide.7: Bus 'ide.7' not found"],
    // Observed: "-device ide-hd,drive=nope: Property 'ide-hd.drive' can't find value 'nope'".
    [
      ["-device", "ide-hd,drive=nope"],
      "-device ide-hd,drive=nope: Property 'ide-hd.drive' can't find value 'nope'",
    ],
    [
      ["-global", "ide-hd.discard_granularity=0"],
      "-global ide-hd.discard_granularity=0: property 'discard_granularity' not supported by xenide",
    ],
    // Observed: "can't apply global ide-hd.wwn=1e3: Parameter 'wwn' expects uint64".
    [
      ["-global", "ide-hd.wwn=1e3", "-drive", `file=${img}`],
      "can't apply global ide-hd.wwn=1e3: Parameter 'wwn' expects uint64",
    ],
    // Observed: "-device ide-hd,drive=d,wwn=1e3: Parameter 'wwn' expects integer".
    [
      ["-device", "ide-hd,drive=d,wwn=0x10000000000000000", "-drive", `id=d,if=none,file=${img}`],
      "-device ide-hd,drive=d,wwn=0x10000000000000000: Parameter 'wwn' expects integer",
    ],
    [
      ["-drive", `file=${img},index=1`, "-drive", `file=${img2},index=1`],
      `-drive file=${img2},index=1: IDE position 1 is already in use`,
    ],
  ])("%j", (argv, message) => {
    const plan = planLaunch(argv as string[]);
    expect(plan.startError).toBe(message);
    expect(plan.drives).toEqual([]); // nothing to open for a start that fails
  });
});

describe("bad command lines: one message naming the option", () => {
  it.each([
    [["-foo"], "-foo: invalid option"],
    [["--bar", "x"], "-bar: invalid option"],
    [["-drive"], "-drive: requires an argument"],
    // QEMU's messages lead with the option and its argument as written (its error location).
    [
      ["-drive", `file=${img},if=scsi`],
      `-drive file=${img},if=scsi: only if=ide and if=none are supported by xenide (if=scsi)`,
    ],
    [
      ["-drive", `file=${img},format=vmdk`],
      `-drive file=${img},format=vmdk: only raw and qcow2 images are supported by xenide (format=vmdk)`,
    ],
    [["-drive", "file=nbd:unix:"], "-drive file=nbd:unix:: nbd:unix:: nbd:unix: needs a socket path"],
    [
      ["-blockdev", "driver=nbd,node-name=n,server.type=vsock"],
      "-blockdev driver=nbd,node-name=n,server.type=vsock: xenide's NBD client takes server.type unix or inet",
    ],
    [["-drive", `file=${img},bogus=1`], `-drive file=${img},bogus=1: Invalid parameter 'bogus'`],
    // Observed with QEMU 7.2: "-drive file=ro.img,format=raw,werror=maybe: 'maybe' invalid write error action".
    [
      ["-drive", `file=${img},werror=maybe`],
      `-drive file=${img},werror=maybe: 'maybe' invalid write error action`,
    ],
    [
      ["-drive", `file=${img},rerror=enospc`],
      `-drive file=${img},rerror=enospc: enospc is not supported as read error action`,
    ],
    [
      ["-drive", `file=${img},index=7`],
      `-drive file=${img},index=7: index 7: the PC has IDE positions 0-3 only`,
    ],
    [["-machine", "q35"], "-machine q35: only the pc machine (i440FX + PIIX3) is emulated by xenide"],
    [["-accel", "kvm"], "-accel kvm: accelerator 'kvm' not supported by xenide (qtest, tcg)"],
    [["-display", "gtk"], "-display gtk: Display 'gtk' is not available"],
    [["-mon", "chardev=nope,mode=control"], '-mon: chardev "nope" not found'],
    [["-qmp", "tcp:localhost:4444"], "-qmp tcp:localhost:4444: character device not supported by xenide"],
    [["-compat", "bochs"], "-compat bochs: unknown profile (xenide, qemu-7.2)"],
    [["-m", "5G"], "-m 5G: xenide's guest RAM is at most 4194300K (just under 4 GiB)"],
    [[img], `give the image with -drive file=${img}`],
  ])("%j", (argv, message) => {
    expect(refused(argv as string[])).toContain(message);
  });

  it("a blkdebug rule file QEMU would refuse", () => {
    const bad = join(dir, "bad.ini");
    writeFileSync(bad, '[inject-error]\nevent = "no_such_event"\n');
    expect(refused(["-drive", `file=blkdebug:${bad}:${img}`])).toContain(
      'Invalid event name "no_such_event"',
    );
  });
});
