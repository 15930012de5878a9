/**
 * blkdebug's rule file and behaviour as QEMU 7.2's block/blkdebug.c: events arm injection rules, set-state moves
 * the state machine, `once` disarms, `sector` and `iotype` narrow a rule, and breakpoints hold a request on the
 * asynchronous path until it is resumed.
 */
import { describe, expect, it } from "vitest";
import {
  BlkdebugBackend,
  BlkdebugBreakError,
  BlkdebugConfigError,
  parseBlkdebugConfig,
  parseBlkdebugFilename,
} from "../../src/storage/blkdebug.ts";
import { MemoryBackend } from "../../src/storage/memory-backend.ts";
import { IoError, type MediumRequest } from "../../src/storage/types.ts";

/** libqos's prepare_blkdebug_script(path, "flush_to_disk"), byte for byte (tests/qtest/libqos/libqos.c). */
const LIBQOS_FLUSH = `[inject-error]
event = "flush_to_disk"
errno = "5"
state = "1"
immediately = "off"
once = "on"
[set-state]
event = "flush_to_disk"
new_state = "2"
`;

const sector = () => new Uint8Array(512);

function startIo(b: BlkdebugBackend, req: MediumRequest): Promise<IoError | undefined> {
  return new Promise((resolve) => b.startIo(req, resolve));
}

describe("rule file", () => {
  it("parses libqos's script", () => {
    expect(parseBlkdebugConfig(LIBQOS_FLUSH)).toEqual([
      {
        kind: "inject-error",
        event: "flush_to_disk",
        errno: 5,
        sector: -1,
        once: true,
        immediately: false,
        state: 1,
        iotypes: [],
      },
      { kind: "set-state", event: "flush_to_disk", state: 0, newState: 2 },
    ]);
  });

  it.each([
    ['[inject-error]\nevent = "nope"\n', 'Invalid event name "nope"'],
    ['[inject-error]\nerrno = "5"\n', "Missing event name for rule"],
    ['[bogus]\nevent = "read_aio"\n', "There is no option group 'bogus'"],
    ['[inject-error]\nevent = "read_aio"\ncolour = "red"\n', "Invalid parameter 'colour'"],
    ['event = "read_aio"\n', "no group defined"],
    ["[inject-error]\nevent = read_aio\n", "parse error"],
  ])("refuses %j", (text, message) => {
    expect(() => parseBlkdebugConfig(text)).toThrow(BlkdebugConfigError);
    expect(() => parseBlkdebugConfig(text)).toThrow(message);
  });

  it("splits blkdebug:CONF:FILE at the first colon", () => {
    expect(parseBlkdebugFilename("blkdebug:/tmp/r.ini:/tmp/d.img")).toEqual({
      config: "/tmp/r.ini",
      image: "/tmp/d.img",
    });
    expect(parseBlkdebugFilename("blkdebug::/tmp/d.img")).toEqual({ config: "", image: "/tmp/d.img" });
    expect(parseBlkdebugFilename("/tmp/d.img")).toBeNull();
  });
});

describe("injection and state", () => {
  it("fails the first flush that reaches the disk in state 1, then moves to state 2 and lets flushes pass", () => {
    const b = new BlkdebugBackend(new MemoryBackend(64 * 512), parseBlkdebugConfig(LIBQOS_FLUSH));
    b.flush(); // nothing written yet: flush_to_os only, no flush_to_disk event, nothing armed
    expect(b.state).toBe(1);
    b.write(0, [sector()]);
    expect(() => b.flush()).toThrow(IoError);
    expect(b.state).toBe(2);
    expect(b.injected).toBe(1);
    b.flush(); // still dirty, flush_to_disk again, but the rule is for state 1 (and was once)
    expect(b.injected).toBe(1);
  });

  it("keeps a rule armed without once, and narrows it by sector and request type", () => {
    const rules = parseBlkdebugConfig(
      '[inject-error]\nevent = "read_aio"\nerrno = "28"\nsector = "10"\niotype = "read"\n',
    );
    const b = new BlkdebugBackend(new MemoryBackend(64 * 512), rules);
    b.read(0, [sector()]); // arms the rule; sector 0 is not sector 10
    let err: unknown;
    try {
      b.read(8, [new Uint8Array(4 * 512)]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IoError);
    expect((err as IoError).code).toBe("ENOSPC");
    expect(() => b.read(10, [sector()])).toThrow(IoError); // still armed
    b.write(10, [sector()]); // writes are not of the rule's type
  });
});

describe("breakpoints (asynchronous path)", () => {
  it("holds a flush at flush_to_os until resume, then completes it", async () => {
    const b = new BlkdebugBackend(new MemoryBackend(64 * 512));
    b.breakpoint("flush_to_os", "A");
    let done = false;
    const p = startIo(b, { op: "flush", sector: 0, count: 0, bufs: [] }).then((e) => {
      done = true;
      return e;
    });
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    expect(b.heldTags).toEqual(["A"]);
    expect(() => b.resume("B")).toThrow(BlkdebugBreakError);
    b.resume("A");
    expect(await p).toBeUndefined();
    expect(b.heldTags).toEqual([]);
    // A breakpoint holds one request: the next flush goes straight through.
    expect(await startIo(b, { op: "flush", sector: 0, count: 0, bufs: [] })).toBeUndefined();
  });

  it("remove_break drops a breakpoint before it fires; unknown tags and events are refused", async () => {
    const b = new BlkdebugBackend(new MemoryBackend(64 * 512));
    b.breakpoint("write_aio", "W");
    b.removeBreak("W");
    expect(() => b.removeBreak("W")).toThrow(BlkdebugBreakError);
    expect(() => b.breakpoint("nonsense", "X")).toThrow(BlkdebugBreakError);
    expect(await startIo(b, { op: "write", sector: 1, count: 0, bufs: [sector().fill(7)] })).toBeUndefined();
    const back = sector();
    b.read(1, [back]);
    expect(back[0]).toBe(7);
  });

  it("an injected error on the asynchronous path arrives as the completion", async () => {
    const b = new BlkdebugBackend(
      new MemoryBackend(64 * 512),
      parseBlkdebugConfig('[inject-error]\nevent = "write_aio"\nonce = "on"\n'),
    );
    const err = await startIo(b, { op: "write", sector: 3, count: 0, bufs: [sector()] });
    expect(err).toBeInstanceOf(IoError);
    expect(err!.code).toBe("EIO");
    expect(await startIo(b, { op: "write", sector: 3, count: 0, bufs: [sector()] })).toBeUndefined();
  });
});
