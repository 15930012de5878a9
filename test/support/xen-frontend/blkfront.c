/*
 * A small blkif frontend written against Xen's own public headers (Debian libxen-dev: xen/io/ring.h,
 * xen/io/blkif.h, xen/grant_table.h), in the manner of Mini-OS blkfront.c and Linux xen-blkfront.c, compiled
 * to freestanding wasm32 and run with the guest's physical memory as its linear memory: every pointer below
 * is a guest-physical address, the shared ring and the grant table are the guest's own pages, and this file's
 * statics and stack live in the guest's low memory too.
 *
 * It grants its ring pages and data pages itself by writing grant_entry_v1 records into its grant table
 * (domid and frame first, then flags after a barrier; revoked with a compare-and-swap that fails while the
 * backend still has the page mapped), fills requests with RING_GET_REQUEST (direct ones with up to 11
 * segments, indirect ones through a granted page of blkif_request_segment entries), publishes them with
 * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY and consumes responses with RING_COPY_RESPONSE and
 * RING_FINAL_CHECK_FOR_RESPONSES. The only thing it asks of its host is EVTCHNOP_send (an import).
 *
 * Build: clang --target=wasm32 -ffreestanding -nostdlib -matomics -mbulk-memory, with -D__x86_64__ for the
 * x86_64-abi ring layout, or -D__i386__ -DXF_ABI_X86_32 for x86_32-abi (see below).
 */
#include <stddef.h>
#include <stdint.h>

/* ring.h (for __XEN_INTERFACE_VERSION__ < 0x00030208, the default here) maps xen_mb/rmb/wmb to these. */
#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define wmb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
/* ring.h's SHARED_RING_INIT calls memset; freestanding, that is the compiler's (wasm memory.fill). */
#define memset __builtin_memset

/*
 * x86_32-abi: the header lays blkif_request out for i386 only through the i386 C ABI, where a uint64_t member
 * is 4-byte aligned. wasm32 aligns uint64_t to 8, so -D__i386__ alone still gives the 112-byte x86_64 layout.
 * Capping member alignment at 4 is exactly the i386 SysV struct rule, and gives the 108-byte layout (with
 * __i386__ also selecting the header's i386-only `pad` member of blkif_request_indirect).
 */
#ifdef XF_ABI_X86_32
#pragma pack(push, 4)
#endif
#include <xen/xen.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/io/blkif.h>
#include <xen/io/protocols.h>
#ifdef XF_ABI_X86_32
#pragma pack(pop)
_Static_assert(sizeof(blkif_request_t) == 108, "x86_32-abi blkif_request is 108 bytes");
_Static_assert(sizeof(blkif_response_t) == 12, "x86_32-abi blkif_response is 12 bytes");
_Static_assert(offsetof(blkif_request_t, id) == 4, "x86_32-abi id at 4");
#else
_Static_assert(sizeof(blkif_request_t) == 112, "x86_64-abi blkif_request is 112 bytes");
_Static_assert(sizeof(blkif_response_t) == 16, "x86_64-abi blkif_response is 16 bytes");
_Static_assert(offsetof(blkif_request_t, id) == 8, "x86_64-abi id at 8");
#endif

#define XF_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define XF_EXPORT(name) __attribute__((export_name(#name)))

/* EVTCHNOP_send on our event channel. */
XF_IMPORT(xen_evtchn_send) void xen_evtchn_send(uint32_t port);

#define XF_PAGE_SIZE 4096u
#define XF_PAGE_SHIFT 12
#define XF_SECTOR_SHIFT 9
#define XF_MAX_RING_PAGES 16 /* ring-page-order 4 */
#define XF_MAX_RING_SIZE __CONST_RING_SIZE(blkif, XF_PAGE_SIZE * XF_MAX_RING_PAGES)
#define XF_MAX_GREFS 16384 /* 32 grant frames */
/*
 * Indirect requests: one indirect page per ring slot (room for PAGE_SIZE / sizeof(struct
 * blkif_request_segment) = 512 entries), used up to 256 segments, the most Linux blkback ever advertises
 * (MAX_INDIRECT_SEGMENTS); that keeps this driver's statics small.
 */
#define XF_MAX_INDIRECT_SEGS 256

