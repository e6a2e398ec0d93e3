"""Writes that land whole or not at all: filled under a temporary name beside the target (same filesystem),
then renamed over it in one step, so a killed writer never leaves a half-written file or folder under the
real name. Used by checkpoints, the features and logits caches, the downloads and the teacher's folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # temp folders beside a checkpoint; checkpoint.clean_stale_tmp removes leftovers

__all__ = ["TMP_PREFIX", "atomic_file", "tmp_dir_for", "atomic_dir", "commit_dir"]


@contextmanager
def atomic_file(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temp file beside ``path`` to write; a clean exit renames it to ``path``, an exception
    (a failed write, a failed check of what was written) removes it and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tmp_dir_for(final: Path) -> Path:
    """Where ``atomic_dir`` fills ``final``: known to every rank, while one of them makes it."""
    return final.parent / f"{TMP_PREFIX}{final.name}"


def atomic_dir(final: Path) -> Path:
    """A fresh temp folder next to ``final`` (same filesystem, so ``commit_dir``'s rename is atomic)."""
    tmp = tmp_dir_for(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Put the folder ``tmp`` at ``final`` with one rename."""
    # rename() cannot replace a non-empty folder: move the old one aside first, then drop it.
    old = None
    if final.exists():
        old = final.parent / f"{TMP_PREFIX}old-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:  # the new folder is in place: a failed clean-up leaves garbage, not an error
        shutil.rmtree(old, ignore_errors=True)
