#!/usr/bin/env bash
# Installs everything tracer needs on a Debian 12 machine (run as root):
# the kernel side (bcc from Debian's python3-bpfcc, fallback kernel headers),
# the local runtime test bed (containerd, runc, CNI plugins, busybox-static),
# debootstrap (the daemon's image, built without a container engine), a
# key-value server and its load generator for the benchmark (redis-tools), Go
# and Debian's grpc-go sources (a real grpc-go CRI client for the tests), and a
# virtualenv in .venv with the project and its test bed (testbed/) installed
# in editable mode.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-bpfcc linux-headers-amd64          # bcc, and headers for it to compile against
  containerd runc containernetworking-plugins # the runtime test bed
  busybox-static gcc libc6-dev                # the test bed's images
  debootstrap                                 # the daemon's image, without a container engine
  iproute2 mount util-linux python3-venv
  librsvg2-bin                                # rsvg-convert: the tests render `tracer report --svg` to PNG
  redis-tools                                 # the benchmark's real server and its load generator (no service)
  # a real grpc-go CRI client for the tests (testbed/grpc-client), built offline
  golang-go golang-google-grpc-dev golang-goprotobuf-dev protoc-gen-go-grpc protobuf-compiler
  golang-golang-x-sys-dev
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# bcc is not on PyPI (the `bcc` there is unrelated): link Debian's package
# into the virtualenv.  It is pure Python over libbcc.so.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e '.[test]' -e ./testbed; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
rm -f "$log"
.venv/bin/python -c 'import bcc, tracer.app.cli' >/dev/null
testbed/grpc-client/build.sh >&2
echo "installed: $(.venv/bin/tracer --help | head -1)" >&2
