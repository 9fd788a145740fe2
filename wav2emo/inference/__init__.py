"""Using trained models on new audio (``python -m wav2emo.predict``): reading recordings of any length in
stretches, windowing, restoring checkpoints, computing features in memory, batching, writing predictions.

May import everything below it: data, features, backbones, models, feeding, training, reports, runs.
Only the ``wav2emo.predict`` command and export import it.
"""