/* Errors returned by the exported functions (negative). */
#define XF_EAGAIN (-11)    /* ring or grant refs exhausted: push, poll, retry */
#define XF_EINVAL (-22)    /* bad argument */
#define XF_EIO (-5)        /* the backend broke the protocol; the device is dead */
#define XF_EBUSY (-16)     /* the backend still maps a grant it was done with */

struct xf_shadow {
    uint32_t in_use;
    uint32_t gen;     /* high half of the request id: catches a stale or duplicated response */
    uint32_t tag;     /* the caller's tag */
    uint8_t op;
    uint16_t nr_grefs;
    grant_ref_t *gref; /* this slot's row of shadow_grefs */
};

/* What xf_poll hands back per completed request (16 bytes, little-endian). */
struct xf_completion {
    uint32_t tag;
    uint32_t id_lo;
    int32_t status;
    uint32_t op;
};

static blkif_front_ring_t ring;
static blkif_sring_t *sring;
static uint32_t ring_pages;
static grant_ref_t ring_ref[XF_MAX_RING_PAGES];
static grant_entry_v1_t *gnttab;
static domid_t backend_id;
static evtchn_port_t evtchn;
static int broken;

static grant_ref_t gref_free[XF_MAX_GREFS];
static uint32_t gref_free_n;

static struct xf_shadow shadow[XF_MAX_RING_SIZE];
/* Grants a request holds: its data pages, plus its indirect page for BLKIF_OP_INDIRECT. */
static grant_ref_t shadow_grefs[XF_MAX_RING_SIZE][XF_MAX_INDIRECT_SEGS + 1];
static uint32_t indirect_area; /* guest-physical: one indirect page per ring slot, 0 = none */
static uint32_t shadow_free[XF_MAX_RING_SIZE];
static uint32_t shadow_free_n;
static uint32_t outstanding;

/* Statistics the host may read. */
static uint32_t stat_notifies, stat_pushes, stat_responses, stat_final_checks_more;

static void zero(void *p, size_t n) { __builtin_memset(p, 0, n); }

/* gnttab_grant_foreign_access: domid and frame, write barrier, then flags (the entry becomes valid last). */
static int grant_access(uint32_t frame, int readonly) {
    if (gref_free_n == 0)
        return -1;
    grant_ref_t ref = gref_free[--gref_free_n];
    gnttab[ref].frame = frame;
    gnttab[ref].domid = backend_id;
    wmb();
    __atomic_store_n(&gnttab[ref].flags, (uint16_t)(GTF_permit_access | (readonly ? GTF_readonly : 0)),
                     __ATOMIC_SEQ_CST);
    return (int)ref;
}

/*
 * gnttab_end_foreign_access_ref (v1): clear the flags unless Xen still has the page pinned for the backend
 * (GTF_reading/GTF_writing). Returns 0 on success, -1 while the backend still maps it.
 */
