#!/usr/bin/env bash
# Install what the browser test needs (`make test-browser`): Debian's chromium (apt) and
# Playwright for Python (pip, into the project's virtualenv). Playwright drives the system
# chromium through `executable_path`, so no browser is downloaded. Safe to run repeatedly.
set -euo pipefail

PY="${PY:-.venv/bin/python}"
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.65.2}"

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
  fi
  echo "install-browser: installing chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
else
  echo "install-browser: chromium already installed ($(chromium --version 2>/dev/null || echo unknown))"
fi

if ! "$PY" -c "import playwright" 2>/dev/null; then
  echo "install-browser: installing playwright==${PLAYWRIGHT_VERSION}"
  "$PY" -m pip install --quiet "playwright==${PLAYWRIGHT_VERSION}"
else
  echo "install-browser: playwright already installed"
fi
