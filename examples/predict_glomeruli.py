"""Predict test slides with a run's fold ensemble (+ TTA) and write a Kaggle submission.csv.

    python examples/predict_glomeruli.py --checkpoints runs/<name>            # the run's data
    python examples/predict_glomeruli.py --checkpoints runs/<name> --data /path/to/hubmap-kidney-segmentation
    python examples/predict_glomeruli.py --checkpoints runs/<name> --dask 2   # slides in parallel

The code is the package examples/glomeruli (see examples/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.glomeruli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
