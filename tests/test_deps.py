"""scripts/deps.py: the lock holds what pyproject asks for; caps come off and go up as the drift check needs."""

from __future__ import annotations

import re

from conftest import load_script

from squad_qa.files.lockfile import read_lock

deps = load_script("deps")


def test_the_lock_pins_every_requirement_with_hashes_and_cpu_torch():
    lock = read_lock(deps.LOCK)
    for requirement in deps.requirements():
        name = deps.canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group())
        assert name in lock, f"{requirement} is not in {deps.LOCK.name}"
    assert lock["torch"].endswith("+cpu")
    text = deps.LOCK.read_text()
    pins = re.findall(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+", text, re.M)
    assert len(pins) == len(lock) and text.count("--hash=sha256:") >= len(pins)


def test_the_caps_admit_the_locked_versions():
    lock = read_lock(deps.LOCK)
    for requirement in deps.requirements():
        m = re.search(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?.*,<([0-9.]+)", requirement)
        if m:  # the capped ones: the lock's version is below the cap, at the cap's minor release - 1
            have = [int(x) for x in lock[deps.canonical(m.group(1))].split("+")[0].split(".")[:2]]
            cap = [int(x) for x in m.group(2).split(".")]
            assert have < cap and deps.next_minor(lock[deps.canonical(m.group(1))]) == m.group(2), requirement


def test_uncap_keeps_lower_bounds_and_extras():
    assert deps.uncap("transformers>=5.17,<5.26") == "transformers>=5.17"
    assert deps.uncap("uvicorn[standard]>=0.29,<0.56") == "uvicorn[standard]>=0.29"
    assert deps.uncap("tqdm>=4.66") == "tqdm>=4.66"
    assert deps.next_minor("2.13.0+cpu") == "2.14" and deps.next_minor("0.23.3") == "0.24"


def test_raise_caps_rewrites_only_the_bounds(tmp_path, monkeypatch):
    original = deps.PYPROJECT.read_text()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(original)
    monkeypatch.setattr(deps, "PYPROJECT", pyproject)
    changed = deps.raise_caps({"transformers": "5.27.1", "uvicorn": "0.55.0"})
    assert changed == ["transformers <5.26 -> <5.28"]
    text = pyproject.read_text()
    assert '"transformers>=5.17,<5.28"' in text and '"uvicorn[standard]>=0.29,<0.56"' in text
    assert text.replace("<5.28", "<5.26") == original
