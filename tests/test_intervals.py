"""The statistics of issue 21 against known answers: speaker-bootstrap intervals, paired permutation tests over
speakers, McNemar, Holm; and their refusal of input they cannot score."""

from __future__ import annotations

import numpy as np
import pytest

from wav2emo.errors import UserError
from wav2emo.reports.intervals import (
    BootstrapSettings,
    IntervalError,
    scores_of_confusions,
    speaker_confusions,
    speaker_intervals,
    utterance_intervals,
)
from wav2emo.reports.metrics import metrics_from_confusion
from wav2emo.reports.paired import holm, mcnemar, paired_difference
from wav2emo.reports.per_corpus import corpus_metrics

NAMES = ["neutral", "happy", "sad", "angry"]


def synthetic(g, speakers=20, per_class=10, mean_acc=0.6, spread=0.0, classes=4):
    """Balanced clips; speaker s answers right with probability a_s (Beta around ``mean_acc``; ``spread`` 0:
    every speaker the same), else a wrong class at random. The population's UA is ``mean_acc``."""
    if spread:
        k = mean_acc * (1 - mean_acc) / spread**2 - 1
        acc = g.beta(mean_acc * k, (1 - mean_acc) * k, speakers)
    else:
        acc = np.full(speakers, mean_acc)
    spk = np.repeat(np.arange(speakers), classes * per_class)
    y = np.tile(np.repeat(np.arange(classes), per_class), speakers)
    right = g.random(len(y)) < acc[spk]
    wrong = (y + g.integers(1, classes, len(y))) % classes
    return spk, y, np.where(right, y, wrong)


@pytest.mark.parametrize("seed", range(5))
def test_batched_scores_equal_the_report_metrics(seed):
    """The vectorised metrics of the bootstrap are the report's metrics, absent classes included."""
    g = np.random.default_rng(seed)
    for _ in range(40):
        cm = g.integers(0, 4, (4, 4))
        cm[g.integers(0, 4)] = 0  # a class without clips (sometimes predicted)
        if seed % 2:
            cm[:, 3], cm[3] = 0, 0  # a class in neither labels nor predictions
        ref, ours = metrics_from_confusion(cm, NAMES), scores_of_confusions(cm)
        for m in ("ua", "wa", "f1"):
            assert ours[m] == pytest.approx(ref[m], nan_ok=True)
        y = np.repeat(np.arange(4), cm.sum(1))
        p = np.concatenate([np.repeat(np.arange(4), row) for row in cm])
        own = corpus_metrics(y, p, NAMES)
        assert scores_of_confusions(cm, own_classes=True)["ua"] == pytest.approx(own["ua"], nan_ok=True)


def test_interval_brackets_the_pooled_estimate_and_names_its_method():
    spk, y, p = synthetic(np.random.default_rng(0), spread=0.15)
    iv = speaker_intervals(spk, y, p, NAMES, BootstrapSettings(resamples=500))
    pooled = metrics_from_confusion(speaker_confusions(spk, y, p, 4)[1].sum(0), NAMES)
    for m in ("ua", "wa", "f1"):
        assert iv[m]["estimate"] == pytest.approx(pooled[m])
        assert iv[m]["low"] < iv[m]["estimate"] < iv[m]["high"]
    assert set(iv["per_class_recall"]) == set(NAMES)
    assert iv["speakers"] == 20 and iv["reliable"] and iv["note"] is None
    assert "over test speakers" in iv["method"] and "500 resamples, seed 0" in iv["method"]
    again = speaker_intervals(spk, y, p, NAMES, BootstrapSettings(resamples=500))
    assert again["ua"] == iv["ua"]  # same seed, same interval


def test_speaker_bootstrap_is_wider_than_an_utterance_bootstrap_when_speakers_differ():
    settings = BootstrapSettings(resamples=1000)

    def ratio(spread):
        spk, y, p = synthetic(np.random.default_rng(1), speakers=24, spread=spread)
        s, u = speaker_intervals(spk, y, p, NAMES, settings), utterance_intervals(y, p, NAMES, settings)
        return (s["ua"]["high"] - s["ua"]["low"]) / (u["ua"]["high"] - u["ua"]["low"])

    assert ratio(0.2) > 1.6  # speakers differ: their clips are not independent draws
    assert ratio(0.0) < 1.3  # control: every speaker alike, both bootstraps see the same spread


