#!/usr/bin/env python
"""Fetch the SQuAD files into data/ (or copy them with --from DIR) and check their sha256."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.files.download import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
