"""Runs: ``train(cfg)`` over the requested folds, one fold's train/dev/test, building its pieces from the
config, testing a saved checkpoint, and what every run records (output folders, run info).

May import everything below it: data, features, backbones, augment, models, feeding, training, reports,
hpsearch. Only the entry points (``wav2emo/train.py``, ``eval.py``, ...), crosscorpus and inference import it.
"""
