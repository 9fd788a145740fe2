"""The training loop of one fold: the LightningModule (loss, optimiser, metrics), its parameter groups and
schedules, the CUDA-graphed step and the fast-path settings, callbacks, checkpoint loading, several processes, and
the test pass of a fold (test_pass.py: the trainer's test, the predictions file, the test metrics).

May import: errors, data (label names), models, reports (the one definition of the metrics, the predictions file,
the speaker intervals). Never imports feeding, runs or the entry points.
"""
