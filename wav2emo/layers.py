"""``python -m wav2emo.layers``: which hidden state of a backbone carries the emotion (Pepino et al. 2021, EmoBox).

One command: a single-layer head (``model=mean_linear model.layers=i`` by default) trained on every stored hidden
state, and the layer-weighted head on all of them, over the folds; it ends in ``layers.{json,md,png}`` in
``--out``: the per-layer UA curve (mean and std over folds) with the layer-weighted head's UA and its learned
layer weights beside it.  Every other argument is a ``python -m wav2emo.train`` override.

    python -m wav2emo.layers data=ravdess features=wavlm-large features.ssl.layers=null \\
        features.ssl.time_pooled=true --out outputs/layers/wavlm-large     # real weights (downloads once)
    python -m wav2emo.layers experiment=demo --folds 0 1 --out outputs/layers/demo   # offline, seconds

With ``features.ssl.time_pooled=true`` the cache holds each layer's mean and std per clip (MBs even for
whisper-large-v3) and both heads pool: the analysis then costs a few minutes on a CPU after extraction.
Finished folds are reused when the command is run again with the same ``--out`` (each fold's directory).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("wav2emo.layers")
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_run(overrides: list[str], out: Path) -> DictConfig:
    """The train config of ``overrides``, writing into ``out``, with Hydra's context set (as a run of
    ``python -m wav2emo.train`` would have it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    out.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def _run_folds(cfg: DictConfig, folds: list[int], out: Path) -> list[dict[str, Any]]:
    """Every fold of one configuration, from its plan resolved once (as ``train`` does)."""
    from wav2emo.runs.fold_runner import run_fold
    from wav2emo.runs.plan import fold_plan

    plan = fold_plan(cfg)
    return [run_fold(plan, fold, out / f"fold_{fold}") for fold in folds]


def _stored_layers(cfg: DictConfig, fold: int) -> tuple[list[int], list[str]]:
    """The hidden states the SSL cache holds (absolute indices) and their names."""
    from wav2emo.runs.build import build_datamodule

    dm = build_datamodule(cfg, fold)
    dm.setup("test")
    meta = dm.caches["ssl"].meta
    names = list(meta.get("layer_names") or [])
    indices = list(meta.get("layer_indices") or range(len(names)))
    return indices, names


def _layer_weights(result: dict[str, Any]) -> list[float]:
    import torch

    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    keys = [k for k in state if k.endswith("layer_logits")]  # the layer-weighted head's (its own or its LayerMix's)
    if len(keys) != 1:
        raise KeyError(f"{result['best_checkpoint']}: expected one layer_logits tensor, found {keys}")
    logits = state[keys[0]].float().abs()  # layer_weighted mixes by |w| / sum |w|
    return (logits / logits.sum().clamp_min(1e-12)).tolist()


def analyse_layers(overrides: list[str], out: Path, head: str = "mean_linear", folds: list[int] | None = None) -> dict:
    """Run the analysis (module docstring) and write its report into ``out``; returns the report."""
    from wav2emo.data.folds import folds_to_run
    from wav2emo.errors import ConfigError
    from wav2emo.reports.layers import layer_report, write_layer_report
    from wav2emo.runs.common import num_folds_of

    for o in overrides:
        if o.split("=")[0].lstrip("+~") in ("model", "model.layers", "finetune", "fold"):
            raise ConfigError(f"{o}: the layer analysis chooses the model, its layers and the folds itself "
                              "(--head, --folds); pass the data, features and training settings only")
    weighted_cfg = compose_run([*overrides, "model=layer_weighted"], out / "layer_weighted")
    chosen = folds_to_run("all" if folds is None else list(folds), num_folds_of(weighted_cfg))
    log.info("layer analysis into %s: folds %s, head %s", out, chosen, head)
    weighted = _run_folds(weighted_cfg, chosen, out / "layer_weighted")
    indices, names = _stored_layers(weighted_cfg, chosen[0])
    layer_uas: dict[int, list[float]] = {}
    for i in indices:
        cfg = compose_run([*overrides, f"model={head}", f"model.layers={i}"], out / f"layer_{i:02d}")
        layer_uas[i] = [float(r["test"]["ua"]) for r in _run_folds(cfg, chosen, out / f"layer_{i:02d}")]
        log.info("hidden state %d: UA %s", i, layer_uas[i])
    ssl = weighted_cfg.features.ssl
    data = weighted_cfg.data
    data_name = data.get("name") or (data.get("corpus") or {}).get("name") or "?"
    setting = {"backbone": str(ssl.get("name") or ssl.backbone), "data": str(data_name),
               "head": head, "overrides": list(overrides),
               "features_ssl": OmegaConf.to_container(ssl, resolve=True)}
    report = layer_report(layer_uas, {i: names[j] for j, i in enumerate(indices) if j < len(names)},
                          [float(r["test"]["ua"]) for r in weighted], [_layer_weights(r) for r in weighted],
                          chosen, setting)
    files = write_layer_report(report, out)
    print(Path(files[1]).read_text() + f"\nReport files: {', '.join(str(f) for f in files)}\n", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    from wav2emo.cli import user_errors

    parser = argparse.ArgumentParser(prog="python -m wav2emo.layers", description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments: train overrides (key=value, group=option).")
    parser.add_argument("--out", type=Path, default=Path("outputs/layers"), help="where the runs and report go")
    parser.add_argument("--head", default="mean_linear", help="the single-layer head (a conf/model name)")
    parser.add_argument("--folds", type=int, nargs="*", default=None, help="fold indices (default: all)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    with user_errors("wav2emo.layers"):
        analyse_layers(overrides, args.out, args.head, args.folds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
