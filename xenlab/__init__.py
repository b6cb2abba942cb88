"""The Xen lab: Debian's real Xen 4.17 hypervisor, a PV Dom0 and PV guests under QEMU.

Nothing here is product code. The lab boots the real hypervisor in software emulation so that
the product (exporter, remediator, policies) and the simulator's assumptions meet real Xen:
`make lab-deps` fetches and builds, `make lab-up`/`lab-down` boot and stop it, `make lab-demo`
runs the published experiment, `make lab-fixtures` captures the real formats. docs/lab.md.
"""
