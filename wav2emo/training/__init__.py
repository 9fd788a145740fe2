"""The training loop of one fold: the LightningModule (loss, optimiser, metrics), its parameter groups and
schedules, the CUDA-graphed step and the fast-path settings, callbacks, checkpoint loading, several processes.

May import: errors, data (label names), models, reports.metrics (the one definition of the metrics). Never imports
feeding, runs or the entry points.
"""
