"""Cross-validation reports: aggregates, tables and figures from the folds' result files, and a fold's results handed to its loggers."""
