import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from squad_qa.files.checksums import ChecksumError, file_sha256
from squad_qa.files.download import fetch

ROOT = Path(__file__).resolve().parents[1]



def test_copy_from_local_folder_verifies_and_is_idempotent(tmp_path, squad_dir):
    out = tmp_path / "data"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_squad.py"), "--from", str(squad_dir),
                          "--out", str(out), "--files", "dev-v1.1.json", "dev-v2.0.json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert file_sha256(out / "dev-v1.1.json") == "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"
    assert (out / "dev-v2.0.json").is_file() and not list(out.glob("*.part"))
    before = (out / "dev-v1.1.json").stat().st_mtime_ns
    fetch("dev-v1.1.json", out, squad_dir)  # already there and verified: untouched
    assert (out / "dev-v1.1.json").stat().st_mtime_ns == before


def test_corrupted_source_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "dev-v1.1.json.gz", "wt") as f:
        f.write('{"data": []}')
    with pytest.raises(ChecksumError, match="dev-v1.1.json: sha256"):
        fetch("dev-v1.1.json", tmp_path / "out", src)
    assert not list((tmp_path / "out").iterdir())  # nothing half-written left behind
    with pytest.raises(FileNotFoundError, match="train-v1.1.json"):
        fetch("train-v1.1.json", tmp_path / "out", src)
