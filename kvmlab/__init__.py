"""The KVM lab: real KVM guests (L2) in a KVM host (L1) that runs under QEMU's software
emulation on the build machine (docs/kvm-lab.md). Reuses the Xen lab's image and VM helpers."""
