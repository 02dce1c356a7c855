#!/usr/bin/env bash
# Create .venv, install minewatch with the training and test extras (torch pinned to the CPU build),
# and make sure a headless Chromium is there for the web map / report / review browser tests.
#
# Chromium: found on PATH (or $MINEWATCH_CHROMIUM) → nothing to do; else, as root with apt-get
# (Debian/Ubuntu, CI), `apt-get install chromium`; else a note saying how to install it. PyPI ships no
# usable Chromium build (packages that claim to download one from a browser CDN at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[train,test]"

have_chromium() {
  [ -n "${MINEWATCH_CHROMIUM:-}" ] && [ -x "${MINEWATCH_CHROMIUM}" ] && return 0
  for c in chromium chromium-browser google-chrome google-chrome-stable; do command -v "$c" >/dev/null && return 0; done
  return 1
}
if ! have_chromium; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Chromium with apt-get (running as root; the browser tests need it) …" >&2
    # wait (up to 10 min) for another apt/dpkg run to finish instead of failing on its lock
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
  else
    echo "setup: no Chromium found and not root with apt-get: install it (e.g. 'sudo apt-get install chromium')" >&2
    echo "       or set MINEWATCH_CHROMIUM=/path/to/chrome; the web map / report / review tests need it." >&2
  fi
fi
