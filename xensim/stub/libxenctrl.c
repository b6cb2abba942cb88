/*
 * A stand-in for Xen 4.17's libxenctrl.so.4.17, just large enough for Debian's real xenperf
 * binary (and a ctypes binding) to read the simulated hypervisor's performance counters, and
 * for the exporter to read domains and vCPUs as xl does (xentools.libxenctrl).
 *
 * Exported, with the exact 4.17 x86_64 ABI (tools/include/xenctrl.h, tools/libs/ctrl/):
 *   xc_interface_open, xc_interface_close,
 *   xc__hypercall_buffer_alloc, xc__hypercall_buffer_free,
 *   xc_perfc_query_number, xc_perfc_query, xc_perfc_reset,
 *   xc_physinfo, xc_get_max_cpus, xc_get_cpumap_size,
 *   xc_domain_getinfolist, xc_vcpu_getinfo, xc_vcpu_getaffinity.
 *
 * Domains, vCPUs and the host's CPUs come from the simulator's toolstack state
 * ($XENSIM_STATE_DIR/state.json, xensim/state.py; read by simstate.c), the file the fake xl
 * reads too, so the library and xl describe the same host.
 *
 * The "hypervisor" is the file $XENSIM_STATE_DIR/perfc (default /run/judicator-sim/default),
 * laid out as docs/design.md says. Every sysctl re-reads it under flock(LOCK_SH) (LOCK_EX for
 * the reset), so a caller always sees one consistent snapshot while the simulator writes.
 *
 * Overflow hazard, kept on purpose: like XEN_SYSCTL_perfc_op, xc_perfc_query takes no buffer
 * sizes and writes exactly as many descriptors and values as the hypervisor has *now*. If CPUs
 * came online since xc_perfc_query_number, that is more than the caller allocated. Callers
 * must allocate headroom (e.g. one value per possible CPU for every per-CPU counter) and
 * re-check xc_perfc_query_number afterwards, as on a real host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "simstate.h"

#define EXPORT __attribute__((visibility("default")))

#define DEFAULT_STATE_DIR "/run/judicator-sim/default"
#define STATE_MAGIC "XSIMPRF1"
#define FLAG_STATUS 1u
#define MAX_DESCRIPTORS 65536u
#define STUB_PAGE_SIZE 4096u

/* xentoollog_logger is opaque here: a caller-supplied logger is never written to. */
typedef struct xentoollog_logger xentoollog_logger;

typedef struct xc_interface_core {
    char state_path[PATH_MAX];
    struct sim_cache state;
} xc_interface;

/* tools/include/xenctrl.h; DECLARE_HYPERCALL_BUFFER sets {NULL, NULL, 0, (void *)-1, 0}. */
typedef struct xc_hypercall_buffer {
    void *hbuf;
    struct xc_hypercall_buffer *param_shadow;
    int dir;
    void *ubuf;
    size_t sz;
} xc_hypercall_buffer_t;

/* xen/include/public/sysctl.h */
typedef struct xen_sysctl_perfc_desc {
    char name[80];
    uint32_t nr_vals;
} xc_perfc_desc_t;
typedef uint32_t xc_perfc_val_t;

struct state_header {
    char magic[8];
    uint32_t nr_desc;
    uint32_t nr_vals;
    int32_t open_errno;
    int32_t perfc_errno;
    uint32_t generation;
    uint32_t reserved;
};

_Static_assert(sizeof(xc_hypercall_buffer_t) == 40, "xc_hypercall_buffer ABI");
_Static_assert(sizeof(xc_perfc_desc_t) == 84, "xen_sysctl_perfc_desc ABI");
_Static_assert(sizeof(struct state_header) == 32, "state file header");

/* libxencall keeps the page count in front of every hypercall buffer (tools/libs/call/buffer.c) */
struct allocation_header {
    int nr_pages;
    int pad[3];
};