static int end_access(grant_ref_t ref) {
    uint16_t flags = __atomic_load_n(&gnttab[ref].flags, __ATOMIC_SEQ_CST);
    do {
        if (flags & (GTF_reading | GTF_writing))
            return -1;
    } while (!__atomic_compare_exchange_n(&gnttab[ref].flags, &flags, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    gref_free[gref_free_n++] = ref;
    return 0;
}

/*
 * Set up: the grant table the host gave us (`gnttab_gpa`, `gnttab_entries` v1 entries), the backend's domain,
 * and a ring of `pages` contiguous pages at `sring_gpa`, whose indices start at `start` (0 for a fresh ring;
 * any value to exercise index wrap-around, which ring.h's FRONT_RING_ATTACH supports). Grants the ring pages
 * to the backend and stores their refs at `ring_refs_gpa` (uint32 each). Returns RING_SIZE or an error.
 */
XF_EXPORT(xf_init)
int32_t xf_init(uint32_t sring_gpa, uint32_t pages, uint32_t start, uint32_t gnttab_gpa, uint32_t gnttab_entries,
                uint32_t backend_domid, uint32_t ring_refs_gpa) {
    if (pages == 0 || pages > XF_MAX_RING_PAGES || (pages & (pages - 1)) || (sring_gpa & (XF_PAGE_SIZE - 1)))
        return XF_EINVAL;
    if (gnttab_entries <= GNTTAB_NR_RESERVED_ENTRIES || gnttab_entries > XF_MAX_GREFS)
        return XF_EINVAL;
    gnttab = (grant_entry_v1_t *)(uintptr_t)gnttab_gpa;
    backend_id = (domid_t)backend_domid;
    /* Hand out high refs first, as a LIFO free list; refs 0..7 are reserved. */
    gref_free_n = 0;
    for (uint32_t r = GNTTAB_NR_RESERVED_ENTRIES; r < gnttab_entries; r++)
        gref_free[gref_free_n++] = (grant_ref_t)r;

    sring = (blkif_sring_t *)(uintptr_t)sring_gpa;
    ring_pages = pages;
    zero(sring, (size_t)pages * XF_PAGE_SIZE); /* a fresh zeroed page, as the kernel's allocator gives */
    XEN_FRONT_RING_INIT(&ring, sring, XF_PAGE_SIZE * pages);
    if (start != 0) {
        sring->req_prod = sring->rsp_prod = start;
        sring->req_event = sring->rsp_event = start + 1;
        FRONT_RING_ATTACH(&ring, sring, start, XF_PAGE_SIZE * pages);
    }

    shadow_free_n = 0;
    for (uint32_t i = RING_SIZE(&ring); i-- > 0;) {
        shadow[i].in_use = 0;
        shadow[i].gref = shadow_grefs[i];
        shadow_free[shadow_free_n++] = i;
    }
    outstanding = 0;
    broken = 0;

    uint32_t *refs_out = (uint32_t *)(uintptr_t)ring_refs_gpa;
    for (uint32_t p = 0; p < pages; p++) {
        int ref = grant_access((sring_gpa >> XF_PAGE_SHIFT) + p, 0);
        if (ref < 0)
            return XF_EAGAIN;
        ring_ref[p] = (grant_ref_t)ref;
        refs_out[p] = (uint32_t)ref;
    }
    return (int32_t)RING_SIZE(&ring);
}

XF_EXPORT(xf_set_evtchn)
void xf_set_evtchn(uint32_t port) { evtchn = port; }

/* Where the indirect pages are: RING_SIZE pages at `gpa` (page-aligned), one per ring slot. */
XF_EXPORT(xf_set_indirect_area)
void xf_set_indirect_area(uint32_t gpa) { indirect_area = gpa; }

/*
 * Grant the pages of [buf_gpa, buf_gpa + nr_sectors*512) and describe them as segments (Linux
 * blkif_setup_rw_req_grant). Returns the number of segments, or an error.
 */
static int32_t fill_segments(uint32_t op, uint32_t buf_gpa, uint32_t nr_sectors, uint32_t max_segs,
                             struct blkif_request_segment *segs, grant_ref_t *grefs) {
    if ((buf_gpa & ((1u << XF_SECTOR_SHIFT) - 1)) || nr_sectors == 0)
        return XF_EINVAL;
    uint32_t first_page = buf_gpa >> XF_PAGE_SHIFT;
    uint32_t last_page = (buf_gpa + (nr_sectors << XF_SECTOR_SHIFT) - 1) >> XF_PAGE_SHIFT;
    uint32_t nseg = last_page - first_page + 1;
    if (nseg > max_segs)
        return XF_EINVAL;
    if (gref_free_n < nseg + 1)
        return XF_EAGAIN;
    uint32_t addr = buf_gpa, left = nr_sectors;
    for (uint32_t i = 0; i < nseg; i++) {
        uint32_t first = (addr & (XF_PAGE_SIZE - 1)) >> XF_SECTOR_SHIFT;
        uint32_t n = (XF_PAGE_SIZE >> XF_SECTOR_SHIFT) - first;
        if (n > left)
            n = left;
        /* The backend only reads the page of a write: grant it read-only (non-persistent blkfront). */
        int ref = grant_access(addr >> XF_PAGE_SHIFT, op == BLKIF_OP_WRITE);
        segs[i].gref = (grant_ref_t)ref;
        segs[i].first_sect = (uint8_t)first;
        segs[i].last_sect = (uint8_t)(first + n - 1);
        grefs[i] = (grant_ref_t)ref;
        addr = (addr & ~(XF_PAGE_SIZE - 1)) + XF_PAGE_SIZE;
        left -= n;
    }
    return (int32_t)nseg;
}

/*
 * Queue one request without publishing it. `op` is BLKIF_OP_READ/WRITE (data at `buf_gpa`, 512-byte
 * aligned, `nr_sectors` sectors, at most 11 pages), BLKIF_OP_FLUSH_DISKCACHE or BLKIF_OP_WRITE_BARRIER
 * (no data), or BLKIF_OP_DISCARD (`nr_sectors` from `sector`, `buf_gpa` ignored). Returns the ring slot
 * used as the id's low half, or an error.
 */
XF_EXPORT(xf_queue)
int32_t xf_queue(uint32_t op, uint32_t sector_lo, uint32_t sector_hi, uint32_t buf_gpa, uint32_t nr_sectors,
                 uint32_t tag) {
    if (broken)
        return XF_EIO;
    if (RING_FULL(&ring) || shadow_free_n == 0)
        return XF_EAGAIN;
    uint32_t slot = shadow_free[shadow_free_n - 1];
    struct xf_shadow *s = &shadow[slot];
    uint64_t sector = ((uint64_t)sector_hi << 32) | sector_lo;

    /* Built in a zeroed local copy and then copied over the whole slot, as Linux blkfront does. */
    blkif_request_t req;
    zero(&req, sizeof(req));
    req.operation = (uint8_t)op;
    req.handle = 0;
    req.id = ((uint64_t)(s->gen + 1) << 32) | slot;
    req.sector_number = sector;
    s->nr_grefs = 0;

    if (op == BLKIF_OP_READ || op == BLKIF_OP_WRITE) {
        int32_t nseg = fill_segments(op, buf_gpa, nr_sectors, BLKIF_MAX_SEGMENTS_PER_REQUEST, req.seg, s->gref);
        if (nseg < 0)
            return nseg;
        req.nr_segments = (uint8_t)nseg;
        s->nr_grefs = (uint16_t)nseg;
    } else if (op == BLKIF_OP_DISCARD) {
        blkif_request_discard_t *d = (blkif_request_discard_t *)&req;
        d->flag = 0;
        d->nr_sectors = nr_sectors;
    } else if (op != BLKIF_OP_FLUSH_DISKCACHE && op != BLKIF_OP_WRITE_BARRIER) {
        /* Anything else is sent as it is: a way to see how the backend answers an unknown operation. */
    }

    shadow_free_n--;
    s->in_use = 1;
    s->gen++;
    s->tag = tag;
    s->op = (uint8_t)op;
    *RING_GET_REQUEST(&ring, ring.req_prod_pvt) = req;
    ring.req_prod_pvt++;
    outstanding++;
    return (int32_t)slot;
}

/*
 * Queue one BLKIF_OP_INDIRECT request (feature-max-indirect-segments): `op` READ or WRITE, data at `buf_gpa`
 * (512-byte aligned) over up to `max_segs` pages, listed in this slot's indirect page, which is granted
 * read-only. The response carries `op` (the indirect_op), as Linux blkback answers and blkfront requires.
 */
XF_EXPORT(xf_queue_indirect)
int32_t xf_queue_indirect(uint32_t op, uint32_t sector_lo, uint32_t sector_hi, uint32_t buf_gpa,
                          uint32_t nr_sectors, uint32_t max_segs, uint32_t tag) {
    if (broken)
        return XF_EIO;
    if (!indirect_area || (op != BLKIF_OP_READ && op != BLKIF_OP_WRITE))
        return XF_EINVAL;
    if (RING_FULL(&ring) || shadow_free_n == 0)
        return XF_EAGAIN;
    if (max_segs > XF_MAX_INDIRECT_SEGS)
        max_segs = XF_MAX_INDIRECT_SEGS;
    uint32_t slot = shadow_free[shadow_free_n - 1];
    struct xf_shadow *s = &shadow[slot];
    uint32_t page_gpa = indirect_area + slot * XF_PAGE_SIZE;
    struct blkif_request_segment *segs = (struct blkif_request_segment *)(uintptr_t)page_gpa;
    zero(segs, XF_PAGE_SIZE);
    int32_t nseg = fill_segments(op, buf_gpa, nr_sectors, max_segs, segs, s->gref);
    if (nseg < 0)
        return nseg;
    int ind_ref = grant_access(page_gpa >> XF_PAGE_SHIFT, 1);
    s->gref[nseg] = (grant_ref_t)ind_ref;
    s->nr_grefs = (uint16_t)(nseg + 1);

    blkif_request_t req;
    zero(&req, sizeof(req));
    blkif_request_indirect_t *ind = (blkif_request_indirect_t *)&req;
    ind->operation = BLKIF_OP_INDIRECT;
    ind->indirect_op = (uint8_t)op;
    ind->nr_segments = (uint16_t)nseg;
    ind->id = ((uint64_t)(s->gen + 1) << 32) | slot;
    ind->sector_number = ((uint64_t)sector_hi << 32) | sector_lo;
    ind->handle = 0;
    ind->indirect_grefs[0] = (grant_ref_t)ind_ref;

    shadow_free_n--;
    s->in_use = 1;
    s->gen++;
    s->tag = tag;
    s->op = (uint8_t)op;
    *RING_GET_REQUEST(&ring, ring.req_prod_pvt) = req;
    ring.req_prod_pvt++;
    outstanding++;
    return (int32_t)slot;
}

/* Publish queued requests; notify the backend only if it asked (req_event). Returns 1 if notified. */
XF_EXPORT(xf_push)
int32_t xf_push(void) {
    int notify;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&ring, notify);
    stat_pushes++;
    if (notify) {
        stat_notifies++;
        xen_evtchn_send(evtchn);
    }
    return notify;
}

/*
 * The interrupt handler (Linux blkif_interrupt): consume responses up to rsp_prod, checking each against the
 * request it answers, revoke that request's grants, and report it at `out_gpa` (struct xf_completion, up to
 * `max`). When no request is outstanding it re-arms rsp_event; otherwise RING_FINAL_CHECK_FOR_RESPONSES closes
 * the race with a response published meanwhile. Returns the number of completions, or an error.
 */
XF_EXPORT(xf_poll)
int32_t xf_poll(uint32_t out_gpa, uint32_t max) {
    struct xf_completion *out = (struct xf_completion *)(uintptr_t)out_gpa;
    uint32_t n = 0;
    if (broken)
        return XF_EIO;
    for (;;) {
        RING_IDX rp = ring.sring->rsp_prod;
        rmb(); /* see the responses up to rp */
        if (RING_RESPONSE_PROD_OVERFLOW(&ring, rp)) {
            broken = 1;
            return XF_EIO;
        }
        RING_IDX i;
        for (i = ring.rsp_cons; i != rp && n < max; i++) {
            blkif_response_t bret;
            RING_COPY_RESPONSE(&ring, i, &bret);
            uint32_t slot = (uint32_t)bret.id;
            uint32_t gen = (uint32_t)(bret.id >> 32);
            if (slot >= RING_SIZE(&ring) || !shadow[slot].in_use || shadow[slot].gen != gen ||
                bret.operation != shadow[slot].op) {
                broken = 1;
                return XF_EIO;
            }
            struct xf_shadow *s = &shadow[slot];
            for (uint32_t k = 0; k < s->nr_grefs; k++) {
                if (end_access(s->gref[k]) < 0) {
                    broken = 1;
                    return XF_EBUSY;
                }
            }
            out[n].tag = s->tag;
            out[n].id_lo = slot;
            out[n].status = bret.status;
            out[n].op = bret.operation;
            n++;
            s->in_use = 0;
            shadow_free[shadow_free_n++] = slot;
            outstanding--;
            stat_responses++;
        }
        ring.rsp_cons = i;
        if (i != rp)
            return (int32_t)n; /* out of room: the caller polls again */
        if (outstanding) {
            int more;
            RING_FINAL_CHECK_FOR_RESPONSES(&ring, more);
            if (!more)
                break;
            stat_final_checks_more++;
        } else {
            ring.sring->rsp_event = i + 1;
            break;
        }
    }
    return (int32_t)n;
}

XF_EXPORT(xf_outstanding)
uint32_t xf_outstanding(void) { return outstanding; }

XF_EXPORT(xf_free_requests)
uint32_t xf_free_requests(void) { return RING_FREE_REQUESTS(&ring); }

XF_EXPORT(xf_stat)
uint32_t xf_stat(uint32_t which) {
    switch (which) {
    case 0: return stat_pushes;
    case 1: return stat_notifies;
    case 2: return stat_responses;
    case 3: return stat_final_checks_more;
    case 4: return gref_free_n;
    case 5: return (uint32_t)broken;
    case 6: return ring.req_prod_pvt;
    case 7: return ring.rsp_cons;
    default: return 0;
    }
}

/*
 * The layout the compiler gave the header's structs, for checking a TypeScript reimplementation against the
 * real thing: writes uint32 values at `out_gpa` in the order listed and returns how many.
 */
XF_EXPORT(xf_layout)
uint32_t xf_layout(uint32_t out_gpa) {
    uint32_t *o = (uint32_t *)(uintptr_t)out_gpa;
    uint32_t k = 0;
    o[k++] = sizeof(blkif_request_t);
    o[k++] = offsetof(blkif_request_t, operation);
    o[k++] = offsetof(blkif_request_t, nr_segments);
    o[k++] = offsetof(blkif_request_t, handle);
    o[k++] = offsetof(blkif_request_t, id);
    o[k++] = offsetof(blkif_request_t, sector_number);
    o[k++] = offsetof(blkif_request_t, seg);
    o[k++] = sizeof(struct blkif_request_segment);
    o[k++] = offsetof(struct blkif_request_segment, first_sect);
    o[k++] = offsetof(struct blkif_request_segment, last_sect);
    o[k++] = sizeof(blkif_request_discard_t);
    o[k++] = offsetof(blkif_request_discard_t, flag);
    o[k++] = offsetof(blkif_request_discard_t, nr_sectors);
    o[k++] = sizeof(blkif_request_indirect_t);
    o[k++] = offsetof(blkif_request_indirect_t, indirect_op);
    o[k++] = offsetof(blkif_request_indirect_t, nr_segments);
    o[k++] = offsetof(blkif_request_indirect_t, id);
    o[k++] = offsetof(blkif_request_indirect_t, sector_number);
    o[k++] = offsetof(blkif_request_indirect_t, handle);
    o[k++] = offsetof(blkif_request_indirect_t, indirect_grefs);
    o[k++] = sizeof(blkif_response_t);
    o[k++] = offsetof(blkif_response_t, id);
    o[k++] = offsetof(blkif_response_t, operation);
    o[k++] = offsetof(blkif_response_t, status);
    o[k++] = sizeof(union blkif_sring_entry);
    o[k++] = offsetof(struct blkif_sring, ring);
    o[k++] = offsetof(struct blkif_sring, req_prod);
    o[k++] = offsetof(struct blkif_sring, req_event);
    o[k++] = offsetof(struct blkif_sring, rsp_prod);
    o[k++] = offsetof(struct blkif_sring, rsp_event);
    o[k++] = sizeof(grant_entry_v1_t);
    o[k++] = __CONST_RING_SIZE(blkif, XF_PAGE_SIZE * 1);
    o[k++] = __CONST_RING_SIZE(blkif, XF_PAGE_SIZE * 2);
    o[k++] = __CONST_RING_SIZE(blkif, XF_PAGE_SIZE * 4);
    o[k++] = __CONST_RING_SIZE(blkif, XF_PAGE_SIZE * 8);
    o[k++] = __CONST_RING_SIZE(blkif, XF_PAGE_SIZE * 16);
    o[k++] = BLKIF_MAX_SEGMENTS_PER_REQUEST;
    o[k++] = BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;
    o[k++] = (uint32_t)BLKIF_RSP_ERROR;
    o[k++] = (uint32_t)BLKIF_RSP_EOPNOTSUPP;
    o[k++] = BLKIF_OP_DISCARD;
    o[k++] = BLKIF_OP_INDIRECT;
    o[k++] = XEN_IO_PROTO_ABI_NATIVE[4]; /* '6' for "x86_64-abi", '3' for "x86_32-abi" */
    return k;
}
