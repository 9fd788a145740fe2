"""Corpora, manifests and folds: from a corpus copy on disk to one fold's train/dev/test manifests.

Entries for the rest of the package: :func:`wav2emo.data.corpora.load_corpus`, :func:`wav2emo.data.folds.build_folds`
and :func:`wav2emo.data.folds.assemble_fold`; a corpus recipe or fold protocol of your own registers through
:mod:`wav2emo.data.registry`.  This package may import only ``wav2emo.errors``, ``wav2emo.registry`` and
third-party libraries.
"""
