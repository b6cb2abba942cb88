/*
 * The simulated host's toolstack state ($XENSIM_STATE_DIR/state.json, written by
 * xensim/state.py), read by the stub libxenctrl and libxenstore so that the fake host and the
 * libraries agree. Only what the stubs answer with is kept.
 */
#ifndef SIMSTATE_H
#define SIMSTATE_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define SIM_MAX_CPUS 4096
#define SIM_NAME_MAX 256

struct sim_vcpu {
    uint32_t id;
    int online, running, blocked;
    uint32_t cpu;
    uint64_t time_ns;
    uint8_t hard[SIM_MAX_CPUS / 8];
    uint8_t soft[SIM_MAX_CPUS / 8];
};

struct sim_domain {
    uint32_t domid;
    char name[SIM_NAME_MAX];
    uint8_t handle[16];          /* the uuid's bytes */
    uint64_t memory_kib, max_memory_kib, cpu_time_ns;
    uint32_t pause_count, ssidref, cpupool;
    int shutdown_code;           /* SHUTDOWN_* of xen/include/public/sched.h, -1 when running */
    int dying, hvm;
    uint32_t nr_vcpus;
    struct sim_vcpu *vcpus;
};

struct sim_host {
    uint32_t nr_cpus;            /* CPU ids 0 .. nr_cpus-1 (max_cpu_id + 1) */
    uint32_t online_cpus;
    uint32_t cpu_mhz, cores_per_socket, threads_per_core;
    uint64_t total_memory_kib;
    uint64_t idle_ns[SIM_MAX_CPUS]; /* by CPU id; 0 for an offline CPU, as Xen reports it */
    uint32_t nr_domains;
    struct sim_domain *domains;
};

/* The last state read, kept while the file is the same one (writers rename a new file in). */
struct sim_cache {
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    off_t size;
    struct sim_host *host;
};

/* The current state (cached), or NULL with errno set (EIO: the file is not a state). */
const struct sim_host *sim_state(struct sim_cache *cache);
void sim_cache_free(struct sim_cache *cache);
const struct sim_domain *sim_domain(const struct sim_host *host, uint32_t domid);

#endif
