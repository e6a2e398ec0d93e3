"""sha256 of files, and ``SHA256SUMS`` folders (``sha256sum`` format): written with checkpoints and the shipped
model, checked before they are loaded; the downloads (SQuAD files, the teacher's parts) check theirs here too."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHECKSUMS_FILE = "SHA256SUMS"  # `sha256sum` format: checkpoints and the shipped model folder

__all__ = ["CHECKSUMS_FILE", "ChecksumError", "file_sha256", "write_checksums", "read_checksums", "verify_checksums"]


class ChecksumError(ValueError):
    """A file that is missing or whose sha256 differs from the expected one; the message names it."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(path: Path, names: list[str] | tuple[str, ...]) -> Path:
    """Record the sha256 of ``names`` (files in ``path``) in ``path/SHA256SUMS``."""
    out = path / CHECKSUMS_FILE
    out.write_text("".join(f"{file_sha256(path / n)}  {n}\n" for n in names), encoding="utf-8")
    return out


def read_checksums(path: Path) -> dict[str, str]:
    """``path/SHA256SUMS`` as {file name: sha256}, unchecked ({} when there is none); ChecksumError names a
    line that is not in `sha256sum` format."""
    sums = path / CHECKSUMS_FILE
    if not sums.is_file():
        return {}
    listed = {}
    for n, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if not name or len(digest) != 64:
            raise ChecksumError(f"{sums}, line {n}: not a `sha256sum` line: {line[:80]!r}")
        listed[name.strip()] = digest
    return listed


def verify_checksums(path: Path) -> bool:
    """Check every file listed in ``path/SHA256SUMS``; False when there is no such file (nothing to
    check), ChecksumError naming the first file that is missing or differs. ~1 s per 300 MB."""
    if not (path / CHECKSUMS_FILE).is_file():
        return False
    for name, digest in read_checksums(path).items():
        target = path / name
        if not target.is_file():
            raise ChecksumError(f"{path}: {name} is missing (listed in {CHECKSUMS_FILE})")
        if file_sha256(target) != digest:
            raise ChecksumError(f"{target} is damaged: its sha256 differs from {CHECKSUMS_FILE}'s")
    return True
