"""Cross-validation reports: aggregates, tables and figures from the folds' result files, and a fold's results handed to its loggers.

May import: features (the wording of the normalisation protocol) and the package root's errors and files.
Never imports models, feeding, training or runs.
"""
