"""The project's pinned installs: the lock, and the drift check against the newest releases.

    python scripts/deps.py lock [--upgrade]      requirements/lock.txt from pyproject.toml (pip-compile)
    python scripts/deps.py uncapped              the requirements with their upper bounds lifted
    python scripts/deps.py compare               this environment's versions against the lock
    python scripts/deps.py raise-caps            pyproject's upper bounds raised to this environment's

Why pip-tools: `pip-compile` resolves with pip itself, so it sees what `pip install` sees here (the
pip.conf find-links that hold the CPU build of torch), writes a plain requirements file with sha256
hashes that a bare `pip install --require-hashes` installs (nobody needs pip-tools to install), and
it is on PyPI. `pip install pip-tools` is all `lock` needs.

The caps in pyproject.toml are the newest minor releases the suite passed on; `scripts/check_latest.sh`
installs the newest releases with the caps lifted, runs the suite and calls `compare`. When that
passes, `raise-caps` (in that environment) and `lock --upgrade` move both in one commit.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from squad_qa.files.lockfile import LOCK, canonical, differences, installed, read_lock  # noqa: E402

PYPROJECT = ROOT / "pyproject.toml"
TORCH_IN = ROOT / "requirements" / "cpu-torch.in"
CAPPED = ("torch", "transformers", "tokenizers", "fastapi", "uvicorn", "numpy", "onnxruntime", "onnx")  # the packages with upper bounds
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def requirements(extras: tuple[str, ...] = ("test",)) -> list[str]:
    """The project's requirements and those of ``extras``, as pyproject.toml spells them."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs


def uncap(requirement: str) -> str:
    """``"transformers>=5.17,<5.26"`` -> ``"transformers>=5.17"``: the lower bound stays."""
    name, extras, spec = _NAME.match(requirement.split(";")[0].strip()).groups()
    kept = [s.strip() for s in spec.split(",") if s.strip() and not s.strip().startswith(("<", "~=", "=="))]
    return f"{name}{extras or ''}{','.join(kept)}"


def next_minor(version: str) -> str:
    parts = [int(p) for p in re.findall(r"\d+", version.split("+")[0])[:2]] + [0]
    return f"{parts[0]}.{parts[1] + 1}"


def raise_caps(have: dict[str, str]) -> list[str]:
    """Rewrite pyproject.toml's upper bounds to the next minor after the installed versions."""
    text = PYPROJECT.read_text()
    changed = []
    for name in CAPPED:
        version = have.get(canonical(name))
        if version is None:
            continue
        pattern = re.compile(rf'("{re.escape(name)}(?:\[[^\]]*\])?[^"]*?,<)([0-9.]+)(")')
        m = pattern.search(text)
        if m and m.group(2) != next_minor(version):
            text = text[: m.start(2)] + next_minor(version) + text[m.end(2):]
            changed.append(f"{name} <{m.group(2)} -> <{next_minor(version)}")
    PYPROJECT.write_text(text)
    return changed


def lock(upgrade: bool) -> int:
    """requirements/lock.txt: every package the project and its test extra install, pinned with hashes."""
    cmd = [sys.executable, "-m", "piptools", "compile", "--quiet", "--extra", "test", "--generate-hashes",
           "--allow-unsafe", "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",
           "--output-file", str(LOCK.relative_to(ROOT)), "pyproject.toml", str(TORCH_IN.relative_to(ROOT))]
    if upgrade:
        cmd.append("--upgrade")
    if find_spec("piptools") is None:
        print("deps.py: pip-compile is missing: pip install pip-tools", file=sys.stderr)
        return 2
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "python scripts/deps.py lock"}  # the lock's header names it
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lock", help="write requirements/lock.txt with pip-compile")
    p.add_argument("--upgrade", action="store_true", help="the newest versions the ranges allow")
    sub.add_parser("uncapped", help="print the requirements without upper bounds")
    sub.add_parser("compare", help="print how this environment differs from the lock")
    sub.add_parser("raise-caps", help="raise pyproject's upper bounds to this environment's versions")
    args = parser.parse_args(argv)
    if args.command == "lock":
        return lock(args.upgrade)
    if args.command == "uncapped":
        print("\n".join(uncap(r) for r in requirements()))
        return 0
    if args.command == "compare":
        diff = differences(read_lock(LOCK), installed())
        print("same as the lock" if not diff else "differs from the lock: " + ", ".join(diff))
        return 0
    changed = raise_caps(installed())
    print("caps raised: " + ", ".join(changed) if changed else "caps unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
