"""Enrichment: what the kernel events do not carry, read from the system when
they arrive (a runc bundle's config.json, a failed runc's log, a network
namespace, a running container's cgroup), and stored as records so that a
replay sees the same."""
