"""judicator-exporter: Xen hypervisor counters and per-domain stats as Prometheus metrics."""
