"""Hyper-parameter search over whole cross-validations (``python -m wav2emo.train -m hparams_search=...``).

Each Optuna trial trains every fold of one configuration with ``test=false``; its objective is the mean over
folds of the dev actors' metric (``optimized_metric``, ``val/ua_best``), so the test actors never enter the
search. The study (Optuna 4) lives in the search's directory, in SQLite or a journal file, so the same command
resumes an interrupted search. At the end the best configuration is trained again on every fold with ``test=true``: its
cross-validation report is the one test of the search.

- :mod:`~wav2emo.hpsearch.sweeper`: the Hydra sweeper (trials, resume, pruned trials, the final run);
- :mod:`~wav2emo.hpsearch.space`: Hydra's sweep syntax as Optuna distributions;
- :mod:`~wav2emo.hpsearch.trial`: what a trial does inside ``train()`` (checks, pruning after each fold);
- :mod:`~wav2emo.hpsearch.study`: the storage, opening the study, counting and choosing trials, the final run's overrides;
- :mod:`~wav2emo.hpsearch.summary`: ``hpsearch.{json,md}`` in the search directory.

May import: reports and the package root's errors. Never imports training, runs or the entry points (runs
imports it: a trial reports after each fold).
"""
