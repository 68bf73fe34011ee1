#!/usr/bin/env bash
# Build Toxiproxy's server from its Go module, once, and cache it: the e2e fault tests put
# it between the workers (and the operator) and the API server to cut, reset and slow
# their connections for real.
#
#   tests/e2e/testenv/build-toxiproxy.sh     # prints the bin directory on the last line
#
# Cache: ${CHUNKWISE_TESTENV_CACHE:-~/.cache/chunkwise-testenv}/toxiproxy-<version>/bin
# A warm cache returns at once; cold, about 40 s on 2 cores (with empty Go caches).
set -euo pipefail

TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-2.5.0}
CACHE_ROOT=${CHUNKWISE_TESTENV_CACHE:-$HOME/.cache/chunkwise-testenv}
BIN="$CACHE_ROOT/toxiproxy-$TOXIPROXY_VERSION/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

if [ -x "$BIN/toxiproxy-server" ]; then echo "$BIN"; exit 0; fi
log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)
mkdir -p "$BIN"
log "building toxiproxy-server v$TOXIPROXY_VERSION"
GOBIN="$BIN.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION"
mv "$BIN.tmp/server" "$BIN/toxiproxy-server"; rm -rf "$BIN.tmp"
log "done in $(( $(date +%s) - start )) s"
echo "$BIN"
