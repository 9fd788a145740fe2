"""Using trained models on new audio (``python -m wav2emo.predict``): reading recordings of any length in
stretches, windowing, restoring checkpoints, computing features in memory, batching, writing predictions."""
