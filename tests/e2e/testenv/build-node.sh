#!/usr/bin/env bash
# Build the rest of a real Kubernetes node for the e2e tests, once, and cache it beside the
# control plane (build.sh builds kubelet, kube-proxy and kube-scheduler with it):
#   - containerd, containerd-shim-runc-v2 and ctr from github.com/containerd/containerd/v2
#   - the registry from github.com/distribution/distribution/v3 (CNCF distribution), which
#     the tests push images to and the node pulls from, on loopback
#   - /pause from Kubernetes' own build/pause/linux/pause.c, as an image in buildah's local
#     storage (no public registry is reachable to pull registry.k8s.io/pause from)
#   - runc, the CNI plugins, iptables and conntrack from Debian's packages
#
#   tests/e2e/testenv/build-node.sh     # prints the bin directory on the last line
#
# Cache: ${CHUNKWISE_TESTENV_CACHE:-~/.cache/chunkwise-testenv}/node-<versions>/bin
# A warm cache returns at once; cold, about 2-3 minutes on 2 cores.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}           # the pause.c source, from the same module
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
DISTRIBUTION_VERSION=${DISTRIBUTION_VERSION:-v3.1.2}
CACHE_ROOT=${CHUNKWISE_TESTENV_CACHE:-$HOME/.cache/chunkwise-testenv}
DEST="$CACHE_ROOT/node-containerd-$CONTAINERD_VERSION-distribution-$DISTRIBUTION_VERSION"
BIN="$DEST/bin"
PAUSE_IMAGE=localhost/chunkwise-pause:$K8S_VERSION
BUILDAH=(buildah --storage-driver vfs)  # as scripts/build-image stores its images
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
packages=()
[ -x /usr/sbin/runc ] || [ -x /usr/bin/runc ] || packages+=(runc)
[ -x /usr/lib/cni/bridge ] || packages+=(containernetworking-plugins)
command -v iptables >/dev/null || packages+=(iptables)
command -v conntrack >/dev/null || packages+=(conntrack)
command -v buildah >/dev/null || packages+=(buildah)
# the pause binary: gcc -static needs glibc's static libraries (libc6-dev), strip binutils
command -v gcc >/dev/null || packages+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || ls /usr/lib/*/libc.a >/dev/null 2>&1 || packages+=(libc6-dev)
command -v strip >/dev/null || packages+=(binutils)
if [ ${#packages[@]} -gt 0 ]; then
  log "installing ${packages[*]} from Debian packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
fi

start=$(date +%s)
mkdir -p "$BIN" "$DEST/work"

# a wrapper module per program: `go install pkg@version` refuses modules with replace lines
build_from_module() {  # module version package output [tags]
  local module=$1 version=$2 package=$3 output=$4 tags=${5:-}
  [ -x "$BIN/$output" ] && return 0
  local w="$DEST/work/$(basename "$module")"; mkdir -p "$w"; cd "$w"
  [ -f go.mod ] || printf 'module chunkwise.dev/testenv-%s\n\ngo 1.24\n' "$(basename "$module")" > go.mod
  log "building $output ($module $version)"
  go get "$module@$version" >/dev/null
  go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$BIN/$output.tmp" "$package"
  mv "$BIN/$output.tmp" "$BIN/$output"
}

containerd=github.com/containerd/containerd/v2
for cmd in containerd containerd-shim-runc-v2 ctr; do
  build_from_module "$containerd" "$CONTAINERD_VERSION" "$containerd/cmd/$cmd" "$cmd" \
    "no_btrfs no_devmapper no_zfs"
done
distribution=github.com/distribution/distribution/v3
build_from_module "$distribution" "$DISTRIBUTION_VERSION" "$distribution/cmd/registry" registry

if ! "${BUILDAH[@]}" inspect --type image "$PAUSE_IMAGE" >/dev/null 2>&1; then
  src=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c
  log "building $PAUSE_IMAGE from $src"
  gcc -Os -static -Wall -Werror -DVERSION="$K8S_VERSION" -o "$DEST/work/pause" "$src"
  strip "$DEST/work/pause"
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy "$ctr" "$DEST/work/pause" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  "${BUILDAH[@]}" commit --rm --quiet "$ctr" "$PAUSE_IMAGE" >/dev/null
fi
echo "$PAUSE_IMAGE" > "$DEST/pause-image"

log "node ready in $(( $(date +%s) - start )) s"
echo "$BIN"
