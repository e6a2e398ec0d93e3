#!/usr/bin/env bash
# The drift check: the newest releases pyproject.toml's lower bounds allow (its upper bounds lifted),
# in a throw-away venv, through the whole suite; then one line: pass/fail and what differs from the
# lock. On a pass, raise both in one commit: `.../bin/python scripts/deps.py raise-caps` in that
# venv (KEEP=1 keeps it), then `python scripts/deps.py lock --upgrade`. torch stays the lock's CPU
# build: PyPI's Linux torch is the CUDA build (TORCH=... names another, e.g. torch==2.14.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/squad-qa-latest.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
PY=$WORK/venv/bin/python
python3 -m venv "$WORK/venv"
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip
TORCH=${TORCH:-$(grep -o '^torch==[^ ]*' requirements/lock.txt)}
python3 scripts/deps.py uncapped | grep -v '^torch' > "$WORK/latest.txt"
"$PY" -m pip install -q --disable-pip-version-check "$TORCH" -r "$WORK/latest.txt"
"$PY" -m pip install -q --disable-pip-version-check --no-deps -e .
set +e
"$PY" -m pytest -q -p no:cacheprovider > "$WORK/pytest.log" 2>&1
rc=$?
set -e
result=$(tail -n 1 "$WORK/pytest.log" | tr -d '=' | sed 's/^ *//')
[ $rc = 0 ] && verdict=PASS || { verdict=FAIL; grep '^FAILED\|^ERROR' "$WORK/pytest.log" >&2 || true; }
echo "check_latest: $verdict ($result); $("$PY" scripts/deps.py compare)${KEEP:+; venv kept in $WORK/venv}"
exit $rc
