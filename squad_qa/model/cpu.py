"""This CPU: what kind it is, how many cores the model may use, and what serves fastest on it.

    cpu_info()        the model name and flags of /proc/cpuinfo
    cpu_kind()        "amx", "avx512-bf16", "avx512-vnni", "avx512", "avx2" or "other", from /proc/cpuinfo
    physical_cores()  the cores this process may run on, each counted once (hyper-threads are not)
    model_threads(n)  the threads policy: n, else the physical cores
    serving_recipe()  backend, int8 or not, and dtype for `squad-qa serve --backend auto`

The recipe per kind is a measurement, not a guess: docs/BENCHMARKS.md has the table it comes from.
Where ONNX Runtime is not installed, the recipe falls back to torch with dtype "auto".
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags, from /proc/cpuinfo (Linux; elsewhere the platform's name, no flags)."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = {}
    for line in lines:  # the first processor's lines; the others repeat them
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = frozenset(fields.get("flags", "").split())
    return name, flags


def cpu_kind(flags: frozenset[str] | None = None) -> str:
    """The kinds the project runs on, from the CPU's flags (Linux; elsewhere "other")."""
    flags = cpu_info()[1] if flags is None else flags
    if "amx_tile" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def physical_cores() -> int:
    """Cores this process may use, each physical core once: a hyper-thread shares its core's vector
    units, so a second matrix-product thread on it adds little and contends. Bounded by the
    process's CPU affinity and by a cgroup CPU quota (containers)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores)
    try:  # cgroup v2: "max 100000" or "200000 100000" (quota and period in microseconds)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def model_threads(threads: int | None = None) -> int:
    """The threads policy: intra-op threads for the model's matrix products = ``threads`` if given,
    else the physical cores. One model call runs at a time (service/batcher.py) and the tokenizer
    and the event loop are light, so this never asks for more threads than there are cores."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads or physical_cores()


@dataclass(frozen=True)
class Recipe:
    backend: str  # "torch" or "onnx"
    quantize: str | None  # "int8" or None
    dtype: str  # the torch backend's compute dtype; "float32" for onnx
    why: str


# Measured per CPU kind (docs/BENCHMARKS.md, "What serves by default"): the fastest variant whose
# full-dev F1 is within 0.3 of float32's.
RECIPES = {
    "avx2": Recipe("onnx", "int8", "float32", "ONNX Runtime int8 is the fastest measured on AVX2"),
}
DEFAULT_RECIPE = Recipe("onnx", "int8", "float32", "ONNX Runtime int8: fastest measured; not yet measured on this "
                                                   "CPU kind")


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def serving_recipe(kind: str | None = None) -> Recipe:
    """What `--backend auto` serves on this CPU kind (``cpu_kind()`` by default)."""
    kind = kind or cpu_kind()
    recipe = RECIPES.get(kind, DEFAULT_RECIPE)
    if recipe.backend == "onnx" and not onnxruntime_available():
        return Recipe("torch", None, "auto", "onnxruntime is not installed: torch, bfloat16 where native")
    return recipe
