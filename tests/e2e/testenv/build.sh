#!/usr/bin/env bash
# Build the real Kubernetes control plane and the node's Kubernetes parts (kubelet,
# kube-proxy, kube-scheduler) used by the e2e tests, once, from the upstream Go modules,
# and cache the binaries outside the repository. build-node.sh adds the container
# runtime, the registry and the pause image.
#
#   tests/e2e/testenv/build.sh          # prints the bin directory on the last line
#
# Cache: ${CHUNKWISE_TESTENV_CACHE:-~/.cache/chunkwise-testenv}/<versions>/bin
# A warm cache returns at once. Needs Go (GOTOOLCHAIN=local) and the module proxy.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
CACHE_ROOT=${CHUNKWISE_TESTENV_CACHE:-$HOME/.cache/chunkwise-testenv}
DEST="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
BIN="$DEST/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
want=(etcd "${K8S_COMMANDS[@]}" helm)
missing=()
for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$BIN"; exit 0; fi

mkdir -p "$BIN" "$DEST/work"
log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)

# --- Kubernetes: a wrapper module, since k/k points its staging modules at v0.0.0.
k8s_missing=0
for cmd in "${K8S_COMMANDS[@]}"; do [ -x "$BIN/$cmd" ] || k8s_missing=1; done
if [ "$k8s_missing" = 1 ]; then
  w="$DEST/work/k8s"; mkdir -p "$w"; cd "$w"
  log "resolving k8s.io/kubernetes@$K8S_VERSION"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}; patch=${K8S_VERSION##*.}
  staging_version="v0.$minor.$patch"
  {
    echo "module chunkwise.dev/testenv-k8s"
    grep -m1 '^go ' "$gomod"
    grep -m1 '^godebug' "$gomod" || true
    echo "require k8s.io/kubernetes $K8S_VERSION"
    # every staging module that k/k lists at v0.0.0 gets the published tag
    grep -oE '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $staging_version"; done
  } > go.mod
  echo 'package main' > tools.go
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  log "downloading modules (first run only)"
  go mod download k8s.io/kubernetes
  for cmd in "${K8S_COMMANDS[@]}"; do
    [ -x "$BIN/$cmd" ] && continue
    log "building $cmd $K8S_VERSION (several minutes on 2 cores)"
    go get "k8s.io/kubernetes/cmd/$cmd@$K8S_VERSION" >/dev/null 2>&1 || true
    go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  done
fi

# --- etcd: its server main package is the module root.
if [ ! -x "$BIN/etcd" ]; then
  w="$DEST/work/etcd"; mkdir -p "$w"; cd "$w"
  printf 'module chunkwise.dev/testenv-etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  log "building etcd $ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

# --- helm 3
if [ ! -x "$BIN/helm" ]; then
  log "building helm $HELM_VERSION"
  GOBIN="$DEST/work/gobin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$DEST/work/gobin/helm" "$BIN/helm"
fi

log "done in $(( $(date +%s) - start )) s"
echo "$BIN"
