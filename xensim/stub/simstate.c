/*
 * Reads xensim/state.py's JSON state file for the stubs: a small JSON parser (objects, arrays,
 * strings with the simple escapes, numbers, true/false/null) and the mapping of its fields to
 * what the hypervisor and xenstore would report. See simstate.h.
 */
#define _GNU_SOURCE
#include "simstate.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_STATE_DIR "/run/judicator-sim/default"
#define MAX_DEPTH 32

/* --- JSON ---------------------------------------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
    enum jtype type;
    char *key;         /* set on members of an object */
    char *str;         /* J_STR, unescaped */
    int64_t integer;   /* J_NUM without fraction or exponent; J_BOOL 0/1 */
    struct jnode *child, *next;
};

struct parser {
    const char *p, *end;
    int depth;
};

static void jfree(struct jnode *n)
{
    while (n != NULL) {
        struct jnode *next = n->next;
        jfree(n->child);
        free(n->key);
        free(n->str);
        free(n);
        n = next;
    }
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static char *parse_string(struct parser *ps)
{
    char *out, *w;
    const char *start;

    if (ps->p >= ps->end || *ps->p != '"')
        return NULL;
    start = ++ps->p;
    while (ps->p < ps->end && *ps->p != '"') {
        if (*ps->p == '\\')
            ps->p++;
        ps->p++;
    }
    if (ps->p >= ps->end)
        return NULL;
    out = w = malloc((size_t)(ps->p - start) + 1);
    if (out == NULL)
        return NULL;
    for (const char *r = start; r < ps->p; r++) {
        if (*r != '\\') {
            *w++ = *r;
            continue;
        }
        switch (*++r) {
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'u': *w++ = '?'; if (ps->p - r > 4) r += 4; break; /* names are ASCII */
        default: *w++ = *r; break; /* \" \\ \/ */
        }
    }
    *w = '\0';
    ps->p++;
    return out;
}

static struct jnode *parse_value(struct parser *ps)
{
    struct jnode *n, **tail;

    skip_ws(ps);
    if (ps->p >= ps->end || ++ps->depth > MAX_DEPTH)
        return NULL;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    if (*ps->p == '{' || *ps->p == '[') {
        int object = *ps->p == '{';
        char close = object ? '}' : ']';

        n->type = object ? J_OBJ : J_ARR;
        ps->p++;
        tail = &n->child;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            goto done;
        }
        for (;;) {
            char *key = NULL;
            struct jnode *member;

            skip_ws(ps);
            if (object) {
                key = parse_string(ps);
                skip_ws(ps);
                if (key == NULL || ps->p >= ps->end || *ps->p != ':') {
                    free(key);
                    goto fail;
                }
                ps->p++;
            }
            member = parse_value(ps);
            if (member == NULL) {
                free(key);
                goto fail;
            }
            member->key = key;
            *tail = member;
            tail = &member->next;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == close) {
                ps->p++;
                goto done;
            }
            goto fail;
        }
    } else if (*ps->p == '"') {
        n->type = J_STR;
        n->str = parse_string(ps);
        if (n->str == NULL)
            goto fail;
    } else if ((size_t)(ps->end - ps->p) >= 4 && memcmp(ps->p, "true", 4) == 0) {
        n->type = J_BOOL;
        n->integer = 1;
        ps->p += 4;
    } else if ((size_t)(ps->end - ps->p) >= 5 && memcmp(ps->p, "false", 5) == 0) {
        n->type = J_BOOL;
        ps->p += 5;
    } else if ((size_t)(ps->end - ps->p) >= 4 && memcmp(ps->p, "null", 4) == 0) {
        n->type = J_NULL;
        ps->p += 4;
    } else if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
        char buf[64];
        size_t len = 0;
        char *stop;

        while (ps->p + len < ps->end && len < sizeof(buf) - 1 &&
               strchr("+-0123456789.eE", ps->p[len]) != NULL)
            len++;
        memcpy(buf, ps->p, len);
        buf[len] = '\0';
        n->type = J_NUM;
        if (strpbrk(buf, ".eE") != NULL)
            n->integer = (int64_t)strtod(buf, &stop);
        else
            n->integer = strtoll(buf, &stop, 10);
        if (stop != buf + len)
            goto fail;
        ps->p += len;
    } else {
        goto fail;
    }
done:
    ps->depth--;
    return n;
fail:
    jfree(n);
    return NULL;
}

