#!/bin/sh
# Container entrypoint: make the host's kernel headers usable, then run tracer.
#
# The DaemonSet mounts the host's /usr/src at /host/usr/src, not over the
# image's /usr/src, which holds Debian's headers as a fallback.  The host's
# /lib/modules/<release>/build links point into /usr/src, so each host
# header tree is linked there (the image's own trees win on a name clash).
set -eu
host_src=${TRACER_HOST_USR_SRC:-/host/usr/src}
src=${TRACER_USR_SRC:-/usr/src}
if [ -d "$host_src" ]; then
  for tree in "$host_src"/*; do
    [ -e "$tree" ] || continue
    name=$(basename "$tree")
    [ -e "$src/$name" ] || [ -L "$src/$name" ] || ln -s "$tree" "$src/$name"
  done
fi
exec tracer "$@"
