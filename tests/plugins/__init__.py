"""Parts of a 'user's own' that tests register from OUTSIDE the wav2emo package (see test_extension.py)."""
