"""``python -m wav2emo.export ckpt_path=<checkpoint | fold/run/sweep dir> output=<file.onnx> [per_fold=true]``.

A run directory's folds (their dev-chosen checkpoints) become one file whose output is the mean of the folds'
probabilities (the frozen backbone they share runs once), or with ``per_fold=true`` one file per fold,
``<output stem>.fold<k>.onnx``. An output that exists is refused unless ``overwrite=true``.
Exit status: 0 written, 2 a user error (a missing checkpoint, a part that cannot be exported, an existing output).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from wav2emo.errors import ConfigError

log = logging.getLogger("wav2emo.export")


def planned_outputs(output: Path, folds: list, per_fold: bool) -> list[Path]:
    if not per_fold or len(folds) == 1:
        return [output]
    return [output.with_name(f"{output.stem}.fold{f if f is not None else i}{output.suffix}")
            for i, f in enumerate(folds)]


def run(cfg: DictConfig) -> list[dict]:
    from wav2emo.inference.onnx_model import install_hint
    from wav2emo.inference.restore import checkpoints_of, restore

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(f"wav2emo.export needs onnx and onnxruntime; install them: {install_hint()}") from None
    if cfg.get("ckpt_path") in (None, "", "???"):
        raise ConfigError("ckpt_path=<checkpoint.ckpt | fold/run/sweep directory> is required")
    if cfg.get("output") in (None, "", "???"):
        raise ConfigError("output=<file.onnx> is required")
    output = Path(str(cfg.output))
    if output.suffix != ".onnx":
        raise ConfigError(f"output={output}: expected a file name ending in .onnx")
    ckpts = checkpoints_of(cfg.ckpt_path)
    shared: dict = {}
    # Restored on the CPU: the graph is traced there, and the file runs on any onnxruntime.
    restored = [restore(p, device="cpu", features_cache=shared) for p in ckpts]
    names = {r.class_names for r in restored}
    if len(names) > 1:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: its checkpoints predict different classes {sorted(names)}; "
                          "export them one by one")
    per_fold = bool(cfg.get("per_fold", False))
    outputs = planned_outputs(output, [r.fold for r in restored], per_fold)
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not cfg.get("overwrite", False):
        raise ConfigError(f"output={existing[0]}: the file exists; pass overwrite=true to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    from wav2emo.export.writer import write_onnx

    groups = [[r] for r in restored] if len(outputs) > 1 else [restored]
    reports = []
    for path, group in zip(outputs, groups, strict=True):
        report = write_onnx(group, path, opset=int(cfg.get("opset", 17)), check=bool(cfg.get("check", True)))
        log.info("wrote %s (%.1f MB, %d fold(s), classes %s, inputs %s)", path, report["bytes"] / 1e6, len(group),
                 list(group[0].class_names), json.loads(report["metadata"]["wav2emo.inputs"]))
        reports.append(report)
    return reports
