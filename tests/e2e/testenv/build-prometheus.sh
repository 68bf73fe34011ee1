#!/usr/bin/env bash
# Build Prometheus and promtool from the upstream Go module, once, and cache them.
#
#   tests/e2e/testenv/build-prometheus.sh     # prints the bin directory on the last line
#
# Why not Debian's prometheus package: Debian builds it without Kubernetes service
# discovery ("field kubernetes_sd_configs not found"), and the e2e tests find the worker
# pods the way the chart's PodMonitor makes a real Prometheus find them.
# Cache: ${CHUNKWISE_TESTENV_CACHE:-~/.cache/chunkwise-testenv}/prometheus-<version>/bin
# A warm cache returns at once; cold, about 2-4 minutes on 2 cores.
set -euo pipefail

PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-2.54.1}   # the Go module is tagged v0.54.1
CACHE_ROOT=${CHUNKWISE_TESTENV_CACHE:-$HOME/.cache/chunkwise-testenv}
DEST="$CACHE_ROOT/prometheus-$PROMETHEUS_VERSION"
BIN="$DEST/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

if [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ]; then echo "$BIN"; exit 0; fi
log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)
mkdir -p "$BIN"
module_version="v0.${PROMETHEUS_VERSION#2.}"
log "downloading github.com/prometheus/prometheus@$module_version"
src=$(go mod download -json "github.com/prometheus/prometheus@$module_version" |
      sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
# the module's go.mod has replace directives, so `go install pkg@version` refuses it:
# build inside a writable copy of the module instead
work="$DEST/work"; rm -rf "$work"; cp -r "$src" "$work"; chmod -R u+w "$work"; cd "$work"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
for cmd in prometheus promtool; do
  log "building $cmd $PROMETHEUS_VERSION"
  go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "./cmd/$cmd"
  mv "$BIN/$cmd.tmp" "$BIN/$cmd"
done
cd /; rm -rf "$work"
log "done in $(( $(date +%s) - start )) s"
echo "$BIN"
