"""Shared test set-up: never touch the network, and share the corpora that tests build."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real RAVDESS copy kept beside the project (16 kHz FLAC); users will not have it, so tests skip.
RAVDESS_DIR = Path(os.environ.get("WAV2EMO_TEST_RAVDESS", REPO_ROOT.parent / "shared" / "data" / "ravdess16k"))


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    if not (RAVDESS_DIR / "Actor_01").is_dir():
        pytest.skip(f"real RAVDESS copy not found at {RAVDESS_DIR}")
    return RAVDESS_DIR


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A small synthetic RAVDESS-shaped corpus: 24 actors x 8 clips, generated once per session."""
    from wav2emo.data.synthetic import generate_synthetic_corpus

    root = tmp_path_factory.mktemp("synthetic") / "corpus"
    return generate_synthetic_corpus(root, seed=0, actors=range(1, 25), clips_per_actor=8)


@pytest.fixture(scope="session")
def synthetic_manifest(synthetic_corpus):
    from wav2emo.data.ravdess import prepare_ravdess

    return prepare_ravdess(synthetic_corpus, corpus_name="synthetic", require_complete=False)


def pytest_configure(config) -> None:
    # Tests whose numbers come from training (learning margins, exact resume, same seed same numbers):
    # CI reruns them under a second thread count, e.g. `OMP_NUM_THREADS=1 python -m pytest -m learning`.
    config.addinivalue_line(
        "markers", "learning: trains models and compares numbers; rerun under another thread count in CI"
    )


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A tiny random wav2vec2 saved to a folder (seed 0): the backbone the extraction and upstream tests load."""
    from wav2emo.backbones.tiny import build_tiny_wav2vec2

    return build_tiny_wav2vec2(tmp_path_factory.mktemp("bb") / "tiny", seed=0)
