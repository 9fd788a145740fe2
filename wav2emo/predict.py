"""``python -m wav2emo.predict ckpt_path=<ckpt|run dir> inputs=[a.wav,folder/,list.csv] [output=preds.csv]``.

Exit status: 0 when every file was predicted, 1 when any file could not be (its row says why), 2 for a user
error that stopped everything (a missing checkpoint or input, a bad setting).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible
from wav2emo.errors import ConfigError
from wav2emo.startup import leave_out_unused_backends

require_compatible()
leave_out_unused_backends()  # torchmetrics without transformers/torchvision (wav2emo/startup.py)

log = logging.getLogger("wav2emo.predict")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str | Path):
        return [str(value)]
    return [str(v) for v in value if v is not None and str(v) != ""]


def _window_settings(cfg: DictConfig):
    from wav2emo.inference.runner import WindowSettings
    from wav2emo.inference.windows import check_window_settings

    given = OmegaConf.to_container(cfg.get("window") or {}, resolve=True)
    unknown = sorted(set(given) - set(WindowSettings.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"window.{unknown[0]}: unknown setting; expected some of "
                          f"{sorted(WindowSettings.__dataclass_fields__)}")
    try:
        settings = WindowSettings(**{k: type(getattr(WindowSettings, k))(v) for k, v in given.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"window={given}: {e}") from e
    check_window_settings(settings.window_s, settings.hop_s)
    if not 0 <= settings.vad_min_speech <= 1:
        raise ConfigError(f"window.vad_min_speech={settings.vad_min_speech}: expected a fraction in [0, 1]")
    return settings


def _check_window_fits(settings, predictor) -> None:
    win = round(settings.window_s * 16000)
    if win < predictor.min_samples:
        raise ConfigError(f"window.window_s={settings.window_s}: shorter than the {predictor.min_samples} samples "
                          "at 16 kHz the model's features need")
    if predictor.max_samples is not None and win > predictor.max_samples:
        raise ConfigError(f"window.window_s={settings.window_s}: longer than the checkpoint's features.ssl.max_clip_s "
                          f"({predictor.max_samples / 16000:g} s); the backbone's attention memory grows with the "
                          "square of the window")


def _device(value: Any) -> str:
    import torch

    device = str(value or "auto")
    try:
        dev = torch.device("cpu" if device == "auto" else device)
    except RuntimeError as e:
        raise ConfigError(f"device={device}: expected auto, cpu, cuda or cuda:N ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: CUDA is not available here; use device=auto or device=cpu")
    return device


def _egemaps_workers(value: Any) -> int:
    """``egemaps_workers``: auto = one openSMILE worker process per usable core; 0 = in this process."""
    if value in (None, "auto"):
        from wav2emo.features.smile_waves import usable_cores

        return usable_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"egemaps_workers={value}: expected auto, 0 (in this process) or a number of worker processes")
    return value


def run(cfg: DictConfig) -> int:
    """Predict every input; returns the exit status (0 all predicted, 1 some failed)."""
    from wav2emo.inference.inputs import collect_inputs
    from wav2emo.inference.restore import checkpoints_of, restore
    from wav2emo.inference.runner import Predictor

    if cfg.get("ckpt_path") in (None, "", "???"):
        raise ConfigError("ckpt_path=<checkpoint.ckpt | fold/run/sweep directory> is required")
    inputs = _as_list(cfg.get("inputs"))
    if not inputs:
        raise ConfigError("inputs=[<file|folder|list.csv|list.txt>, ...] is required")
    settings = _window_settings(cfg)
    batch_size = cfg.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size={batch_size}: expected a positive number of windows or null")
    device = _device(cfg.get("device"))
    files = collect_inputs(inputs)
    ckpts = checkpoints_of(cfg.ckpt_path)
    shared: dict = {}
    workers = _egemaps_workers(cfg.get("egemaps_workers", "auto"))
    models = [restore(p, device=device, features_cache=shared, egemaps_workers=workers) for p in ckpts]
    predictor = Predictor(models, batch_size=batch_size)
    try:
        return _predict_all(cfg, files, ckpts, predictor, settings)
    finally:
        predictor.close()


def _predict_all(cfg: DictConfig, files, ckpts, predictor, settings) -> int:
    from wav2emo.inference.output import CsvWriter, JsonWriter
    from wav2emo.inference.runner import predict_files

    models = predictor.models
    _check_window_fits(settings, predictor)
    log.info("predicting %d file(s) with %d model(s) (%s) on %s, %d windows a batch", len(files), len(models),
             ", ".join(f"{m.config.model.name} fold {m.fold}" for m in models), models[0].features.device,
             predictor.batch_size)
    window_rows = bool(cfg.get("window_rows", True))
    out, js = cfg.get("output"), cfg.get("json")
    failed = 0
    with contextlib.ExitStack() as stack:
        if out in (None, "", "-"):
            csv_stream = sys.stdout
        else:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            csv_stream = stack.enter_context(open(out, "w", encoding="utf-8", newline=""))
        writers: list[Any] = [CsvWriter(csv_stream, predictor.class_names, window_rows=window_rows)]
        if js not in (None, ""):
            Path(js).parent.mkdir(parents=True, exist_ok=True)
            meta = {"checkpoints": [str(p) for p in ckpts], "window": OmegaConf.to_container(cfg.window, resolve=True)}
            json_writer = JsonWriter(stack.enter_context(open(js, "w", encoding="utf-8")), predictor.class_names,
                                     meta, window_rows=window_rows)
            writers.append(json_writer)
            stack.callback(json_writer.close)
        progress = bool(cfg.get("progress", True)) and len(files) > 1
        for result in predict_files(files, predictor, settings, progress=progress):
            for w in writers:
                w.write(result)
            if result.error is not None:
                failed += 1
                print(f"wav2emo.predict: {result.path}: {result.error}", file=sys.stderr, flush=True)
    if out not in (None, "", "-"):
        log.info("wrote %s", out)
    if failed:
        log.warning("%d of %d file(s) could not be predicted (their rows say why)", failed, len(files))
    return 1 if failed else 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors("wav2emo.predict"):
        status = run(cfg)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
