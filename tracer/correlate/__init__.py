"""Correlation: the process table keyed by (pid, start time), the role each
process plays in the runtime (shim, runc, runc init, CNI, container), and the
pods those processes belong to."""
