#!/usr/bin/env bash
# Build KenLM's estimator (lmplz) and binary converter (build_binary) from the kenlm source
# distribution on PyPI, with CMake and Debian's Boost, into $KENLM_DIR (default build/kenlm).
# Used by `make lm`. Safe to run repeatedly: an existing build is kept.
#
#   PY=.venv/bin/python KENLM_DIR=build/kenlm scripts/install-kenlm.sh
set -euo pipefail

KENLM_VERSION=0.3.0
KENLM_DIR=${KENLM_DIR:-build/kenlm}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-$(nproc)}

if [ -x "$KENLM_DIR/bin/lmplz" ] && [ -x "$KENLM_DIR/bin/build_binary" ]; then
  echo "install-kenlm: $KENLM_DIR/bin has lmplz and build_binary"
  exit 0
fi

PACKAGES=(
  cmake g++ make
  libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
  zlib1g-dev libbz2-dev liblzma-dev
)
missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
  fi
  echo "install-kenlm: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$KENLM_DIR"
KENLM_DIR=$(cd "$KENLM_DIR" && pwd)
SDIST="$KENLM_DIR/kenlm-$KENLM_VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  # Only the kenlm sdist itself is wanted; its build requirements may come as wheels.
  "$PY" -m pip download --quiet --no-deps --no-binary kenlm "kenlm==$KENLM_VERSION" -d "$KENLM_DIR"
fi
rm -rf "$KENLM_DIR/src" "$KENLM_DIR/cmake-build"
mkdir -p "$KENLM_DIR/src"
tar -xzf "$SDIST" -C "$KENLM_DIR/src" --strip-components=1

echo "install-kenlm: building lmplz and build_binary with $JOBS jobs"
cmake -S "$KENLM_DIR/src" -B "$KENLM_DIR/cmake-build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 \
  -DBUILD_TESTING=OFF >"$KENLM_DIR/cmake.log" 2>&1
cmake --build "$KENLM_DIR/cmake-build" --target lmplz build_binary -j "$JOBS" >"$KENLM_DIR/build.log" 2>&1 || { tail -30 "$KENLM_DIR/build.log"; exit 1; }
mkdir -p "$KENLM_DIR/bin"
cp "$KENLM_DIR/cmake-build/bin/lmplz" "$KENLM_DIR/cmake-build/bin/build_binary" "$KENLM_DIR/bin/"
echo "install-kenlm: $KENLM_DIR/bin/lmplz and build_binary are ready"
