#!/usr/bin/env bash
# Set up squad-qa on a fresh machine: Python packages (CPU torch), the browser used by the web-page
# test (apt: root or sudo), and the SQuAD files in data/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch first and pinned: an unpinned torch would pull the CUDA build and several GB with it.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[test]"

# System packages, only where missing: headless Chromium for tests/test_service_browser.py (Debian's
# package; nothing downloads a browser) and g++ for `--compile` (torch.compile builds C++ kernels).
# apt needs root: run this as root or as a user with sudo (it asks for the password), or install
# them yourself beforehand (`apt-get install chromium g++`) and nothing here touches apt.
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "setup.sh: installing $* needs root (apt-get); run as root or install them first: apt-get install $*" >&2
      exit 2
    fi
    echo "setup.sh: installing $* with sudo apt-get (needs root)" >&2
    sudo=sudo
  fi
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# SQuAD: copy from the shared folder when it is there, else download the official files.
if [ -d ../shared/squad ]; then
  "$PY" scripts/download_squad.py --from ../shared/squad
else
  "$PY" scripts/download_squad.py
fi
