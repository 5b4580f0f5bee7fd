#!/usr/bin/env bash
# Runs the whole test suite: pure tests from recorded events, real-kernel
# tests, and end-to-end tests with real containerd/runc pods (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m pytest -ra "$@"
