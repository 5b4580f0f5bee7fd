"""The BPF C sources, shipped with the tracer as package data (``tracer.bpf``).

bcc compiles them on the node at start-up, with struct offsets from BTF
passed as ``-D`` flags; tracer.kernel.sources finds this directory.
"""
