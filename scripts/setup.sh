#!/usr/bin/env bash
# Set up squad-qa on a fresh machine: a virtualenv (.venv, or $SQUAD_QA_VENV) with exactly the
# versions in requirements/lock.txt (hash-checked; CPU torch), the browser used by the web-page test
# and g++ (apt: root or sudo), and the SQuAD files in data/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SQUAD_QA_VENV:-.venv}
PY=$VENV/bin/python

# A venv of its own: the machine's site-packages never decide which versions run.
[ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV"
# The lock pins every package with its sha256 (python scripts/deps.py lock writes it); the package
# itself goes on top without resolving anything (setuptools, its build backend, is in the lock).
"$PY" -m pip install -q --disable-pip-version-check --require-hashes -r requirements/lock.txt || {
  echo "setup.sh: installing requirements/lock.txt failed (above). If pip found no torch==...+cpu, point it at" \
       "PyTorch's CPU wheels: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh" >&2
  exit 2
}
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

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
echo "setup.sh: ready in $VENV ($("$PY" -c 'import torch, transformers; print("torch", torch.__version__, "/ transformers", transformers.__version__)'))"
