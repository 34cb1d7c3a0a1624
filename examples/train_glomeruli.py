"""Train glomerulus segmentation with patient-grouped k-fold CV and stitched whole-slide Dice.

    python examples/train_glomeruli.py                      # synthetic data, about 6 minutes on 2 cores
    python examples/train_glomeruli.py --data /path/to/hubmap-kidney-segmentation --reduce 4
    torchrun --nproc_per_node 2 examples/train_glomeruli.py --samples-per-epoch 512
    python examples/train_glomeruli.py --help               # every flag

Writes runs/<name>/ (config, metrics, learning curves, overlays, out-of-fold Dice, fold<i>.pt)
and appends a row to runs/experiments.md. Rerunning the same command resumes an interrupted run.
The code is the package examples/glomeruli (see examples/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.glomeruli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
