#!/bin/sh
# l2-start NAME ARGV...: moves itself into the guest's own cgroup
# (/sys/fs/cgroup/machine.slice/kvmlab-NAME.scope), records its pid, then execs ARGV (QEMU):
# QEMU and every thread it makes are in the scope from their first instruction, as under
# libvirt/systemd-machined.
set -e
name=$1; shift
scope=/sys/fs/cgroup/machine.slice/kvmlab-$name.scope
mkdir -p "$scope"
echo $$ > "$scope/cgroup.procs"
echo $$ > "/run/kvmlab/$name.pid"
exec "$@"
