"""The KVM host as Judicator sees it: QEMU processes in /proc, KVM's debugfs statistics, QMP."""
