import { describe, expect, it } from "vitest";
import {
  GNTCOPY_dest_gref,
  GNTCOPY_source_gref,
  GNTMAP_host_map,
  GNTMAP_readonly,
  GNTST_bad_copy_arg,
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_bad_handle,
  GNTST_bad_page,
  GNTST_general_error,
  GNTST_okay,
  GTF_permit_access,
  GTF_reading,
  GTF_readonly,
  GTF_writing,
  XenHost,
} from "../../src/hypervisor/index.ts";

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

function setup() {
  const host = new XenHost({ ramSize: 32 * 1024 * 1024 });
  const gt = host.guestGrantTable(1, 2);
  const table = host.grantTable(1)!;
  const mem = host.hv.mem;
  const entryBytes = (ref: number) => {
    const b = new Uint8Array(8);
    mem.read(table.entryGpa(ref), b);
    return b;
  };
  return { host, gt, table, mem, entryBytes, dom0: host.grants(0) };
}

describe("grant table v1", () => {
  it("lays entries out as grant_entry_v1 in the guest's own frames", () => {
    const { gt, table, entryBytes } = setup();
    expect(table.nrFrames).toBe(2);
    expect(table.nrEntries).toBe(1024);
    const ref = gt.grantAccess(0, 0x12345, true);
    // Refs 0..7 are reserved (GNTTAB_NR_RESERVED_ENTRIES): the first ref handed out is 8.
    expect(ref).toBe(8);
    // xen-abi.json examples.grant_entry_v1_permit_ro_dom0_frame_0x12345 (flags u16, domid u16, frame u32, LE).
    expect(hex(entryBytes(ref))).toBe("0500000045230100");
    expect(table.entryGpa(ref) - table.entryGpa(8 - 8)).toBe(64);
  });

  it("sets GTF_reading|GTF_writing while mapped writable and clears them on unmap", () => {
    const { host, gt, entryBytes, dom0, mem } = setup();
    const gpa = host.domain(1).pages.alloc(4096);
    const ref = gt.grantAccess(0, gpa / 4096, false);
    const m = dom0.map({ dom: 1, ref, flags: GNTMAP_host_map });
    expect(m.status).toBe(GNTST_okay);
    expect(m.gpa).toBe(gpa);
    // xen-abi.json examples.grant_entry_v1_permit_rw_mapped_rw_by_dom0 has flags 0x19; our frame differs.
    expect(entryBytes(ref)[0]).toBe(GTF_permit_access | GTF_reading | GTF_writing);
    m.page![5] = 0xab;
    expect(mem.readU8(gpa + 5)).toBe(0xab);
    // A mapped grant cannot be revoked.
    expect(gt.tryEndAccess(ref)).toBe(false);
    expect(dom0.unmap(m.handle)).toBe(GNTST_okay);
    expect(entryBytes(ref)[0]).toBe(GTF_permit_access);
    expect(gt.tryEndAccess(ref)).toBe(true);
    expect(hex(entryBytes(ref)).slice(0, 4)).toBe("0000");
  });

  it("keeps GTF_reading until the last read-only mapping goes", () => {
    const { host, gt, entryBytes, dom0 } = setup();
    const gpa = host.domain(1).pages.alloc(4096);
    const ref = gt.grantAccess(0, gpa / 4096, true);
    const a = dom0.map({ dom: 1, ref, flags: GNTMAP_host_map | GNTMAP_readonly });
    const b = dom0.map({ dom: 1, ref, flags: GNTMAP_host_map | GNTMAP_readonly });
    expect([a.status, b.status]).toEqual([GNTST_okay, GNTST_okay]);
    expect(entryBytes(ref)[0]).toBe(GTF_permit_access | GTF_readonly | GTF_reading);
    dom0.unmap(a.handle);
    expect(entryBytes(ref)[0]! & GTF_reading).toBe(GTF_reading);
    dom0.unmap(b.handle);
    expect(entryBytes(ref)[0]).toBe(GTF_permit_access | GTF_readonly);
  });

  it("refuses every bad map with Xen's status and never hands out the page", () => {
    const { host, gt, table, dom0, mem } = setup();
    const gpa = host.domain(1).pages.alloc(4096);
    const ro = gt.grantAccess(0, gpa / 4096, true);
    const toOther = gt.grantAccess(5, gpa / 4096, false);
    const revoked = gt.grantAccess(0, gpa / 4096, false);
    expect(gt.endAccessRef(revoked)).toBe(true); // cleared, ref kept (not reused below)
    const badFrame = gt.grantAccess(0, mem.size / 4096 + 10, false);
    const cases: [string, Parameters<typeof dom0.map>[0], number][] = [
      // "Attempt to write-pin a r/o grant entry" (grant_table.c _set_status_v1)
      [
        "writable map of a GTF_readonly grant",
        { dom: 1, ref: ro, flags: GNTMAP_host_map },
        GNTST_general_error,
      ],
      // "Bad flags or dom": the entry names another grantee
      ["grant for another domain", { dom: 1, ref: toOther, flags: GNTMAP_host_map }, GNTST_general_error],
      ["revoked entry", { dom: 1, ref: revoked, flags: GNTMAP_host_map }, GNTST_general_error],
      ["never-granted entry", { dom: 1, ref: 300, flags: GNTMAP_host_map }, GNTST_general_error],
      ["ref beyond the table", { dom: 1, ref: table.nrEntries, flags: GNTMAP_host_map }, GNTST_bad_gntref],
      ["no host_map/device_map flag", { dom: 1, ref: ro, flags: GNTMAP_readonly }, GNTST_bad_gntref],
      ["unknown granting domain", { dom: 9, ref: ro, flags: GNTMAP_host_map }, GNTST_bad_domain],
      ["frame outside the granter's RAM", { dom: 1, ref: badFrame, flags: GNTMAP_host_map }, GNTST_bad_page],
    ];
    for (const [what, op, status] of cases) {
      const r = dom0.map(op);
      expect({ what, status: r.status, page: r.page }).toEqual({ what, status, page: null });
    }
    // A failed map leaves no in-use flag behind.
    expect(table.loadFlags(table.entryGpa(ro))).toBe(GTF_permit_access | GTF_readonly);
    expect(table.loadFlags(table.entryGpa(badFrame))).toBe(GTF_permit_access);
    expect(dom0.unmap(12345)).toBe(GNTST_bad_handle);
    expect(dom0.mapped).toBe(0);
  });

  it("checks a grant against the mapping domain", () => {
    const { host, gt } = setup();
    const gpa = host.domain(1).pages.alloc(4096);
    const ref = gt.grantAccess(0, gpa / 4096, false);
    // Domain 1 mapping its own grant is not what grants are for.
    expect(host.grants(1).map({ dom: 1, ref, flags: GNTMAP_host_map }).status).toBe(GNTST_bad_domain);
  });

  it("copies to and from grants, with the same checks", () => {
    const { host, gt, dom0, mem, table } = setup();
    const gpa = host.domain(1).pages.alloc(4096);
    mem.write(gpa + 100, Uint8Array.of(1, 2, 3, 4));
    const rw = gt.grantAccess(0, gpa / 4096, false);
    const ro = gt.grantAccess(0, gpa / 4096, true);
    const buf = new Uint8Array(8);
    const before = host.hv.acct.counts.grantCopy;
    const st = dom0.copy([
      {
        source: { dom: 1, ref: ro, offset: 100 },
        dest: { buf, offset: 2 },
        len: 4,
        flags: GNTCOPY_source_gref,
      },
      {
        source: { buf: Uint8Array.of(9, 9), offset: 0 },
        dest: { dom: 1, ref: rw, offset: 4094 },
        len: 2,
        flags: GNTCOPY_dest_gref,
      },
      // Writing through a read-only grant is refused.
      { source: { buf, offset: 0 }, dest: { dom: 1, ref: ro, offset: 0 }, len: 1, flags: GNTCOPY_dest_gref },
      // Crossing the end of the page is refused.
      {
        source: { dom: 1, ref: ro, offset: 4095 },
        dest: { buf, offset: 0 },
        len: 2,
        flags: GNTCOPY_source_gref,
      },
    ]);
    expect(st).toEqual([GNTST_okay, GNTST_okay, GNTST_general_error, GNTST_bad_copy_arg]);
    expect([...buf]).toEqual([0, 0, 1, 2, 3, 4, 0, 0]);
    expect(mem.readU16(gpa + 4094)).toBe(0x0909);
    expect(host.hv.acct.counts.grantCopy - before).toBe(2);
    // Copies pin only for their duration.
    expect(table.loadFlags(table.entryGpa(rw)) & (GTF_reading | GTF_writing)).toBe(0);
  });

  it("counts one hypercall per batch and one grantMap per grant", () => {
    const { host, gt, dom0 } = setup();
    const gpa = host.domain(1).pages.alloc(4 * 4096);
    const refs = [0, 1, 2, 3].map((i) => gt.grantAccess(0, gpa / 4096 + i, false));
    const c0 = host.hv.acct.snapshot();
    const maps = dom0.mapBatch(refs.map((ref) => ({ dom: 1, ref, flags: GNTMAP_host_map })));
    const d = host.hv.acct.since(c0);
    expect(d.hypercall).toBe(1);
    expect(d.grantMap).toBe(4);
    dom0.unmapBatch(maps.map((m) => m.handle));
    expect(host.hv.acct.since(c0).hypercall).toBe(2);
  });
});
