"""``python -m wav2emo.layers`` on the synthetic corpus: a single-layer head per hidden state and the
layer-weighted head over the folds, ending in layers.{json,md,png} with the learned weights."""

from __future__ import annotations

import json

import pytest

from tests.test_predict import FAST

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_layer_analysis_gives_a_ua_per_hidden_state_and_the_learned_weights(tmp_path):
    from wav2emo.layers import main

    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    status = main([*FAST, *paths, "features.ssl.time_pooled=true", "--folds", "0", "1", "--out", str(tmp_path / "la")])
    assert status == 0
    report = json.loads((tmp_path / "la" / "layers.json").read_text())
    assert [r["layer"] for r in report["layers"]] == [0, 1, 2, 3]  # the tiny backbone's 4 hidden states
    assert report["folds"] == [0, 1]
    for r in report["layers"]:
        assert len(r["ua_per_fold"]) == 2 and all(0.0 <= u <= 1.0 for u in r["ua_per_fold"])
    weights = [r["weight_mean"] for r in report["layers"]]
    assert sum(weights) == pytest.approx(1.0) and all(w >= 0 for w in weights)
    assert len(report["layer_weighted"]["ua_per_fold"]) == 2
    assert (tmp_path / "la" / "layers.png").stat().st_size > 1000
    assert "| 3 | layer_03 |" in (tmp_path / "la" / "layers.md").read_text()
    assert (tmp_path / "la" / "layer_02" / "fold_1" / "fold_result.json").is_file()


def test_layer_analysis_refuses_a_model_override(tmp_path):
    from wav2emo.errors import ConfigError
    from wav2emo.layers import analyse_layers

    with pytest.raises(ConfigError, match="model=fe_vgg: the layer analysis chooses the model"):
        analyse_layers(["model=fe_vgg"], tmp_path)
