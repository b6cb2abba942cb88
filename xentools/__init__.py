"""The one place that talks to the Xen toolstack: xl, xenperf, libxenctrl and Dom0's sysfs."""
