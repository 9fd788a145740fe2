"""Classic scikit-learn baselines on wav2emo's speaker folds (``python -m wav2emo.baselines`` or
``python -m wav2emo.train model=sklearn_*``): the run over folds and the fitted models kept per fold.

May import: data, features, reports, runs (shared run folders and run info). Never imports training.
"""
