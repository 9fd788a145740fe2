"""The training loop of one fold: the LightningModule (loss, optimiser, metrics), its parameter groups and
schedules, the CUDA-graphed step and the fast-path settings, callbacks, checkpoint loading, several processes.

May import: errors, data (label names), models. Never imports feeding, runs, reports or the entry points.
"""
