#!/usr/bin/env bash
# Builds the daemon's image from deploy/Dockerfile without a container engine
# (debootstrap, chroot, pip; as root) and prints where the OCI archive is:
#   sudo scripts/build-image.sh [--output tracer.oci.tar] [--import-to /run/containerd/containerd.sock]
# Cached under $TRACER_IMAGE_CACHE (/var/cache/tracer/images); see docs/deployment.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m tracer_testbed.daemon_image "$@"
