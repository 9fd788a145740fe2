"""Cross-validation reports: aggregates, tables and figures from the folds' result files."""
