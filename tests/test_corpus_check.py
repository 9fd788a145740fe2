"""python -m wav2emo.corpus: what a corpus holds, before any extraction (text, and --json for scripts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from tests.corpus_trees import tone
from wav2emo.corpus import run

CONF = Path(__file__).resolve().parents[1] / "conf"
REPO = Path(__file__).resolve().parents[1]


def natural_folder(root: Path) -> Path:
    """Four speakers: two carry every emotion, two carry one each (a natural corpus's shape); one bad name."""
    plan = {"spk01": ("angry", "happy", "sad"), "spk02": ("angry", "happy", "sad"), "spk03": ("sad",),
            "spk04": ("happy",)}
    k = 0
    for spk, emotions in plan.items():
        for e in emotions:
            for take in range(2):
                tone(root / e / f"{spk}_take{take}.wav", seed=k, sr=16000 if k % 3 else 22050)
                k += 1
    tone(root / "sad" / "noname.wav")
    return root


def test_corpus_check_text_names_narrow_speakers_and_set_aside_files(tmp_path, capsys):
    root = natural_folder(tmp_path / "mine")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("corpus", overrides=["data=folder", f"data.corpus.root={root}", f"paths.cache_dir={tmp_path}/c",
                                           "data.corpus.require_complete=false"])
    s = run(cfg)
    out = capsys.readouterr().out
    assert s["clips"] == 16 and s["speakers"] == 4 and s["sample_rates"] == {16000: 10, 22050: 6}
    assert s["speaker_emotion_table"]["spk03"] == {"happy": 0, "sad": 2, "angry": 0}
    assert s["narrow_speakers"] == {"spk03": ["sad"], "spk04": ["happy"]}
    assert "WARNING: 2 of 4 speakers carry 2 emotions or fewer" in out and "spk03 (sad)" in out
    assert "set aside: paths where speaker_regex" in out and "noname.wav" in out
    assert s["usual_folds"]["folds"] == 4 and "leave-one-speaker-out" in s["usual_folds"]["protocol"]


def test_corpus_check_json_on_stdout(tmp_path):
    root = natural_folder(tmp_path / "mine")
    env = {**os.environ, "WAV2EMO_CACHE_DIR": str(tmp_path / "c"), "WAV2EMO_LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run([sys.executable, "-m", "wav2emo.corpus", "data=folder", f"data.corpus.root={root}",
                           "data.corpus.require_complete=false", "--json"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["clips"] == 16 and len(s["set_aside"]) == 1 and set(s["narrow_speakers"]) == {"spk03", "spk04"}
    refused = subprocess.run([sys.executable, "-m", "wav2emo.corpus", "data=folder", f"data.corpus.root={root}",
                              "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "noname.wav" in refused.stderr and "require_complete=false" in refused.stderr
    assert not (tmp_path / "logs" / "corpus").exists()  # a check leaves no empty Hydra run folders behind
