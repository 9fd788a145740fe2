"""Feeding a model: what one clip of a split is (input strategies), how clips become batches (collate,
length buckets, the resident split on the GPU), where a fold's features live during training, per-speaker
normalisation, the rule from (model inputs, fine-tuning, augmentation) to the batch keys, and the Lightning
data module that serves one speaker fold.

May import: errors, data, features, backbones, augment, models. Never imports training, runs or reports.
"""
