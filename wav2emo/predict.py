"""``python -m wav2emo.predict ckpt_path=<ckpt|run dir> inputs=[a.wav,folder/,list.csv] [output=preds.csv]``.

``backend=onnx ckpt_path=<file.onnx | folder of .onnx>`` runs files of ``python -m wav2emo.export`` instead
(onnxruntime, CPU).

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
from wav2emo.cores import torch_threads, usable_cores
from wav2emo.errors import ConfigError
from wav2emo.registry import import_plugins
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
    from wav2emo.inference.reader import WindowSettings
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
        return usable_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"egemaps_workers={value}: expected auto, 0 (in this process) or a number of worker processes")
    return value


def _egemaps_nice(value: Any) -> int:
    """``egemaps_nice``: how far below this process the openSMILE workers run (``nice``, 0-19)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise ConfigError(f"egemaps_nice={value}: expected a whole number from 0 (the same priority) to 19 (the lowest)")
    return value


def _torch_threads(value: Any, device: str, egemaps_workers: int) -> int | None:
    """``torch_threads``: how many CPU threads the network gets (None: torch's default, left alone).

    auto: on the CPU, with eGeMAPS worker processes busy beside it, half the usable cores (at least 1): torch's
    threads wait for each other spinning, so with as many openSMILE processes as cores they burned CPU time
    the workers needed (2 cores, 30-minute recording, tiny backbone: 68.9 CPU s with 2 threads, 52.4 s with 1)."""
    if value in (None, "auto"):
        if device != "cpu" or egemaps_workers < 1:
            return None
        return max(1, usable_cores() // 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"torch_threads={value}: expected auto or a positive number of threads")
    return value


def run(cfg: DictConfig) -> int:
    """Predict every input; returns the exit status (0 all predicted, 1 some failed)."""
    from wav2emo.features import digests_remembered
    from wav2emo.inference.input_files import collect_inputs
    from wav2emo.inference.restore import build_restored, checkpoints_of, read_checkpoint
    from wav2emo.inference.runner import Predictor, start_reader

    if cfg.get("ckpt_path") in (None, "", "???"):
        raise ConfigError("ckpt_path=<checkpoint.ckpt | fold/run/sweep directory> is required")
    inputs = _as_list(cfg.get("inputs"))
    if not inputs:
        raise ConfigError("inputs=[<file|folder|list.csv|list.txt>, ...] is required")
    settings = _window_settings(cfg)
    batch_size = cfg.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size={batch_size}: expected a positive number of windows or null")
    threads: int | None = None  # torch's threads for the network (None: its default)
    reader = None
    backend = str(cfg.get("backend") or "torch")
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"backend={backend}: expected torch (the checkpoints) or onnx (files of wav2emo.export)")
    ckpt_path = str(cfg.ckpt_path)
    if backend == "torch" and ckpt_path.endswith(".onnx"):
        raise ConfigError(f"ckpt_path={ckpt_path}: an ONNX file; run it with backend=onnx")
    if backend == "onnx":
        from wav2emo.inference.onnx_model import OnnxPredictor, load_onnx, onnx_files

        if str(cfg.get("device") or "auto") not in ("auto", "cpu"):
            raise ConfigError(f"device={cfg.device}: backend=onnx runs on the CPU; use device=auto or cpu")
        if ckpt_path.endswith(".ckpt"):
            raise ConfigError(f"ckpt_path={ckpt_path}: a checkpoint; backend=onnx runs exported files, make one "
                              f"with python -m wav2emo.export ckpt_path={ckpt_path} output=<file.onnx>")
        ckpts = onnx_files(ckpt_path)
        files = collect_inputs(inputs)
        predictor = OnnxPredictor([load_onnx(p) for p in ckpts], batch_size=batch_size)
        described = f"{len(ckpts)} ONNX file(s) on the CPU (onnxruntime)"
    else:
        device = _device(cfg.get("device"))
        files = collect_inputs(inputs)
        ckpts = checkpoints_of(cfg.ckpt_path)
        shared: dict = {}
        workers = _egemaps_workers(cfg.get("egemaps_workers", "auto"))
        nice = _egemaps_nice(cfg.get("egemaps_nice", 10))
        try:
            read = [read_checkpoint(p, device=device, features_cache=shared, egemaps_workers=workers, egemaps_nice=nice)
                    for p in ckpts]
            # The windows are read, and their eGeMAPS queued on the workers, while the backbones and models load.
            reader = start_reader(files, settings, shared.values(), batch_size or read[0].eval_batch_size)
            cache_dir = (cfg.get("paths") or {}).get("cache_dir")  # a local backbone's weights hashed once a version
            with digests_remembered(cache_dir) if cache_dir else contextlib.nullcontext():
                models = [build_restored(r) for r in read]
        except BaseException:
            _stop(reader, shared.values())
            raise
        pooled = any(getattr(m.features, "smile_pool", None) is not None for m in models)
        threads = _torch_threads(cfg.get("torch_threads", "auto"), str(models[0].features.device),
                                 workers if pooled else 0)
        predictor = Predictor(models, batch_size=batch_size)
        described = "{} model(s) ({}) on {}".format(
            len(models), ", ".join(f"{m.config.model.name} fold {m.fold}" for m in models), models[0].features.device)
    with torch_threads(threads):  # put back afterwards, for a caller that runs run() in its own process
        try:
            return _predict_all(cfg, files, ckpts, predictor, settings, described, reader)
        finally:
            _stop(reader, [predictor])


def _stop(reader, closeable) -> None:  # noqa: ANN001
    """Stop the window reader (if started) first, then what holds worker processes."""
    if reader is not None:
        reader.close()
    for c in closeable:
        c.close()


def _predict_all(cfg: DictConfig, files, ckpts, predictor, settings, described: str, reader=None) -> int:  # noqa: ANN001
    from wav2emo.inference.output import CsvWriter, JsonWriter
    from wav2emo.inference.runner import predict_files

    _check_window_fits(settings, predictor)
    log.info("predicting %d file(s) with %s, %d windows a batch", len(files), described, predictor.batch_size)
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
        for result in predict_files(files, predictor, settings, progress=progress, reader=reader):
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


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors("wav2emo.predict"):
        import_plugins(cfg.get("plugins"))  # modules of the user's that register parts of their own
        status = run(cfg)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
