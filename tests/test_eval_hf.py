"""python -m wav2emo.eval_hf: a published AutoModelForAudioClassification on the folds (label mapping, unmapped
emotions counted, batched = direct forward pass, the same per-fold files and CV report, the seen-actors warning).

The "published" checkpoint is a tiny, randomly initialised Wav2Vec2ForSequenceClassification saved locally with
its own id2label (ang, hap, neu, sad and a label that names no emotion) and an 8 kHz feature extractor, so the
16 kHz synthetic corpus is resampled on the way in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tests.helpers import compose_cfg
from wav2emo.errors import ConfigError

MODEL_LABELS = ["ang", "hap", "neu", "sad", "xyz"]
MAPPED = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}
RATE = 8000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    from wav2emo.backbones.tiny import tiny_wav2vec2_config

    folder = tmp_path_factory.mktemp("hf_classifier") / "tiny-ser"
    config = tiny_wav2vec2_config(num_labels=len(MODEL_LABELS), id2label=dict(enumerate(MODEL_LABELS)),
                                  label2id={n: i for i, n in enumerate(MODEL_LABELS)}, classifier_proj_size=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Wav2Vec2ForSequenceClassification(config)
        for p in model.classifier.parameters():  # larger head weights: the random model's labels differ by clip
            p.data.mul_(50)
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_hf_shared")
    return root / "data", root / "cache"


def hf_cfg(tmp_path, dirs, folder, *extra):
    label_map = "{" + ", ".join(f"{k}: {v}" for k, v in MAPPED.items()) + "}"
    return compose_cfg(["data=synthetic", "data.corpus.clips_per_actor=8", f"hf_model={folder}",
                        f"label_map={label_map}", "device=cpu", "progress=false", *extra],
                       tmp_path, *dirs, config_name="eval_hf")


@pytest.fixture(scope="module")
def all_folds(tmp_path_factory, dirs, hf_folder):
    from wav2emo.external.hf_eval import evaluate_hf

    out = tmp_path_factory.mktemp("eval_hf_run")
    cfg = hf_cfg(out, dirs, hf_folder, "fold=[0,1]", "batch_size=7")
    return evaluate_hf(cfg), out


def test_labels_map_and_unmapped_emotions_are_counted_never_dropped(all_folds):
    metrics, out = all_folds
    seen_clips, unscored_total = set(), 0
    for fold in (0, 1):
        d = out / f"fold_{fold}"
        r = json.loads((d / "fold_result.json").read_text())
        mapping = r["protocol"]["label_mapping"]
        assert mapping["model_labels"] == {**MAPPED, "xyz": None}
        assert "not an emotion name" in mapping["unmapped_model_labels"]["xyz"]
        assert mapping["unmapped_emotions"] == ["calm", "fearful", "disgust", "surprised"]
        assert r["class_names"] == ["neutral", "happy", "sad", "angry"]  # the corpus's order
        assert "may have been seen" in r["protocol"]["warning"] and r["protocol"]["sampling_rate"] == RATE
        preds, unscored = pd.read_csv(d / "predictions.csv"), pd.read_csv(d / "unscored.csv")
        assert set(preds["true"]) == set(MAPPED.values()) and set(unscored["true"]) == set(mapping["unmapped_emotions"])
        assert r["unmapped"]["clips"] == len(unscored) and sum(r["unmapped"]["by_emotion"].values()) == len(unscored)
        assert r["unmapped"]["by_emotion"] == unscored["true"].value_counts().to_dict()
        assert r["test_clips"] == len(preds) and r["split"]["clips"]["test"] == len(preds) + len(unscored)
        assert set(preds["actor"]) | set(unscored["actor"]) == set(r["split"]["test_actors"])
        assert r["unmapped"]["top_label_unmapped_clips"] == int(
            (pd.concat([preds, unscored])["model_label"] == "xyz").sum())
        # The metrics are those of the written predictions.
        y, p = preds["label"].to_numpy(), preds["pred"].to_numpy()
        assert r["test"]["wa"] == pytest.approx((y == p).mean())
        seen_clips |= set(preds["clip_id"]) | set(unscored["clip_id"])
        unscored_total += len(unscored)
    assert len(seen_clips) == 10 * 8  # every clip of the two folds' ten test actors, once
    assert metrics["unmapped"]["clips"] == unscored_total == 10 * 4  # 4 of 8 emotions per actor


def test_report_files_and_the_seen_actors_warning(all_folds):
    _, out = all_folds
    for name in ("cv_report.json", "cv_report.md", "confusion_matrix.png"):
        assert (out / name).exists(), name
    for fold in (0, 1):
        for name in ("config.yaml", "git.json", "environment.json", "predictions.csv", "unscored.csv"):
            assert (out / f"fold_{fold}" / name).exists(), name
    report = json.loads((out / "cv_report.json").read_text())
    assert report["folds"] == [0, 1] and report["class_names"] == ["neutral", "happy", "sad", "angry"]
    assert report["pooled"]["clips"] == 10 * 4 and np.asarray(report["pooled"]["confusion_matrix"]).shape == (4, 4)
    ext = report["external_checkpoint"]
    assert "may have been seen" in ext["warning"] and ext["unmapped"]["clips"] == 10 * 4
    assert ext["unmapped"]["by_emotion"] == {e: 10 for e in ("calm", "fearful", "disgust", "surprised")}
    assert ext["checkpoint"]["source"] == "folder" and ext["checkpoint"]["model_class"] == \
        "Wav2Vec2ForSequenceClassification"
    md = (out / "cv_report.md").read_text()
    assert md.startswith("# Cross-validation report\n") and "may have been seen" in md.split("## Summary")[0]
    assert "xyz -> unmapped" in md and "40 test clips not scored" in md


def test_predictions_equal_a_direct_forward_pass(all_folds, hf_folder):
    """Batched, padded and patched for batch invariance, each clip's probabilities are those of the model run on
    that clip alone with Hugging Face's own feature extractor at its own rate."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from wav2emo.data.audio import resample

    _, out = all_folds
    model = AutoModelForAudioClassification.from_pretrained(hf_folder).eval()
    fe = AutoFeatureExtractor.from_pretrained(hf_folder)
    preds = pd.read_csv(out / "fold_0" / "predictions.csv")
    unscored = pd.read_csv(out / "fold_0" / "unscored.csv")
    corpus = ["neutral", "happy", "sad", "angry"]
    model_index = {v: MODEL_LABELS.index(k) for k, v in MAPPED.items()}
    for _, row in pd.concat([preds[:6], unscored[:6]]).iterrows():  # a few of each: a forward pass costs
        wave, sr = sf.read(row["file"], dtype="float32")
        assert sr == 16000
        wave = resample(wave, sr, RATE)
        with torch.no_grad():
            logits = model(**fe(wave, sampling_rate=RATE, return_tensors="pt")).logits[0].double()
        assert row["model_label"] == MODEL_LABELS[int(logits.argmax())]
        mapped = torch.softmax(logits[[model_index[c] for c in corpus]], 0).numpy()  # xyz counts for no class
        assert row["predicted"] == corpus[int(mapped.argmax())]
        if "prob_neutral" in row and not pd.isna(row.get("prob_neutral")):
            np.testing.assert_allclose(row[[f"prob_{c}" for c in corpus]].to_numpy(float), mapped, atol=1e-4)


