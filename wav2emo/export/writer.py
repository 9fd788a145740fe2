"""Writing an exported model: trace the graph to ONNX (dynamic length axis), stamp wav2emo's metadata, and
check the file against the PyTorch graph with onnxruntime before it is kept."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wav2emo.errors import ConfigError
from wav2emo.export.graph import EnsembleGraph
from wav2emo.inference import onnx_model as fmt
from wav2emo.inference.restore import Restored

log = logging.getLogger(__name__)

CHECK_TOLERANCE = 1e-4  # onnxruntime against the traced PyTorch graph, on the check waves


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_entry(r: Restored) -> dict[str, Any]:
    """What a fold of the file is: its checkpoint (path and SHA-256), model, fold, backbone and upstream."""
    up = getattr(r.module, "upstream", None)
    cfg = r.config
    return {
        "checkpoint": str(r.path.resolve()), "sha256": sha256(r.path), "model": str(cfg.model.name),
        "fold": r.fold, "corpus": str((cfg.get("data") or {}).get("name", "")),
        "features": r.features.ssl_meta.get("key_fields") or None,
        "upstream": None if up is None else up.identity(),
        "frames": r.frames, "frames_multiple": r.frames_multiple,
    }


def metadata(restored: Sequence[Restored]) -> dict[str, str]:
    from wav2emo import __version__

    first = restored[0]
    takes_egemaps = any("egemaps" in r.features.inputs for r in restored)
    egemaps_set = ""
    if takes_egemaps:
        egemaps_set = str(next(r.config.features.egemaps.get("feature_set", "eGeMAPSv02") for r in restored
                               if "egemaps" in r.features.inputs))
    limits = [r.features.max_samples for r in restored if r.features.max_samples is not None]
    return {
        fmt.FORMAT_KEY: fmt.FORMAT,
        fmt.CLASS_NAMES: json.dumps(list(first.class_names)),
        fmt.INPUTS: json.dumps([fmt.WAVE_INPUT, fmt.EGEMAPS_INPUT] if takes_egemaps else [fmt.WAVE_INPUT]),
        fmt.SAMPLE_RATE: "16000",
        fmt.MIN_SAMPLES: str(max(r.min_samples for r in restored)),
        fmt.MAX_SAMPLES: str(min(limits)) if limits else "",
        fmt.EGEMAPS_SET: egemaps_set,
        fmt.MODELS: json.dumps([model_entry(r) for r in restored]),
        "wav2emo.version": str(__version__),
        "wav2emo.created": datetime.now(UTC).isoformat(timespec="seconds"),
        "wav2emo.ensemble": "mean of the folds' softmax probabilities" if len(restored) > 1 else "one model",
    }


def check_waves(min_samples: int, seed: int = 0) -> list[np.ndarray]:
    """Noise-plus-tone clips of 4.2 s (traced), 0.8 s and 7.7 s: the length axis must really be dynamic, on
    both sides of the lengths where the heads pad (fe_vgg's 81 frames, the reference's 263)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (67200, max(min_samples, 12800), 123200):
        t = np.arange(n) / 16000
        out.append((0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return out


def _inputs(wave: np.ndarray, egemaps: np.ndarray | None) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(wave)[None, :]
    return (x,) if egemaps is None else (x, torch.from_numpy(egemaps))


def write_onnx(restored: Sequence[Restored], output: Path, *, opset: int = 17, check: bool = True) -> dict[str, Any]:
    """Export the folds ``restored`` as one graph into ``output`` (written beside it first, then moved in)."""
    import onnx

    graph = EnsembleGraph(restored).eval()
    meta = metadata(restored)
    names = json.loads(meta[fmt.INPUTS])
    waves = check_waves(int(meta[fmt.MIN_SAMPLES]))
    egemaps = None
    if fmt.EGEMAPS_INPUT in names:  # any functionals do for tracing; the check uses openSMILE's real ones
        egemaps = np.random.default_rng(1).standard_normal((1, 88)).astype(np.float32)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.partial")  # two exports to one output never mix
    axes = {fmt.WAVE_INPUT: {1: "samples"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values it records as constants
            torch.onnx.export(graph, _inputs(waves[0], egemaps), str(tmp), dynamo=False, input_names=names,
                              output_names=[fmt.OUTPUT], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
        proto = onnx.load(str(tmp))
        proto.producer_name = "wav2emo"
        proto.doc_string = ("wav2emo export: waveform float32 (1, samples) mono 16 kHz"
                            + ("; egemaps float32 (1, 88) raw eGeMAPSv02 functionals (openSMILE)" if egemaps is not None
                               else "") + " -> probabilities float32 (1, classes); see metadata wav2emo.*")
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(tmp))
        report = {"max_abs_diff": None}
        if check:
            report["max_abs_diff"] = check_file(graph, tmp, waves, restored)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return {"output": str(output), "bytes": output.stat().st_size, "metadata": meta, **report}


def check_file(graph: EnsembleGraph, path: Path, waves: Sequence[np.ndarray], restored: Sequence[Restored]) -> float:
    """onnxruntime against the PyTorch graph on clips of two lengths; a larger gap than
    :data:`CHECK_TOLERANCE` stops the export (the file is not kept)."""
    model = fmt.load_onnx(path)
    predictor = fmt.OnnxPredictor([model])
    worst = 0.0
    for wave in waves:
        egemaps = predictor.egemaps(wave) if predictor.smile is not None else None
        with torch.no_grad():
            expected = graph(*_inputs(wave, egemaps)).numpy()
        got = model.session.run([fmt.OUTPUT], {k: v.numpy() for k, v in zip(model.inputs, _inputs(wave, egemaps),
                                                                                  strict=True)})[0]
        worst = max(worst, float(np.abs(expected - got).max()))
    if not worst <= CHECK_TOLERANCE:
        raise ConfigError(f"cannot export {[str(r.path) for r in restored]}: onnxruntime's probabilities differ from "
                          f"PyTorch's by {worst:.2e} (more than {CHECK_TOLERANCE:g}) on the check clips; an operator "
                          "of the model does not translate to ONNX faithfully")
    log.info("onnxruntime matches the PyTorch graph to %.1e on %d check clips", worst, len(waves))
    return worst
