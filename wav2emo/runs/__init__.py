"""Runs: ``train(cfg)`` over the requested folds, the config resolved once into a fold's plan (``plan.py``), one
fold's train/dev/test, building its pieces from the plan, testing a saved checkpoint, and what every run records
(output folders, run info).

May import everything below it: data, features, backbones, augment, models, feeding, training, reports,
hpsearch. Only the entry points (``wav2emo/train.py``, ``eval.py``, ...), crosscorpus and inference import it.
"""
