"""Speaker-independent folds: disjointness, coverage, dev choice, determinism, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wav2emo.data.errors import FoldError
from wav2emo.data.folds import build_folds
from wav2emo.data.manifest import Clip, Manifest
from wav2emo.data.protocols import LUNA_JIMENEZ_FOLDS, luna_jimenez_folds, speaker_kfold
from wav2emo.data.splits import SpeakerFolds, Split

CONF = Path(__file__).resolve().parents[1] / "conf" / "folds"
RAVDESS_GENDERS = {a: "male" if a % 2 else "female" for a in range(1, 25)}


def fake_manifest(genders: dict[int, str], clips_per_actor: int = 60) -> Manifest:
    """A manifest with only what the folds read (actor, gender); audio fields are placeholders."""
    placeholder = ("neutral", 0, 1, 1, 1, 3.0, 16000, 1, 48000, "")  # emotion .. sha1
    clips = [
        Clip(f"c{a:03d}-{i:02d}", f"/none/{a}/{i}.wav", "fake", a, g, *placeholder)
        for a, g in sorted(genders.items())
        for i in range(clips_per_actor)
    ]
    return Manifest(clips, name="fake")


def test_luna_jimenez_folds_partition_the_actors():
    folds = luna_jimenez_folds(RAVDESS_GENDERS)
    assert folds.num_folds == 5 and len(folds) == 5
    tested = []
    for k in range(5):
        s = folds.split(k)
        assert isinstance(s, Split) and s.fold == k
        assert list(s.test) == sorted(LUNA_JIMENEZ_FOLDS[k])
        assert (
            not set(s.train) & set(s.dev) and not set(s.train) & set(s.test) and not set(s.dev) & set(s.test)
        )
        assert set(s.train) | set(s.dev) | set(s.test) == set(range(1, 25))
        assert list(s.train) == sorted(s.train) and list(s.dev) == sorted(s.dev)
        tested += s.test
    assert sorted(tested) == list(range(1, 25))  # every actor tested exactly once


def test_fold_4_has_4_test_actors_and_240_clips():
    manifest = fake_manifest(RAVDESS_GENDERS)
    s = build_folds({"name": "luna_jimenez", "test_actors": LUNA_JIMENEZ_FOLDS}, manifest).split(4)
    assert s.test == (1, 4, 9, 22)
    assert sum(c.actor in s.test for c in manifest) == 240
    assert len(s.train) == 24 - 4 - 2


@pytest.mark.parametrize("n_dev", [2, 4])
def test_dev_actors_are_gender_balanced(n_dev):
    for s in luna_jimenez_folds(RAVDESS_GENDERS, n_dev_actors=n_dev):
        genders = [RAVDESS_GENDERS[a] for a in s.dev]
        assert len(s.dev) == n_dev
        assert genders.count("male") == genders.count("female") == n_dev // 2


def test_odd_dev_count_alternates_the_extra_gender_by_fold():
    extra = []
    for s in luna_jimenez_folds(RAVDESS_GENDERS, n_dev_actors=3):
        genders = [RAVDESS_GENDERS[a] for a in s.dev]
        assert len(s.dev) == 3
        extra.append("male" if genders.count("male") == 2 else "female")
    assert extra == ["male", "female", "male", "female", "male"]


def test_dev_choice_is_deterministic_and_follows_the_seed():
    a = [s.dev for s in luna_jimenez_folds(RAVDESS_GENDERS, dev_seed=0)]
    b = [s.dev for s in luna_jimenez_folds(RAVDESS_GENDERS, dev_seed=0)]
    c = [s.dev for s in luna_jimenez_folds(RAVDESS_GENDERS, dev_seed=1)]
    assert a == b
    assert a != c


def test_dev_choice_does_not_depend_on_the_test_actors():
    """Relabelling the test actors of a fold (new ids, same genders) leaves its dev actors unchanged."""
    base = luna_jimenez_folds(RAVDESS_GENDERS)
    for k in range(5):
        test = LUNA_JIMENEZ_FOLDS[k]
        relabel = {a: 100 + a for a in test}
        genders = {relabel.get(a, a): g for a, g in RAVDESS_GENDERS.items()}
        folds = [[relabel.get(a, a) for a in f] for f in LUNA_JIMENEZ_FOLDS]
        moved = SpeakerFolds(folds, genders, n_dev_actors=2, dev_seed=0).split(k)
        assert moved.dev == base.split(k).dev
        assert moved.train == base.split(k).train
        assert moved.test == tuple(sorted(100 + a for a in test))


def test_no_dev_set():
    for s in luna_jimenez_folds(RAVDESS_GENDERS, n_dev_actors=0):
        assert s.dev == ()
        assert len(s.train) + len(s.test) == 24


def test_generic_kfold_on_a_made_up_corpus():
    genders = {a: ("female" if a in (11, 14, 17, 20) else "male") for a in range(11, 21)}  # 6 male, 4 female
    folds = speaker_kfold(genders, k=3, seed=5)
    sizes = sorted(len(f) for f in folds.test_folds)
    assert sizes == [3, 3, 4]
    assert sorted(a for f in folds.test_folds for a in f) == list(range(11, 21))
    for f in folds.test_folds:  # stratified: the 4 women are spread, at most 2 per fold
        assert 1 <= sum(genders[a] == "female" for a in f) <= 2
    assert speaker_kfold(genders, k=3, seed=5).test_folds == folds.test_folds
    assert speaker_kfold(genders, k=3, seed=6).test_folds != folds.test_folds
    for s in folds:
        assert len(s.dev) == 2 and not set(s.dev) & set(s.test)
        assert {genders[a] for a in s.dev} == {"male", "female"}


def test_build_folds_reads_the_shipped_configs():
    manifest = fake_manifest(RAVDESS_GENDERS, clips_per_actor=1)
    lj = build_folds(yaml.safe_load((CONF / "luna_jimenez.yaml").read_text()), manifest)
    assert [list(f) for f in lj.test_folds] == [sorted(f) for f in LUNA_JIMENEZ_FOLDS]
    assert lj.split(0).dev == luna_jimenez_folds(RAVDESS_GENDERS).split(0).dev
    kf = build_folds({"folds": yaml.safe_load((CONF / "speaker_kfold.yaml").read_text())}, manifest)
    assert kf.num_folds == 5 and kf.name == "speaker_kfold"
    assert sorted(len(f) for f in kf.test_folds) == [4, 5, 5, 5, 5]


def test_build_folds_names_actors_the_manifest_lacks():
    manifest = fake_manifest({a: g for a, g in RAVDESS_GENDERS.items() if a <= 12}, clips_per_actor=1)
    with pytest.raises(FoldError, match=r"need actors \[13, 14"):
        build_folds({"name": "luna_jimenez"}, manifest)
    with pytest.raises(FoldError, match="expected test_actors"):
        build_folds({"name": "mystery"}, manifest)


def test_invalid_folds_are_refused_with_the_offenders_named():
    with pytest.raises(FoldError, match="actor 2 in folds 0 and 1"):
        SpeakerFolds([[1, 2], [2, 3]], {1: "male", 2: "female", 3: "male"}, n_dev_actors=0)
    with pytest.raises(FoldError, match=r"actors \[9\] are in the folds"):
        SpeakerFolds([[1], [9]], {1: "male", 2: "female"}, n_dev_actors=0)
    with pytest.raises(FoldError, match=r"actors \[3\] are in the corpus but in no fold"):
        SpeakerFolds([[1], [2]], {1: "male", 2: "female", 3: "male"}, n_dev_actors=0)
    with pytest.raises(FoldError, match="too few"):
        SpeakerFolds([[1], [2, 3]], {1: "male", 2: "female", 3: "male"}, n_dev_actors=2)
    folds = luna_jimenez_folds(RAVDESS_GENDERS)
    for bad in (5, -1, 1.0):
        with pytest.raises(FoldError, match=r"expected an integer 0\.\.4"):
            folds.split(bad)
    with pytest.raises(FoldError, match=r"k=1"):
        speaker_kfold(RAVDESS_GENDERS, k=1)
    with pytest.raises(FoldError, match=r"k=30"):
        speaker_kfold(RAVDESS_GENDERS, k=30)
