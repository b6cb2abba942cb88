"""judicator-remediator: an Alertmanager webhook receiver that throttles the offending Xen guest."""
