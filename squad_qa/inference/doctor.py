"""``squad-qa doctor``: one screen for a bug report, and a check that this install is the tested one.

    python / torch / transformers / tokenizers / numpy / fastapi / uvicorn   against requirements/lock.txt
    cpu            the model name, the instruction sets that matter (AVX2, AVX512, AVX512-BF16, AMX)
    dtype auto     what `--dtype auto` computes in here (bfloat16 only with native support)
    packing        whether packed batches pass their probe (QAReader.probe_packing) with the shipped model
    shipped model  its SHA256SUMS checked, and model.safetensors' sha256
    data/          the SQuAD files, each checked against its known sha256

Exit 0 when every line is ok, 1 with the failing lines repeated at the end. A version that differs
from the lock is a failing line: the suite has not passed on it (``bash scripts/setup.sh`` installs
the lock; ``scripts/check_latest.sh`` tries the newest releases).
"""

from __future__ import annotations

import argparse
import logging
import platform
from importlib import metadata
from pathlib import Path

from squad_qa.files.lockfile import canonical, read_lock

PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "fastapi", "uvicorn", "onnxruntime", "onnx")


def cpu_report() -> tuple[str, list[str]]:
    """The CPU's model name and which of the instruction sets that decide our kernels it has."""
    import torch

    from squad_qa.model.cpu import cpu_info

    name, flags = cpu_info()
    isa = [label for label, flag in (("AVX2", "avx2"), ("AVX512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                                     ("AMX", "amx_bf16")) if flag in flags]
    isa.append(f"torch kernels: {torch.backends.cpu.get_cpu_capability()}")
    return name, isa


def checks(model_dir: Path | None, data_dir: Path) -> list[tuple[bool, str, str]]:
    """(ok, what, detail) for every line of the report."""
    from squad_qa.files.checksums import ChecksumError, file_sha256, read_checksums
    from squad_qa.files.download import DEFAULT_FILES, KNOWN_SHA256
    from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint, resolve_model_dir
    from squad_qa.model.compute import resolve_dtype
    from squad_qa.model.cpu import cpu_kind, model_threads, serving_recipe

    out: list[tuple[bool, str, str]] = [(True, "python", platform.python_version())]
    lock = read_lock()
    for name in PACKAGES:
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append((False, name, "not installed"))
            continue
        want = lock.get(canonical(name))
        if not lock:
            out.append((True, name, f"{have} (no lock file: installed as a library)"))
        elif want == have:
            out.append((True, name, f"{have} (as locked)"))
        else:
            out.append((False, name, f"{have}, the lock has {want}: untested here (bash scripts/setup.sh installs the lock)"))
    cpu, isa = cpu_report()
    out.append((True, "cpu", f"{cpu}; {', '.join(isa)}"))
    out.append((True, "dtype auto", str(resolve_dtype("auto", "cpu")).removeprefix("torch.")))
    recipe = serving_recipe()
    out.append((True, "serve --backend auto", f"{recipe.backend}{', int8' if recipe.quantize else ''}"
                f"{', dtype ' + recipe.dtype if recipe.backend == 'torch' else ''} on {cpu_kind()} with "
                f"{model_threads()} threads ({recipe.why})"))

    path = resolve_model_dir(model_dir)
    try:  # checked and hashed once; the reader below loads the checked folder without hashing it again
        folder = check_qa_checkpoint(path, hint=False)
        digest = read_checksums(folder.path).get("model.safetensors")
        if digest is None:
            raise ChecksumError(f"{path} has no SHA256SUMS line for model.safetensors")
        out.append((True, "model", f"{path}: SHA256SUMS ok, model.safetensors {digest}"))
    except (CheckpointError, ChecksumError, OSError) as e:
        out.append((False, "model", str(e)))
    else:
        from squad_qa.inference.reader import QAReader
        from squad_qa.model.packing import enable_packing, supports_packing

        reader = QAReader.from_pretrained(folder, device="cpu", packed=False)  # packed below, to hear the probe
        if not supports_packing(reader.model):
            out.append((True, "packing", f"not used for {type(reader.model).__name__}: padded batches"))
        else:
            enable_packing(reader.model)
            problem = reader.probe_packing()
            out.append((problem is None, "packing", "probe passed: packed batches" if problem is None
                        else f"probe failed, padded batches: {problem}"))

    for name in DEFAULT_FILES:
        f = data_dir / name
        if not f.is_file():
            out.append((False, f"data/{name}", f"missing (python scripts/download_squad.py --out {data_dir})"))
        elif file_sha256(f) not in KNOWN_SHA256[name]:
            out.append((False, f"data/{name}", "sha256 unknown: damaged or not the SQuAD file"))
        else:
            out.append((True, f"data/{name}", "ok"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="squad-qa doctor", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    p.add_argument("--data_dir", type=Path, default=Path("data"), help="where the SQuAD files are (default: data/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the report says it all; warnings would repeat it
    rows = checks(args.model, args.data_dir)
    width = max(len(what) for _, what, _ in rows)
    for ok, what, detail in rows:
        print(f"{'ok  ' if ok else 'FAIL'}  {what:<{width}}  {detail}")
    failed = [f"{what}: {detail}" for ok, what, detail in rows if not ok]
    if failed:
        print(f"\n{len(failed)} failing: " + "; ".join(failed))
        return 1
    print("\nall well")
    return 0
