"""Fetch the SQuAD files into ``data/`` and check them (``scripts/download_squad.py``).

``python scripts/download_squad.py`` downloads the official v1.1 and v2.0 files;
``python scripts/download_squad.py --from ../shared/squad`` copies them from a local folder instead,
decompressing ``.json.gz``. Every file is checked against the sha256 of its uncompressed JSON.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import shutil
import sys
import urllib.request
from pathlib import Path

from squad_qa.files.atomic import atomic_file
from squad_qa.files.checksums import ChecksumError, file_sha256

logger = logging.getLogger(__name__)

BASE_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"

# sha256 of the uncompressed JSON. The dev files are the official ones. "train-v1.1.json" has two
# known forms: the official file (id hashes) and the rebuild distributed in this project's shared
# folder (synthetic ids, see its README); either is accepted.
KNOWN_SHA256: dict[str, set[str]] = {
    "dev-v1.1.json": {"95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"},
    "dev-v2.0.json": {"80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8"},
    "train-v1.1.json": {
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",  # official
        "ea14a37a25fcab701bb388444cf1afb71829b855ef360b1deec82c9e1ca8d1ca",  # rebuild (shared/squad)
    },
    "train-v2.0.json": {"68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002"},
}
DEFAULT_FILES = ["train-v1.1.json", "dev-v1.1.json", "dev-v2.0.json"]


def _check(tmp: Path, name: str) -> str:
    digest = file_sha256(tmp)
    if digest not in KNOWN_SHA256.get(name, {digest}):
        raise ChecksumError(f"{name}: sha256 {digest} is not the known sum {sorted(KNOWN_SHA256[name])}")
    return digest


def fetch(name: str, out_dir: Path, source_dir: Path | None = None) -> Path:
    """Put ``name`` (e.g. ``dev-v1.1.json``) into ``out_dir``, verified; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / name
    if dest.is_file() and file_sha256(dest) in KNOWN_SHA256.get(name, set()):
        logger.info("%s already present and verified", dest)
        return dest
    with atomic_file(dest, ".part") as tmp:  # renamed to dest only once its sha256 is checked
        if source_dir is not None:
            plain, packed = source_dir / name, source_dir / f"{name}.gz"
            if packed.is_file():
                with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            elif plain.is_file():
                shutil.copyfile(plain, tmp)
            else:
                raise FileNotFoundError(f"neither {plain} nor {packed} exists")
        else:
            url = BASE_URL + name
            logger.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=60) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        digest = _check(tmp, name)
    logger.info("%s ok (sha256 %s)", dest, digest[:16])
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, help="copy from this folder (.json or .json.gz) instead of downloading")
    p.add_argument("--out", type=Path, default=Path("data"), help="target folder (default: data/)")
    p.add_argument("--files", nargs="+", default=DEFAULT_FILES, choices=sorted(KNOWN_SHA256), help="which files")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = 0
    for name in args.files:
        try:
            print(fetch(name, args.out, args.source))
        except (OSError, ChecksumError) as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
