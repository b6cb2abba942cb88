/*
 * A stand-in for Xen 4.17's libxenstore.so.4, just large enough for xentools.xenstore to read
 * domain names as xl does (libxl_domid_to_name: /local/domain/<domid>/name).
 *
 * Exported, with the 4.17 ABI (tools/include/xenstore.h, tools/libs/store/libxenstore.map,
 * version node VERS_4.0): xs_open, xs_close, xs_read. xs_read returns a malloc'd, NUL
 * terminated copy the caller frees with free(), and sets *len to its length without the NUL;
 * a path that does not exist fails with ENOENT. The names come from the simulator's state file
 * (simstate.c), the one the fake xl and the stub libxenctrl read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simstate.h"

#define EXPORT __attribute__((visibility("default")))

typedef uint32_t xs_transaction_t;

struct xs_handle {
    struct sim_cache state;
};

EXPORT struct xs_handle *xs_open(unsigned long flags)
{
    struct xs_handle *h;

    (void)flags;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    /* as xs_open fails when xenstored's socket is absent: no simulated host, no handle */
    if (sim_state(&h->state) == NULL) {
        int saved = errno;

        free(h);
        errno = saved;
        return NULL;
    }
    return h;
}

EXPORT void xs_close(struct xs_handle *h)
{
    if (h == NULL)
        return;
    sim_cache_free(&h->state);
    free(h);
}

EXPORT void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len)
{
    const struct sim_host *host;
    const struct sim_domain *d;
    unsigned int domid;
    int end = 0;
    char *copy;

    (void)t;
    host = sim_state(&h->state);
    if (host == NULL)
        return NULL;
    if (sscanf(path, "/local/domain/%u/name%n", &domid, &end) != 1 || path[end] != '\0' ||
        (d = sim_domain(host, domid)) == NULL) {
        errno = ENOENT;
        return NULL;
    }
    copy = strdup(d->name);
    if (copy == NULL)
        return NULL;
    if (len != NULL)
        *len = (unsigned int)strlen(copy);
    return copy;
}
