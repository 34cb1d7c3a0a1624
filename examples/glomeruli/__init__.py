"""Glomerulus segmentation on HuBMAP-layout slides: k-fold training with stitched whole-slide
validation, an experiment log, and a fold-ensemble submission.

Modules: ``config`` (the settings dataclasses and their command lines), ``data`` (datasets,
augmentation), ``models``, ``losses``, ``optim`` (optimizers, Lookahead, schedulers),
``distributed`` (torchrun/DDP), ``train`` (the loop), ``evaluate`` (stitched Dice, threshold
search), ``report`` (run folder files and the experiment log), ``predict`` (submission).
"""
