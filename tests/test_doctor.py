"""`squad-qa doctor`: every line of the report, and exit 1 naming what fails."""

from __future__ import annotations

from importlib import metadata

import pytest

import squad_qa.inference.doctor as doctor
import squad_qa.files.download as download
import squad_qa.files.lockfile as lockfile
from squad_qa.files.checksums import file_sha256
from squad_qa.cli import main as cli


@pytest.fixture()
def setting(tmp_path, monkeypatch):
    """A lock that holds exactly what is installed, and a data folder with one known (tiny) file."""
    lock = tmp_path / "lock.txt"
    lock.write_text("".join(f"{name}=={metadata.version(name)} \\\n    --hash=sha256:00\n" for name in doctor.PACKAGES))
    monkeypatch.setattr(lockfile, "LOCK", lock)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dev-v1.1.json").write_text('{"version": "1.1", "data": []}')
    monkeypatch.setattr(download, "DEFAULT_FILES", ["dev-v1.1.json"])
    monkeypatch.setitem(download.KNOWN_SHA256, "dev-v1.1.json", {file_sha256(data / "dev-v1.1.json")})
    return lock, data


def test_all_well_exits_0_and_names_versions_cpu_dtype_packing_and_model(setting, capsys):
    lock, data = setting
    assert cli(["doctor", "--data_dir", str(data)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith(("ok", "FAIL"))}
    assert all(ln.startswith("ok") for ln in lines.values()), out
    assert f"transformers {metadata.version('transformers')} (as locked)".split() == lines["transformers"].split()[1:]
    assert "torch kernels:" in lines["cpu"] and lines["dtype"].split()[-1] in ("float32", "bfloat16")
    assert "probe passed" in lines["packing"]
    assert "SHA256SUMS ok" in lines["model"] and out.rstrip().endswith("all well")


def test_a_version_off_the_lock_and_a_missing_file_fail_with_exit_1(setting, capsys):
    lock, data = setting
    lock.write_text(lock.read_text().replace(f"transformers=={metadata.version('transformers')}", "transformers==0.0.1"))
    (data / "dev-v1.1.json").unlink()
    assert cli(["doctor", "--data_dir", str(data)]) == 1
    out = capsys.readouterr().out
    failing = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert len(failing) == 2, out
    assert "the lock has 0.0.1" in failing[0] and "missing" in failing[1]
    assert out.splitlines()[-1].startswith("2 failing: transformers:")


def test_a_failing_packing_probe_is_a_failing_line(setting, monkeypatch, capsys):
    _, data = setting
    from squad_qa.inference.reader import QAReader

    monkeypatch.setattr(QAReader, "probe_packing", lambda self: "forced by the test")
    assert cli(["doctor", "--data_dir", str(data)]) == 1
    assert "FAIL  packing" in capsys.readouterr().out
