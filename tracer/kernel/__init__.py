"""The kernel side: the BPF programs loaded and drained (capture), the BTF
offsets they read structs at, the checks before tracing (preflight) and for
`tracer doctor` (features), and what is read from the running system: /proc,
cgroups, unix sockets (sock_diag over netlink), kernel headers for bcc."""
