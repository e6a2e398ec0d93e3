"""requirements/lock.txt, read: which versions the suite passed on, against what is installed.

Written by ``python scripts/deps.py lock`` (pip-compile); read by ``squad-qa doctor`` and the drift
check (``scripts/check_latest.sh``). Standard library only: the drift check reads it before torch
is installed.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"


def canonical(name: str) -> str:
    """A package name as pip compares them: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path | None = None) -> dict[str, str]:
    """{canonical package name: version} of a pip-compile lock file (default: ours); {} when there is none."""
    path = path or LOCK
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """{canonical package name: version} of this environment."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def differences(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """``name lock -> here`` for every locked package installed at another version (or missing)."""
    return [f"{name} {version} -> {have.get(name, 'missing')}"
            for name, version in sorted(lock.items()) if have.get(name) != version]
