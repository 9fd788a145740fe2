"""One way to extend wav2emo: a module of the user's that registers its parts plus one config each, with nothing
in the package edited. The toy parts live in tests/plugins/toy_parts.py; the configs are written here into a
folder of the user's, found through ``hydra.searchpath``; the run imports the module through ``plugins=``.
(Corpus recipes, fold protocols and backbone families extend the same way: their own tests do it.)"""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import SMALL, compose_cfg
from wav2emo.errors import ConfigError
from wav2emo.registry import Registry, import_plugins

PLUGIN = "tests.plugins.toy_parts"

TOY_CONFIGS = {
    "features/toy_energy.yaml": "logmel:\n  kind: toy_frame_energy\n  name: toy-energy\n",
    "model/toy_head.yaml": """
name: toy_head
layers: null
frames: null
inputs: [logmel]
featurizer: null
module:
  _target_: wav2emo.training.module.EmotionClassifier
  net:
    _target_: tests.plugins.toy_parts.ToyHead
    input_key: logmel
    in_channels: 1
    feature_dim: ???   # set by the module builder from the cache's shape
    num_classes: 8
  optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 1.0e-2}
  scheduler: null
  num_classes: 8
""",
    "augment/toy.yaml": (
        "name: toy\nmode: cached\ncopies: 1\nsample_rate: 16000\nwave:\n  toy_polarity: {p: 1.0}\nfeatures: {}\n"
        "feature_keys: [logmel]\n"
    ),
}


@pytest.fixture()
def user_conf(tmp_path):
    root = tmp_path / "my_lab_conf"
    for rel, text in TOY_CONFIGS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_registry_refuses_a_taken_name_and_lists_the_known_ones():
    reg: Registry[type] = Registry("toy part", {"a": "wav2emo.errors:ConfigError"})
    reg.register("b", int)
    assert reg.require("a") is ConfigError and reg["b"] is int and reg.names() == ["a", "b"] and "c" not in reg
    with pytest.raises(ConfigError, match="'a' is registered already"):
        reg.register("a", float)
    with pytest.raises(ConfigError, match=r"toy part 'c' is unknown; expected one of \['a', 'b'\]"):
        reg.require("c")
    with pytest.raises(ConfigError, match="plugins: cannot import 'no_such_lab.parts'"):
        import_plugins(["no_such_lab.parts"])


def test_parts_registered_from_outside_train_a_fold(tmp_path, user_conf):
    from wav2emo.runs.experiment import train

    sys.modules.pop(PLUGIN, None)
    assert import_plugins([PLUGIN]) == [PLUGIN]
    from tests.plugins import toy_parts

    toy_parts.CALLS["polarity"] = 0
    cfg = compose_cfg([*SMALL, f"hydra.searchpath=[file://{user_conf}]", f"plugins=[{PLUGIN}]",
                       "features=toy_energy", "model=toy_head", "augment=toy", "trainer.max_epochs=2",
                       "fold=0"], tmp_path / "run", tmp_path / "data", tmp_path / "cache")
    metrics = train(cfg)
    result = json.loads(next((tmp_path / "run").rglob("fold_result.json")).read_text())
    assert result["model"] == "toy_head"
    assert "test" in result and 0.0 <= result["test"]["ua"] <= 1.0
    assert toy_parts.CALLS["polarity"] > 0  # the registered augmentation made the cached copies
    kinds = {json.loads(p.read_text()).get("kind") for p in (tmp_path / "cache").rglob("meta.json")}
    assert "toy_frame_energy" in kinds, kinds  # the registered feature kind built the caches the head read
    assert metrics is not None


def test_online_augmentation_refuses_to_turn_another_kind_into_log_mel(tmp_path, user_conf):
    from wav2emo.runs.plan import fold_plan

    import_plugins([PLUGIN])
    cfg = compose_cfg([*SMALL, f"hydra.searchpath=[file://{user_conf}]", "features=toy_energy", "model=toy_head",
                       "augment=toy", "augment.mode=online"], tmp_path, tmp_path / "data", tmp_path / "cache")
    with pytest.raises(ConfigError, match="features.logmel.kind is 'toy_frame_energy'"):
        fold_plan(cfg)