def test_batched_logits_do_not_depend_on_the_batch(tmp_path, dirs, hf_folder, all_folds):
    from wav2emo.data.corpora import load_corpus
    from wav2emo.external.hf_classifier import load_hf_classifier
    from wav2emo.external.hf_predict import predict_logits
    from wav2emo.plain_config import to_container

    cfg = hf_cfg(tmp_path, dirs, hf_folder)  # the corpus the run above generated
    clf = load_hf_classifier(str(hf_folder))
    clips = list(load_corpus(to_container(cfg.data.corpus), cache_dir=cfg.paths.cache_dir))[:6]
    batched = predict_logits(clf, clips, batch_size=6, progress=False)
    alone = predict_logits(clf, clips, batch_size=1, progress=False)
    assert batched.shape == (6, len(MODEL_LABELS))
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    assert np.ptp(batched, axis=0).max() > 1e-2  # the clips' logits differ: a real test of the order


def test_score_mode_scores_every_clip_over_all_classes(tmp_path, dirs, hf_folder):
    from wav2emo.external.hf_eval import evaluate_hf

    metrics = evaluate_hf(hf_cfg(tmp_path, dirs, hf_folder, "fold=0", "unmapped_emotions=score"))
    r = json.loads((tmp_path / "fold_0" / "fold_result.json").read_text())
    assert len(r["class_names"]) == 8 and r["unmapped"]["clips"] == 0 and metrics["unmapped"]["clips"] == 0
    assert r["test_clips"] == r["split"]["clips"]["test"] == 40
    calm = next(c for c in r["test_per_class"] if c["class"] == "calm")
    assert calm["support"] == 5 and calm["recall"] == 0  # the model cannot predict it


