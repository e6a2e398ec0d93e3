#!/usr/bin/env python
"""The GPU machine's command, and its rehearsal on the CPU: squad_qa/training/gpu_plan.py (docs/GPU.md).

    PYTHONPATH=. python scripts/gpu.py all --configs experiments/kd-baseline.json     # on the device
    python scripts/gpu.py rehearse                                                     # here, first
"""

from squad_qa.training.gpu_plan import main

if __name__ == "__main__":
    raise SystemExit(main())
