"""Files that must be right: the bottom layer, used by every stage above it.

    atomic.py      write beside, then rename: checkpoints, caches and downloads land whole or not at all
    checksums.py   file sha256 and SHA256SUMS folders (checkpoints, the shipped model, downloads)
    run_record.py  squad_qa.json: what a run or model folder was trained with, and its metrics
    download.py    the SQuAD files into data/, sha256-checked (`squad-qa download`)
"""
