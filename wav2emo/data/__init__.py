"""Corpora, audio loading and speaker folds."""
