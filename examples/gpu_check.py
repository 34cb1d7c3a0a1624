"""The GPU check (issue: is the GPU kept busy?): train-step images/s on synthetic tensors vs fed
by TileDataset, predict_slide Mpx/s, and the out-of-fold slide Dice of the recipe at full size.

    python examples/gpu_check.py                       # one CUDA GPU, about 7 minutes
    python examples/gpu_check.py --device cpu --steps 2 --epochs 1 --minutes 0   # smoke test

Writes runs/gpu-check/gpu_check.{md,json}. The code is examples/glomeruli/gpu_check.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.glomeruli.gpu_check import main

if __name__ == "__main__":
    raise SystemExit(main())