def test_fewer_than_five_speakers_is_flagged_unreliable():
    spk, y, p = synthetic(np.random.default_rng(2), speakers=4)
    iv = speaker_intervals(spk, y, p, NAMES, BootstrapSettings(resamples=200))
    assert not iv["reliable"] and "only 4 test speaker(s)" in iv["note"]


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(IntervalError, match="no test clips"):
        speaker_intervals([], [], [], NAMES)
    with pytest.raises(IntervalError, match="3 speaker ids, 2 labels"):
        speaker_intervals([1, 1, 2], [0, 1], [0, 1], NAMES)
    with pytest.raises(IntervalError, match="class index 7 outside 0..3"):
        speaker_intervals([1, 2], [0, 7], [0, 1], NAMES)
    with pytest.raises(IntervalError, match="resamples=10"):
        BootstrapSettings(resamples=10)
    with pytest.raises(IntervalError, match="unknown key"):
        BootstrapSettings.from_config({"bootstrap_resample": 100})
    with pytest.raises(IntervalError, match="method='bca'"):
        BootstrapSettings(method="bca")
    assert issubclass(IntervalError, UserError)


def test_identical_predictions_differ_by_zero_with_p_one():
    spk, y, p = synthetic(np.random.default_rng(3))
    _, cms = speaker_confusions(spk, y, p, 4)
    d = paired_difference(cms, cms, BootstrapSettings(resamples=200))
    for m in ("ua", "wa", "f1"):
        assert d[m]["estimate"] == 0 and d[m]["low"] == 0 and d[m]["high"] == 0 and d[m]["p"] == 1.0


def test_a_model_right_where_the_other_is_wrong_on_most_speakers_has_a_small_p():
    g = np.random.default_rng(4)
    spk, y, p_b = synthetic(g, speakers=20, mean_acc=0.5)
    better = np.isin(spk, np.arange(16))  # on 16 of 20 speakers A fixes 60 % of B's errors
    p_a = np.where(better & (g.random(len(y)) < 0.6), y, p_b)
    _, a = speaker_confusions(spk, y, p_a, 4)
    _, b = speaker_confusions(spk, y, p_b, 4)
    d = paired_difference(a, b, BootstrapSettings(resamples=1000))
    assert d["ua"]["estimate"] > 0.1 and d["ua"]["low"] > 0 and d["ua"]["p"] < 0.001
    control = paired_difference(b, b, BootstrapSettings(resamples=200))  # no change: nothing found
    assert control["ua"]["p"] == 1.0


def test_permutation_test_is_exact_for_few_speakers():
    """Five speakers, A better on every one: 2^5 = 32 block swaps, the two extreme ones as extreme as observed,
    so the exact two-sided p is 2/32 (never below 0.05 with five speakers: the report says so by its number)."""
    g = np.random.default_rng(5)
    spk, y, p_b = synthetic(g, speakers=5, mean_acc=0.4)
    p_a = np.where(g.random(len(y)) < 0.5, y, p_b)
    _, a = speaker_confusions(spk, y, p_a, 4)
    _, b = speaker_confusions(spk, y, p_b, 4)
    assert all(np.trace(x) > np.trace(z) for x, z in zip(a, b, strict=True))
    d = paired_difference(a, b, BootstrapSettings(resamples=200))
    assert d["ua"]["p"] == pytest.approx(2 / 32) and "exact" in d["test"]


def test_mcnemar_by_hand():
    r = mcnemar([True] * 10 + [False] * 5, [False] * 10 + [False] * 5)
    assert r["only_a_correct"] == 10 and r["only_b_correct"] == 0
    assert r["p"] == pytest.approx(2 * 0.5**10)
    assert mcnemar([True, False], [True, False])["p"] == 1.0


def test_holm_step_down_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # monotone: never below an earlier step
    assert holm([]) == []


@pytest.mark.slow
def test_speaker_interval_covers_the_true_ua_about_95_percent_of_draws():
    """Synthetic corpora whose population UA is known (0.6): the 95 % interval covers it in ~95 % of draws;
    an utterance bootstrap on the same draws covers it far less often (its intervals are too narrow)."""
    g = np.random.default_rng(6)
    settings = BootstrapSettings(resamples=1000)
    hits, utter_hits, draws = 0, 0, 300
    for i in range(draws):
        spk, y, p = synthetic(g, speakers=24, mean_acc=0.6, spread=0.15)
        s = speaker_intervals(spk, y, p, NAMES, BootstrapSettings(resamples=1000, seed=i))["ua"]
        u = utterance_intervals(y, p, NAMES, settings)["ua"]
        hits += s["low"] <= 0.6 <= s["high"]
        utter_hits += u["low"] <= 0.6 <= u["high"]
    assert 0.88 <= hits / draws <= 0.99, hits / draws
    assert utter_hits / draws < hits / draws - 0.15, (utter_hits / draws, hits / draws)
