"""The tracer's benchmarks: one command runs them all (as root, after scripts/install.sh).

    sudo .venv/bin/python -m bench [--pods N] [--quick] [--output FILE]

Tracer-on is measured against tracer-off interleaved in one run (the
machine is noisy), as ratios of medians.  The tracer runs as its own
process (`tracer record` or `tracer daemon`); its CPU comes from
/proc/<pid>/stat and its RSS from /proc/<pid>/status.  See
docs/performance.md for the figures and what bounds them.
"""
