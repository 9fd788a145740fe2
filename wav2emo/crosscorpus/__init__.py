"""Cross-corpus evaluation: every fold model of a run (neural or scikit-learn) tested on every clip of
another corpus, and the train-corpus x test-corpus matrix of a sweep.

May import everything below it (data, features, feeding, training, runs, baselines, reports). Nothing imports it but
the entry points (``python -m wav2emo.eval data=<other corpus>``).
"""
