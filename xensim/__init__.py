"""A simulated Xen host for tests and the demo: only the hypervisor is simulated.

The stub libxenctrl.so.4.17 under Debian's real xenperf, a faithful fake `xl`, and guests as
network namespaces and cgroups running real workloads.
"""