/* One read of the state file: the whole file, validated, with pointers into it. */
struct snapshot {
    unsigned char *data;
    size_t size;
    struct state_header header;
    const xc_perfc_desc_t *descs;
    const uint32_t *flags;
    uint32_t *vals;
};

enum perfc_cmd { PERFCOP_RESET = 1, PERFCOP_QUERY = 2 };

static int state_path(char *buf, size_t len)
{
    const char *dir = getenv("XENSIM_STATE_DIR");
    int n;

    if (dir == NULL || dir[0] == '\0')
        dir = DEFAULT_STATE_DIR;
    n = snprintf(buf, len, "%s/perfc", dir);
    if (n < 0 || (size_t)n >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* A corrupt file is an I/O error: the simulated hypervisor cannot answer sensibly. */
static int validate(struct snapshot *s)
{
    size_t table_end, expected;
    uint64_t sum = 0;
    uint32_t i;

    if (s->size < sizeof(s->header))
        return -1;
    memcpy(&s->header, s->data, sizeof(s->header));
    if (memcmp(s->header.magic, STATE_MAGIC, sizeof(s->header.magic)) != 0)
        return -1;
    if (s->header.nr_desc > MAX_DESCRIPTORS)
        return -1;
    table_end = sizeof(s->header) + (size_t)s->header.nr_desc * (sizeof(xc_perfc_desc_t) + 4);
    expected = table_end + (size_t)s->header.nr_vals * sizeof(uint32_t);
    if (s->size != expected)
        return -1;
    s->descs = (const xc_perfc_desc_t *)(s->data + sizeof(s->header));
    s->flags = (const uint32_t *)(s->data + sizeof(s->header) +
                                  (size_t)s->header.nr_desc * sizeof(xc_perfc_desc_t));
    s->vals = (uint32_t *)(s->data + table_end);
    for (i = 0; i < s->header.nr_desc; i++) {
        if (memchr(s->descs[i].name, '\0', sizeof(s->descs[i].name)) == NULL)
            return -1;
        sum += s->descs[i].nr_vals;
    }
    return sum == s->header.nr_vals ? 0 : -1;
}

/* Reads and validates the whole file; the caller holds the lock. */
static int read_snapshot(int fd, struct snapshot *s)
{
    struct stat st;
    size_t done = 0;

    memset(s, 0, sizeof(*s));
    if (fstat(fd, &st) != 0)
        return -1;
    s->size = (size_t)st.st_size;
    /* malloc aligns to 16 bytes, so the uint32 arrays inside are aligned too */
    s->data = malloc(s->size ? s->size : 1);
    if (s->data == NULL)
        return -1;
    while (done < s->size) {
        ssize_t n = pread(fd, s->data + done, s->size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(s->data);
            s->data = NULL;
            errno = EIO;
            return -1;
        }
        done += (size_t)n;
    }
    if (validate(s) != 0) {
        free(s->data);
        s->data = NULL;
        errno = EIO;
        return -1;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t len, off_t offset)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        offset += n;
    }
    return 0;
}

/* XEN_SYSCTL_PERFCOP_reset: zero every non-status counter, as perfc_reset() does. */
static int reset_values(int fd, struct snapshot *s)
{
    uint32_t i, j;
    uint32_t *val = s->vals;
    uint32_t generation = s->header.generation + 1;

    for (i = 0; i < s->header.nr_desc; i++) {
        if (!(s->flags[i] & FLAG_STATUS))
            for (j = 0; j < s->descs[i].nr_vals; j++)
                val[j] = 0;
        val += s->descs[i].nr_vals;
    }
    if (write_all(fd, s->vals, (size_t)s->header.nr_vals * sizeof(uint32_t),
                  (off_t)((unsigned char *)s->vals - s->data)) != 0)
        return -1;
    return write_all(fd, &generation, sizeof(generation),
                     (off_t)offsetof(struct state_header, generation));
}

/*
 * The XEN_SYSCTL_perfc_op hypercall. Like the hypervisor's perfc_control(), it reports the
 * counts, copies nothing when the descriptor buffer is NULL, and otherwise writes all
 * descriptors and all values without knowing how large the buffers are.
 */
static int perfc_op(xc_interface *xch, enum perfc_cmd cmd, xc_hypercall_buffer_t *desc,
                    xc_hypercall_buffer_t *val, uint32_t *nr_desc, uint32_t *nr_vals)
{
    struct snapshot s;
    int fd, rc = -1, saved_errno;

    if (xch == NULL) {
        errno = EBADF;
        return -1;
    }
    fd = open(xch->state_path, (cmd == PERFCOP_RESET ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (flock(fd, cmd == PERFCOP_RESET ? LOCK_EX : LOCK_SH) != 0) {
        if (errno != EINTR)
            goto out_close;
    }
    if (read_snapshot(fd, &s) != 0)
        goto out_close;
    if (s.header.perfc_errno != 0) {
        errno = s.header.perfc_errno;
        goto out_free;
    }
    *nr_desc = s.header.nr_desc;
    *nr_vals = s.header.nr_vals;
    if (cmd == PERFCOP_RESET) {
        if (reset_values(fd, &s) != 0)
            goto out_free;
    } else if (desc != NULL && desc->hbuf != NULL) {
        if (val == NULL || val->hbuf == NULL) {
            errno = EFAULT;
            goto out_free;
        }
        memcpy(desc->hbuf, s.descs, (size_t)s.header.nr_desc * sizeof(xc_perfc_desc_t));
        memcpy(val->hbuf, s.vals, (size_t)s.header.nr_vals * sizeof(xc_perfc_val_t));
    }
    rc = 0;
out_free:
    free(s.data);
out_close:
    saved_errno = errno;
    close(fd); /* also drops the lock */
    errno = saved_errno;
    return rc;
}

EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger,
                                       xentoollog_logger *dombuild_logger,
                                       unsigned open_flags)
{
    xc_interface *xch;
    struct snapshot s;
    int fd, saved_errno;

    (void)dombuild_logger;
    (void)open_flags;
    xch = calloc(1, sizeof(*xch));
    if (xch == NULL)
        return NULL;
    if (state_path(xch->state_path, sizeof(xch->state_path)) != 0)
        goto fail;
    fd = open(xch->state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto fail;
    while (flock(fd, LOCK_SH) != 0) {
        if (errno != EINTR) {
            saved_errno = errno;
            close(fd);
            errno = saved_errno;
            goto fail;
        }
    }
    if (read_snapshot(fd, &s) != 0) {
        saved_errno = errno;
        close(fd);
        errno = saved_errno;
        goto fail;
    }
    free(s.data);
    close(fd);
    if (s.header.open_errno != 0) {
        errno = s.header.open_errno;
        goto fail;
    }
    return xch;

fail:
    saved_errno = errno;
    /* What libxencall's default logger prints when /dev/xen/privcmd cannot be opened. */
    if (logger == NULL)
        fprintf(stderr,
                "xencall: error: Could not obtain handle on privileged command interface: %s\n",
                strerror(saved_errno));
    free(xch);
    errno = saved_errno;
    return NULL;
}

EXPORT int xc_interface_close(xc_interface *xch)
{
    if (xch != NULL)
        sim_cache_free(&xch->state);
    free(xch);
    return 0;
}

EXPORT void *xc__hypercall_buffer_alloc(xc_interface *xch, xc_hypercall_buffer_t *b, size_t size)
{
    struct allocation_header *hdr;
    size_t total;
    void *p;

    (void)xch;
    if (size > SIZE_MAX - sizeof(*hdr) - STUB_PAGE_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    /* Whole zeroed pages, like xencall_alloc_buffer's mmap of the hypercall device. */
    total = (size + sizeof(*hdr) + STUB_PAGE_SIZE - 1) / STUB_PAGE_SIZE * STUB_PAGE_SIZE;
    p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    hdr = p;
    hdr->nr_pages = (int)(total / STUB_PAGE_SIZE);
    b->hbuf = hdr + 1;
    return b->hbuf;
}

EXPORT void xc__hypercall_buffer_free(xc_interface *xch, xc_hypercall_buffer_t *b)
{
    struct allocation_header *hdr;

    (void)xch;
    if (b->hbuf == NULL)
        return;
    hdr = (struct allocation_header *)b->hbuf - 1;
    munmap(hdr, (size_t)hdr->nr_pages * STUB_PAGE_SIZE);
}

EXPORT int xc_perfc_reset(xc_interface *xch)
{
    uint32_t nr_desc, nr_vals;

    return perfc_op(xch, PERFCOP_RESET, NULL, NULL, &nr_desc, &nr_vals);
}

/*
 * Stores the counts whether or not the call succeeds, as xc_misc.c does (there they are
 * whatever the hypervisor left in the sysctl struct; here 0): check the return code.
 */
EXPORT int xc_perfc_query_number(xc_interface *xch, int *nbr_desc, int *nbr_val)
{
    uint32_t nr_desc = 0, nr_vals = 0;
    int rc = perfc_op(xch, PERFCOP_QUERY, NULL, NULL, &nr_desc, &nr_vals);

    if (nbr_desc)
        *nbr_desc = (int)nr_desc;
    if (nbr_val)
        *nbr_val = (int)nr_vals;
    return rc;
}

EXPORT int xc_perfc_query(xc_interface *xch, xc_hypercall_buffer_t *desc,
                          xc_hypercall_buffer_t *val)
{
    uint32_t nr_desc, nr_vals;

    return perfc_op(xch, PERFCOP_QUERY, desc, val, &nr_desc, &nr_vals);
}

/* --- domains, vCPUs and the host's CPUs ------------------------------------------------------ */

/* xen/include/public/sysctl.h, struct xen_sysctl_physinfo (xc_physinfo_t) */
typedef struct xen_sysctl_physinfo {
    uint32_t threads_per_core;
    uint32_t cores_per_socket;
    uint32_t nr_cpus;
    uint32_t max_cpu_id;
    uint32_t nr_nodes;
    uint32_t max_node_id;
    uint32_t cpu_khz;
    uint32_t capabilities;
    uint32_t arch_capabilities;
    uint32_t pad;
    uint64_t total_pages;
    uint64_t free_pages;
    uint64_t scrub_pages;
    uint64_t outstanding_pages;
    uint64_t max_mfn;
    uint32_t hw_cap[8];
} xc_physinfo_t;

/* xen/include/public/domctl.h, struct xen_domctl_getdomaininfo (xc_domaininfo_t), interface
 * version 0x15; arch_config is x86's struct xen_arch_domainconfig (arch-x86/xen.h). */
typedef struct xen_domctl_getdomaininfo {
    uint16_t domain;
    uint16_t pad1;
    uint32_t flags;
    uint64_t tot_pages;
    uint64_t max_pages;
    uint64_t outstanding_pages;
    uint64_t shr_pages;
    uint64_t paged_pages;
    uint64_t shared_info_frame;
    uint64_t cpu_time;
    uint32_t nr_online_vcpus;
    uint32_t max_vcpu_id;
    uint32_t ssidref;
    uint8_t handle[16];
    uint32_t cpupool;
    uint8_t gpaddr_bits;
    uint8_t pad2[7];
    struct {
        uint32_t emulation_flags;
        uint32_t misc_flags;
    } arch_config;
} xc_domaininfo_t;

/* xen/include/public/domctl.h, struct xen_domctl_getvcpuinfo (xc_vcpuinfo_t) */
typedef struct xen_domctl_getvcpuinfo {
    uint32_t vcpu;
    uint8_t online;
    uint8_t blocked;
    uint8_t running;
    uint64_t cpu_time;
    uint32_t cpu;
} xc_vcpuinfo_t;

/* The sizes and offsets of Xen 4.17's headers (x86_64), so a layout slip fails the build. */
_Static_assert(sizeof(xc_physinfo_t) == 112, "xen_sysctl_physinfo size");
_Static_assert(offsetof(xc_physinfo_t, nr_cpus) == 8, "physinfo.nr_cpus");
_Static_assert(offsetof(xc_physinfo_t, max_cpu_id) == 12, "physinfo.max_cpu_id");
_Static_assert(offsetof(xc_physinfo_t, cpu_khz) == 24, "physinfo.cpu_khz");
_Static_assert(offsetof(xc_physinfo_t, total_pages) == 40, "physinfo.total_pages");
_Static_assert(offsetof(xc_physinfo_t, hw_cap) == 80, "physinfo.hw_cap");
_Static_assert(sizeof(xc_domaininfo_t) == 112, "xen_domctl_getdomaininfo size");
_Static_assert(offsetof(xc_domaininfo_t, flags) == 4, "getdomaininfo.flags");
_Static_assert(offsetof(xc_domaininfo_t, tot_pages) == 8, "getdomaininfo.tot_pages");
_Static_assert(offsetof(xc_domaininfo_t, max_pages) == 16, "getdomaininfo.max_pages");
_Static_assert(offsetof(xc_domaininfo_t, cpu_time) == 56, "getdomaininfo.cpu_time");
_Static_assert(offsetof(xc_domaininfo_t, nr_online_vcpus) == 64, "getdomaininfo.nr_online_vcpus");
_Static_assert(offsetof(xc_domaininfo_t, max_vcpu_id) == 68, "getdomaininfo.max_vcpu_id");
_Static_assert(offsetof(xc_domaininfo_t, ssidref) == 72, "getdomaininfo.ssidref");
_Static_assert(offsetof(xc_domaininfo_t, handle) == 76, "getdomaininfo.handle");
_Static_assert(offsetof(xc_domaininfo_t, cpupool) == 92, "getdomaininfo.cpupool");
_Static_assert(offsetof(xc_domaininfo_t, gpaddr_bits) == 96, "getdomaininfo.gpaddr_bits");
_Static_assert(offsetof(xc_domaininfo_t, arch_config) == 104, "getdomaininfo.arch_config");
_Static_assert(sizeof(xc_vcpuinfo_t) == 24, "xen_domctl_getvcpuinfo size");
_Static_assert(offsetof(xc_vcpuinfo_t, online) == 4, "getvcpuinfo.online");
_Static_assert(offsetof(xc_vcpuinfo_t, running) == 6, "getvcpuinfo.running");
_Static_assert(offsetof(xc_vcpuinfo_t, cpu_time) == 8, "getvcpuinfo.cpu_time");
_Static_assert(offsetof(xc_vcpuinfo_t, cpu) == 16, "getvcpuinfo.cpu");

/* sysctl.h: XEN_SYSCTL_getcpuinfo's per-CPU entry */
typedef struct xen_sysctl_cpuinfo {
    uint64_t idletime; /* uint64_aligned_t, ns */
} xc_cpuinfo_t;

_Static_assert(sizeof(xc_cpuinfo_t) == 8, "xen_sysctl_cpuinfo size");
_Static_assert(offsetof(xc_cpuinfo_t, idletime) == 0, "cpuinfo.idletime");

/* domctl.h XEN_DOMINF_*, XEN_VCPUAFFINITY_* */
#define XEN_DOMINF_dying (1u << 0)
#define XEN_DOMINF_hvm_guest (1u << 1)
#define XEN_DOMINF_shutdown (1u << 2)
#define XEN_DOMINF_paused (1u << 3)
#define XEN_DOMINF_blocked (1u << 4)
#define XEN_DOMINF_running (1u << 5)
#define XEN_DOMINF_shutdownshift 16
#define XEN_VCPUAFFINITY_HARD (1u << 0)
#define XEN_VCPUAFFINITY_SOFT (1u << 1)
#define XEN_INVALID_MAX_VCPU_ID (~0u)
#define PAGE_KIB 4

EXPORT int xc_physinfo(xc_interface *xch, xc_physinfo_t *info)
{
    const struct sim_host *host = sim_state(&xch->state);
    uint64_t used = 0;

    if (host == NULL)
        return -1;
    for (uint32_t i = 0; i < host->nr_domains; i++)
        used += host->domains[i].memory_kib;
    memset(info, 0, sizeof(*info));
    info->threads_per_core = host->threads_per_core;
    info->cores_per_socket = host->cores_per_socket;
    info->nr_cpus = host->online_cpus;
    info->max_cpu_id = host->nr_cpus - 1;
    info->nr_nodes = 1;
    info->cpu_khz = host->cpu_mhz * 1000;
    info->total_pages = host->total_memory_kib / PAGE_KIB;
    info->free_pages = used < host->total_memory_kib ? (host->total_memory_kib - used) / PAGE_KIB : 0;
    info->max_mfn = info->total_pages;
    return 0;
}

/* tools/libs/ctrl/xc_misc.c: XEN_SYSCTL_getcpuinfo fills CPU ids 0 .. min(max_cpus,
 * nr_cpu_ids) - 1 and says how many; the idle time is the idle vCPU's running time. */
EXPORT int xc_getcpuinfo(xc_interface *xch, int max_cpus, xc_cpuinfo_t *info, int *nr_cpus)
{
    const struct sim_host *host = sim_state(&xch->state);
    uint32_t n;

    if (host == NULL)
        return -1;
    if (max_cpus < 0 || (max_cpus > 0 && info == NULL)) {
        errno = EINVAL;
        return -1;
    }
    n = (uint32_t)max_cpus < host->nr_cpus ? (uint32_t)max_cpus : host->nr_cpus;
    for (uint32_t cpu = 0; cpu < n; cpu++)
        info[cpu].idletime = host->idle_ns[cpu];
    if (nr_cpus != NULL)
        *nr_cpus = (int)n;
    return 0;
}

/* tools/libs/ctrl/xc_misc.c: max_cpu_id + 1, and a bitmap of that many bits in bytes */
EXPORT int xc_get_max_cpus(xc_interface *xch)
{
    const struct sim_host *host = sim_state(&xch->state);

    return host == NULL ? -1 : (int)host->nr_cpus;
}

EXPORT int xc_get_cpumap_size(xc_interface *xch)
{
    int max_cpus = xc_get_max_cpus(xch);

    return max_cpus < 0 ? -1 : (max_cpus + 7) / 8;
}

static void fill_domaininfo(const struct sim_domain *d, xc_domaininfo_t *info)
{
    int any_running = 0, all_blocked = 1, online = 0;
    uint32_t max_vcpu_id = XEN_INVALID_MAX_VCPU_ID;

    memset(info, 0, sizeof(*info));
    for (uint32_t i = 0; i < d->nr_vcpus; i++) {
        const struct sim_vcpu *v = &d->vcpus[i];

        if (max_vcpu_id == XEN_INVALID_MAX_VCPU_ID || v->id > max_vcpu_id)
            max_vcpu_id = v->id;
        if (!v->online)
            continue;
        online++;
        any_running |= v->running;
        all_blocked &= v->blocked && !v->running;
    }
    info->domain = (uint16_t)d->domid;
    info->flags = (d->dying ? XEN_DOMINF_dying : 0) | (d->hvm ? XEN_DOMINF_hvm_guest : 0) |
                  (d->pause_count > 0 ? XEN_DOMINF_paused : 0) |
                  (any_running ? XEN_DOMINF_running : 0) |
                  (online > 0 && all_blocked ? XEN_DOMINF_blocked : 0);
    if (d->shutdown_code >= 0)
        info->flags |= XEN_DOMINF_shutdown | (uint32_t)d->shutdown_code << XEN_DOMINF_shutdownshift;
    info->tot_pages = d->memory_kib / PAGE_KIB;
    info->max_pages = d->max_memory_kib / PAGE_KIB;
    info->cpu_time = d->cpu_time_ns;
    info->nr_online_vcpus = (uint32_t)online;
    info->max_vcpu_id = max_vcpu_id;
    info->ssidref = d->ssidref;
    memcpy(info->handle, d->handle, sizeof(info->handle));
    info->cpupool = d->cpupool;
    info->gpaddr_bits = 52;
}

/* Domains with domid >= first_domain, in domid order, at most max_domains; their number. */
EXPORT int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,
                                 unsigned int max_domains, xc_domaininfo_t *info)
{
    const struct sim_host *host = sim_state(&xch->state);
    unsigned int n = 0;
    uint32_t next = first_domain;

    if (host == NULL)
        return -1;
    while (n < max_domains) {
        const struct sim_domain *best = NULL;

        for (uint32_t i = 0; i < host->nr_domains; i++) {
            const struct sim_domain *d = &host->domains[i];

            if (d->domid >= next && (best == NULL || d->domid < best->domid))
                best = d;
        }
        if (best == NULL)
            break;
        fill_domaininfo(best, &info[n++]);
        next = best->domid + 1;
    }
    return (int)n;
}

static const struct sim_vcpu *find_vcpu(xc_interface *xch, uint32_t domid, uint32_t vcpu)
{
    const struct sim_host *host = sim_state(&xch->state);
    const struct sim_domain *d;

    if (host == NULL)
        return NULL;
    d = sim_domain(host, domid);
    if (d == NULL) {
        errno = ESRCH;
        return NULL;
    }
    for (uint32_t i = 0; i < d->nr_vcpus; i++)
        if (d->vcpus[i].id == vcpu)
            return &d->vcpus[i];
    errno = EINVAL; /* XEN_DOMCTL_getvcpuinfo: vcpu >= max_vcpus */
    return NULL;
}

EXPORT int xc_vcpu_getinfo(xc_interface *xch, uint32_t domid, uint32_t vcpu, xc_vcpuinfo_t *info)
{
    const struct sim_vcpu *v = find_vcpu(xch, domid, vcpu);

    if (v == NULL)
        return -1;
    memset(info, 0, sizeof(*info));
    info->vcpu = vcpu;
    info->online = (uint8_t)v->online;
    info->blocked = (uint8_t)(v->online && v->blocked);
    info->running = (uint8_t)(v->online && v->running);
    info->cpu_time = v->time_ns;
    info->cpu = v->cpu;
    return 0;
}

/* Copies xc_get_cpumap_size() bytes of each affinity asked for into the caller's maps. */
EXPORT int xc_vcpu_getaffinity(xc_interface *xch, uint32_t domid, int vcpu,
                               uint8_t *cpumap_hard, uint8_t *cpumap_soft, uint32_t flags)
{
    const struct sim_vcpu *v;
    int size = xc_get_cpumap_size(xch);

    if (size <= 0)
        return -1;
    if (vcpu < 0 || (flags & (XEN_VCPUAFFINITY_HARD | XEN_VCPUAFFINITY_SOFT)) == 0) {
        errno = EINVAL;
        return -1;
    }
    v = find_vcpu(xch, domid, (uint32_t)vcpu);
    if (v == NULL)
        return -1;
    if ((flags & XEN_VCPUAFFINITY_HARD) && cpumap_hard != NULL)
        memcpy(cpumap_hard, v->hard, (size_t)size);
    if ((flags & XEN_VCPUAFFINITY_SOFT) && cpumap_soft != NULL)
        memcpy(cpumap_soft, v->soft, (size_t)size);
    return 0;
}
