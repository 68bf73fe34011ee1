#!/usr/bin/env bash
# Build CPython 3.13 from Debian's source package, once, and cache it: Django 6.0 and 6.1
# need Python >= 3.12 and Debian bookworm has 3.11, so the Django 6.1 test leg (noxfile.py)
# runs on this interpreter.
#
#   scripts/build-python.sh          # prints the interpreter's path on the last line
#   scripts/build-python.sh --path   # prints where it is (or will be), builds nothing
#
# The source is the .orig tarball of trixie's python3.13 package, fetched by apt's own
# client (signature-checked through trixie's Release file) with a private source list,
# lists and cache, so the system's apt setup is left untouched and no binary package of
# trixie is installed. Built with its defaults (no --enable-optimizations: PGO triples the
# build time, and the tests do not measure the interpreter's speed) and without CPython's own
# test suite and test modules.
# Cache: ${CHUNKWISE_TESTENV_CACHE:-~/.cache/chunkwise-testenv}/python-<version>/bin/python3.13
# A warm cache returns at once; cold, about 6 minutes on 2 cores (see CONTRIBUTING.md).
set -euo pipefail

PYTHON_VERSION=${PYTHON_VERSION:-3.13.5}   # the upstream version of trixie's python3.13
CACHE_ROOT=${CHUNKWISE_TESTENV_CACHE:-$HOME/.cache/chunkwise-testenv}
DEST="$CACHE_ROOT/python-$PYTHON_VERSION"
minor=${PYTHON_VERSION%.*}
PY="$DEST/bin/python$minor"

if [ "${1:-}" = "--path" ]; then echo "$PY"; exit 0; fi
# .built is written last: an interrupted build is started again, not taken for done
if [ -x "$PY" ] && [ -f "$DEST/.built" ]; then echo "$PY"; exit 0; fi
log() { printf '[python %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)

# the headers CPython's optional modules need (ssl, zlib, ctypes, sqlite3, bz2, lzma,
# readline, uuid); Debian bookworm's packages, installed only when one is missing
deps=(build-essential pkg-config libssl-dev zlib1g-dev libffi-dev libsqlite3-dev libbz2-dev
      liblzma-dev libreadline-dev uuid-dev)
missing=()
for p in "${deps[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

work="$DEST.work"; rm -rf "$work"; mkdir -p "$work/apt/lists/partial" "$work/apt/cache"
# trixie's sources from the mirror the system already uses
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
printf 'deb-src %s trixie main\n' "${uri:-http://deb.debian.org/debian}" > "$work/apt/trixie.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/trixie.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
          -o APT::Sandbox::User=root)  # _apt cannot write into the cache dir; downloads stay checked
log "fetching python$minor's source package from Debian trixie"
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only -qq "python$minor" >/dev/null)
orig="$work/python${minor}_$PYTHON_VERSION.orig.tar.xz"
if [ ! -f "$orig" ]; then
  echo "scripts/build-python.sh: trixie's python$minor is no longer $PYTHON_VERSION" \
       "(found: $(cd "$work" && ls ./*.orig.tar.* 2>/dev/null | tr '\n' ' ')); set PYTHON_VERSION" >&2
  exit 1
fi
tar -C "$work" -xJf "$orig"
src=$(dirname "$(find "$work" -mindepth 2 -maxdepth 2 -name configure -not -path '*/apt/*' | head -n1)")
rm -rf "$DEST"
log "building CPython $PYTHON_VERSION into $DEST (make -j2)"
cd "$src"
./configure --prefix="$DEST" --with-ensurepip=install --disable-test-modules >"$work/configure.log" 2>&1 ||
  { tail -n 30 "$work/configure.log" >&2; exit 1; }
make -j2 >"$work/make.log" 2>&1 || { tail -n 40 "$work/make.log" >&2; exit 1; }
# altinstall: python3.13 only, no python3 or python links that could shadow the system's
make altinstall >"$work/install.log" 2>&1 || { tail -n 40 "$work/install.log" >&2; exit 1; }
# an optional module whose headers were missing would only show up as an ImportError later
"$PY" -c 'import ssl, zlib, ctypes, sqlite3, bz2, lzma, readline, uuid, venv'
touch "$DEST/.built"
cd /; rm -rf "$work"
log "done in $(( $(date +%s) - start )) s"
echo "$PY"
