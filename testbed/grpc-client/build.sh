#!/usr/bin/env bash
# Builds the grpc-go CRI client from Debian 12's packages alone, offline.
#
#   testbed/grpc-client/build.sh [OUTPUT]     (default: testbed/grpc-client/bin/cri-client)
#
# Debian ships Go libraries as sources under /usr/share/gocode/src, without
# module metadata that `go` could resolve offline, so the build runs in
# GOPATH mode: GOPATH=<build dir>/gopath:/usr/share/gocode. The CRI stubs
# are generated at build time with protoc, protoc-gen-go and
# protoc-gen-go-grpc from the tracer's own tracer/cri/api.proto (the whole
# published runtime.v1 API; Debian's protoc 3.21 predates the debug_redact
# field option, so a copy without it, naming its Go package, is
# compiled). A second run with
# nothing changed returns at once.
#
# Packages (apt-get install -y ...):
#   golang-go golang-google-grpc-dev golang-goprotobuf-dev protoc-gen-go-grpc
#   protobuf-compiler golang-golang-x-sys-dev
# golang-goprotobuf-dev brings github.com/golang/protobuf v1.3.5 and its
# protoc-gen-go. The other pairing Debian offers also works:
# golang-github-golang-protobuf-1-5-dev with protoc-gen-go (APIv2, v1.28).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/bin/cri-client}
case $out in /*) ;; *) out=$PWD/$out ;; esac
build=${CRI_CLIENT_BUILD_DIR:-$here/.build}
gocode=/usr/share/gocode/src
proto=$here/../../tracer/cri/api.proto
sources=("$here/main.go" "$proto" "$here/build.sh")

# ------------------------------------------------------------ up to date?
if [[ -x $out ]]; then
    newer=$(find "${sources[@]}" -newer "$out" 2>/dev/null | head -n1)
    if [[ -z $newer ]]; then
        echo "cri-client: up to date: $out"
        exit 0
    fi
fi

# ------------------------------------------------------ what is missing?
missing=()
need_cmd() {  # command package
    command -v "$1" >/dev/null 2>&1 || missing+=("$2 (for $1)")
}
need_src() {  # import path package
    [[ -d $gocode/$1 ]] || missing+=("$2 (for $gocode/$1)")
}
need_cmd go golang-go
need_cmd protoc protobuf-compiler
need_cmd protoc-gen-go "golang-goprotobuf-dev or protoc-gen-go"
need_cmd protoc-gen-go-grpc protoc-gen-go-grpc
need_src google.golang.org/grpc golang-google-grpc-dev
need_src github.com/golang/protobuf/proto "golang-goprotobuf-dev or golang-github-golang-protobuf-1-5-dev"
need_src golang.org/x/sys/unix golang-golang-x-sys-dev
need_src golang.org/x/net/http2 golang-golang-x-net-dev
need_src google.golang.org/genproto/googleapis/rpc/status golang-google-genproto-dev
if ((${#missing[@]})); then
    echo "cri-client: cannot build, missing:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "install: apt-get install -y golang-go golang-google-grpc-dev golang-goprotobuf-dev" \
         "protoc-gen-go-grpc protobuf-compiler golang-golang-x-sys-dev" >&2
    exit 1
fi

# --------------------------------------------------------------- generate
pkg=$build/gopath/src/crigrpcclient
mkdir -p "$pkg"
gen=$pkg/runtimev1
# Regenerate when the proto changed or another generator package is installed
# (dpkg keeps the packaged mtimes, so compare the binaries' checksums).
generators=$(cksum "$(command -v protoc)" "$(command -v protoc-gen-go)" "$(command -v protoc-gen-go-grpc)")
if [[ ! -f $gen/api.pb.go || ! -f $gen/api_grpc.pb.go || $proto -nt $gen/api.pb.go \
      || $generators != "$(cat "$gen/generators" 2>/dev/null)" ]]; then
    rm -rf "$gen"
    mkdir -p "$build/proto" "$gen"
    # the copy names its Go package (the tracer's file has no go_package)
    sed -e 's/ \[debug_redact = true\]//' \
        -e 's|^package runtime.v1;|&\noption go_package = "crigrpcclient/runtimev1;runtimev1";|' \
        "$proto" > "$build/proto/api.proto"
    protoc -I "$build/proto" --go_out="$gen" --go_opt=paths=source_relative \
        --go-grpc_out="$gen" --go-grpc_opt=paths=source_relative "$build/proto/api.proto"
    printf '%s\n' "$generators" > "$gen/generators"
fi

# APIv2 messages (protoc-gen-go >= 1.20) need github.com/golang/protobuf
# >= 1.4 underneath grpc's codec; Debian lets the two be installed apart.
if grep -q 'google.golang.org/protobuf/reflect/protoreflect' "$gen/api.pb.go" \
        && [[ -f $gocode/github.com/golang/protobuf/proto/table_marshal.go ]]; then
    echo "cri-client: protoc-gen-go makes APIv2 code but github.com/golang/protobuf is v1.3;" \
         "install golang-github-golang-protobuf-1-5-dev, or golang-goprotobuf-dev (its protoc-gen-go)" >&2
    rm -rf "$gen"
    exit 1
fi

# ------------------------------------------------------------------ build
cp -p "$here/main.go" "$pkg/main.go"
mkdir -p "$(dirname "$out")"
export GO111MODULE=off GOPATH=$build/gopath:/usr/share/gocode GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOCACHE=${GOCACHE:-$build/gocache}
go build -trimpath -o "$out.tmp" crigrpcclient
mv -f "$out.tmp" "$out"
echo "cri-client: built $out"