def test_label_mapping_rules():
    from wav2emo.external.model_labels import build_label_mapping

    corpus = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    # By name (synonyms), an explicit null, two labels merged into one class, an emotion the corpus lacks.
    m = build_label_mapping({0: "Anger", 1: "hap", 2: "exc", 3: "neu", 4: "boredom"}, corpus,
                            {"exc": "happy", "neu": None})
    assert m.targets == ("angry", "happy", "happy", None, None)
    assert m.class_names == ("happy", "angry") and m.reasons["neu"].startswith("left out")
    assert "no 'boredom' clips" in m.reasons["boredom"]
    assert m.scored_label(corpus.index("angry")) == 1 and m.scored_label(corpus.index("neutral")) is None
    p = m.class_probabilities(np.log(np.array([[0.1, 0.2, 0.3, 0.3, 0.1]])))
    np.testing.assert_allclose(p, [[0.5 / 0.6, 0.1 / 0.6]])  # hap + exc, renormalised over mapped labels
    with pytest.raises(ConfigError, match=r"label_map keys \['angr'\] are not labels of this model"):
        build_label_mapping({0: "ang"}, corpus, {"angr": "angry"})
    with pytest.raises(ConfigError, match="label_map.ang='furious'"):
        build_label_mapping({0: "ang"}, corpus, {"ang": "furious"})
    with pytest.raises(ConfigError, match=r"none of the model's labels \['LABEL_0', 'LABEL_1'\].*label_map"):
        build_label_mapping({0: "LABEL_0", 1: "LABEL_1"}, corpus)
    with pytest.raises(ConfigError, match="unmapped_emotions='drop'"):
        build_label_mapping({0: "ang"}, corpus, scoring="drop")


def test_missing_models_say_what_to_do(tmp_path):
    from wav2emo.external.hf_classifier import ClassifierLoadError, load_hf_classifier

    with pytest.raises(ClassifierLoadError, match=r"HF_HUB_OFFLINE=1.*hf download nobody/no-such-ser-model.*folder"):
        load_hf_classifier("nobody/no-such-ser-model")
    with pytest.raises(ClassifierLoadError, match="no such folder"):
        load_hf_classifier(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassifierLoadError, match="no config.json"):
        load_hf_classifier(str(tmp_path / "empty"))


def test_command_line_error_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "WAV2EMO_LOG_DIR": str(tmp_path / "logs"),
           "WAV2EMO_DATA_DIR": str(tmp_path / "data")}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "wav2emo.eval_hf", "hf_model=nobody/no-such-ser-model",
                           "data=synthetic"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("wav2emo.eval_hf: error: hf_model=nobody/no-such-ser-model")
    assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()