static const struct jnode *member(const struct jnode *object, const char *key)
{
    if (object == NULL || object->type != J_OBJ)
        return NULL;
    for (const struct jnode *m = object->child; m != NULL; m = m->next)
        if (strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

static int64_t integer(const struct jnode *object, const char *key, int64_t fallback)
{
    const struct jnode *m = member(object, key);

    return m != NULL && (m->type == J_NUM || m->type == J_BOOL) ? m->integer : fallback;
}

static const char *string(const struct jnode *object, const char *key)
{
    const struct jnode *m = member(object, key);

    return m != NULL && m->type == J_STR ? m->str : NULL;
}

/* --- the state's fields ---------------------------------------------------------------------- */

static void set_bit(uint8_t *map, uint32_t cpu)
{
    map[cpu / 8] |= (uint8_t)(1u << (cpu % 8));
}

/* xl's CPU list as state.py keeps affinities: all, none, N, N-M, comma separated, ^ to remove. */
static int cpulist(const char *text, uint32_t nr_cpus, uint8_t *map)
{
    const char *p = text;

    if (text == NULL)
        return -1;
    if (strcmp(text, "none") == 0)
        return 0;
    while (*p != '\0') {
        int negate = *p == '^';
        unsigned long first, last;
        char *stop;

        if (negate)
            p++;
        if (strncmp(p, "all", 3) == 0 && (p[3] == ',' || p[3] == '\0')) {
            first = 0;
            last = nr_cpus - 1;
            p += 3;
        } else {
            first = last = strtoul(p, &stop, 10);
            if (stop == p)
                return -1;
            p = stop;
            if (*p == '-') {
                last = strtoul(++p, &stop, 10);
                if (stop == p)
                    return -1;
                p = stop;
            }
        }
        if (last < first || last >= nr_cpus)
            return -1;
        for (unsigned long cpu = first; cpu <= last; cpu++) {
            if (negate)
                map[cpu / 8] &= (uint8_t)~(1u << (cpu % 8));
            else
                set_bit(map, (uint32_t)cpu);
        }
        if (*p == ',')
            p++;
        else if (*p != '\0')
            return -1;
    }
    return 0;
}

static int uuid_bytes(const char *text, uint8_t *handle)
{
    int n = 0;

    for (const char *p = text; p != NULL && *p != '\0' && n < 16; p++) {
        unsigned int byte;

        if (*p == '-')
            continue;
        if (sscanf(p, "%2x", &byte) != 1)
            return -1;
        handle[n++] = (uint8_t)byte;
        p++;
    }
    return n == 16 ? 0 : -1;
}

/* SHUTDOWN_* codes of xen/include/public/sched.h, in state.py's SHUTDOWN_REASONS order. */
static const char *const shutdown_reasons[] = {
    "poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset",
};

static void host_free(struct sim_host *host)
{
    if (host == NULL)
        return;
    for (uint32_t i = 0; i < host->nr_domains; i++)
        free(host->domains[i].vcpus);
    free(host->domains);
    free(host);
}

static uint32_t count(const struct jnode *array)
{
    uint32_t n = 0;

    if (array == NULL || array->type != J_ARR)
        return 0;
    for (const struct jnode *e = array->child; e != NULL; e = e->next)
        n++;
    return n;
}

static int load_domain(const struct jnode *d, const struct jnode *pools, uint32_t nr_cpus,
                       struct sim_domain *out)
{
    const char *name = string(d, "name"), *reason = string(d, "shutdown_reason");
    const char *pool = string(d, "pool"), *type = string(d, "domain_type");
    const struct jnode *vcpus = member(d, "vcpus");
    uint32_t index = 0;

    if (name == NULL || strlen(name) >= sizeof(out->name) ||
        uuid_bytes(string(d, "uuid"), out->handle) != 0)
        return -1;
    strcpy(out->name, name);
    out->domid = (uint32_t)integer(d, "domid", -1);
    out->memory_kib = (uint64_t)integer(d, "memory_kib", 0);
    out->max_memory_kib = (uint64_t)integer(d, "max_memory_kib", 0);
    out->cpu_time_ns = (uint64_t)integer(d, "cpu_time_ns", 0);
    out->pause_count = (uint32_t)integer(d, "pause_count", 0);
    out->ssidref = (uint32_t)integer(d, "ssidref", 0);
    out->dying = integer(d, "dying", 0) != 0;
    out->hvm = type != NULL && strcmp(type, "hvm") == 0;
    out->shutdown_code = -1;
    for (size_t i = 0; reason != NULL && i < sizeof(shutdown_reasons) / sizeof(*shutdown_reasons); i++)
        if (strcmp(reason, shutdown_reasons[i]) == 0)
            out->shutdown_code = (int)i;
    for (const struct jnode *p = pools != NULL ? pools->child : NULL; p != NULL; p = p->next, index++)
        if (pool != NULL && string(p, "name") != NULL && strcmp(string(p, "name"), pool) == 0)
            out->cpupool = index;
    out->nr_vcpus = count(vcpus);
    out->vcpus = calloc(out->nr_vcpus ? out->nr_vcpus : 1, sizeof(*out->vcpus));
    if (out->vcpus == NULL)
        return -1;
    index = 0;
    for (const struct jnode *v = vcpus != NULL ? vcpus->child : NULL; v != NULL; v = v->next, index++) {
        struct sim_vcpu *vcpu = &out->vcpus[index];

        vcpu->id = (uint32_t)integer(v, "id", index);
        vcpu->online = integer(v, "online", 1) != 0;
        vcpu->running = integer(v, "running", 0) != 0;
        vcpu->blocked = integer(v, "blocked", 1) != 0;
        vcpu->cpu = (uint32_t)integer(v, "cpu", 0);
        vcpu->time_ns = (uint64_t)integer(v, "time_ns", 0);
        if (cpulist(string(v, "hard"), nr_cpus, vcpu->hard) != 0 ||
            cpulist(string(v, "soft"), nr_cpus, vcpu->soft) != 0)
            return -1;
    }
    return 0;
}

static struct sim_host *load_host(const char *text, size_t size)
{
    struct parser ps = {text, text + size, 0};
    struct jnode *root = parse_value(&ps);
    const struct jnode *domains, *pools, *idle, *online;
    struct sim_host *host = NULL;
    uint32_t i = 0;

    if (root == NULL || root->type != J_OBJ)
        goto fail;
    host = calloc(1, sizeof(*host));
    if (host == NULL)
        goto fail;
    host->nr_cpus = (uint32_t)integer(root, "nr_cpus", 0);
    host->online_cpus = count(member(root, "online_cpus"));
    host->cpu_mhz = (uint32_t)integer(root, "cpu_mhz", 0);
    host->cores_per_socket = (uint32_t)integer(root, "cores_per_socket", 0);
    host->threads_per_core = (uint32_t)integer(root, "threads_per_core", 1);
    host->total_memory_kib = (uint64_t)integer(root, "total_memory_kib", 0);
    if (host->nr_cpus == 0 || host->nr_cpus > SIM_MAX_CPUS)
        goto fail;
    idle = member(root, "cpu_idle_ns"); /* absent in states written before it existed */
    online = member(root, "online_cpus");
    if (idle != NULL && idle->type == J_ARR) {
        uint32_t cpu = 0;

        for (const struct jnode *e = idle->child; e != NULL && cpu < host->nr_cpus; e = e->next)
            host->idle_ns[cpu++] = e->type == J_NUM && e->integer > 0 ? (uint64_t)e->integer : 0;
    }
    /* get_cpu_idle_time (xen/common/sched/core.c) reads 0 for a CPU that is not online */
    for (uint32_t cpu = 0; cpu < host->nr_cpus; cpu++) {
        int is_online = 0;

        for (const struct jnode *e = online != NULL ? online->child : NULL; e != NULL; e = e->next)
            if (e->type == J_NUM && e->integer == (int64_t)cpu)
                is_online = 1;
        if (!is_online)
            host->idle_ns[cpu] = 0;
    }
    domains = member(root, "domains");
    pools = member(root, "pools");
    host->nr_domains = count(domains);
    host->domains = calloc(host->nr_domains ? host->nr_domains : 1, sizeof(*host->domains));
    if (host->domains == NULL)
        goto fail;
    for (const struct jnode *d = domains != NULL ? domains->child : NULL; d != NULL; d = d->next)
        if (load_domain(d, pools, host->nr_cpus, &host->domains[i++]) != 0)
            goto fail;
    jfree(root);
    return host;
fail:
    jfree(root);
    host_free(host);
    errno = EIO;
    return NULL;
}

const struct sim_host *sim_state(struct sim_cache *cache)
{
    const char *dir = getenv("XENSIM_STATE_DIR");
    char path[PATH_MAX], *text;
    struct stat st;
    struct sim_host *host;
    ssize_t got;
    size_t done = 0;
    int fd, saved;

    if (dir == NULL || dir[0] == '\0')
        dir = DEFAULT_STATE_DIR;
    if (snprintf(path, sizeof(path), "%s/state.json", dir) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    /* One stat per call while the file is the one already read (a caller asks per vCPU). */
    if (cache->host != NULL && stat(path, &st) == 0 && cache->dev == st.st_dev &&
        cache->ino == st.st_ino && cache->size == st.st_size &&
        cache->mtime.tv_sec == st.st_mtim.tv_sec && cache->mtime.tv_nsec == st.st_mtim.tv_nsec)
        return cache->host;
    /* Writers replace the file by rename: an open file is one whole state, no lock needed. */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0)
        goto fail;
    text = malloc((size_t)st.st_size + 1);
    if (text == NULL)
        goto fail;
    while (done < (size_t)st.st_size) {
        got = read(fd, text + done, (size_t)st.st_size - done);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            free(text);
            errno = got < 0 ? errno : EIO;
            goto fail;
        }
        done += (size_t)got;
    }
    close(fd);
    host = load_host(text, done);
    free(text);
    if (host == NULL)
        return NULL;
    host_free(cache->host);
    cache->host = host;
    cache->dev = st.st_dev;
    cache->ino = st.st_ino;
    cache->size = st.st_size;
    cache->mtime = st.st_mtim;
    return host;
fail:
    saved = errno;
    close(fd);
    errno = saved;
    return NULL;
}

void sim_cache_free(struct sim_cache *cache)
{
    host_free(cache->host);
    cache->host = NULL;
}

const struct sim_domain *sim_domain(const struct sim_host *host, uint32_t domid)
{
    for (uint32_t i = 0; i < host->nr_domains; i++)
        if (host->domains[i].domid == domid)
            return &host->domains[i];
    return NULL;
}
