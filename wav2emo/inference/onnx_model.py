"""Exported models (``python -m wav2emo.export``) on new audio with onnxruntime: ``wav2emo.predict backend=onnx``.

An exported file is one ONNX graph from the 16 kHz waveform to class probabilities:

- input ``waveform``: float32 ``(1, samples)``, mono at 16 kHz, any length (the ``samples`` axis is dynamic; at
  least ``wav2emo.min_samples``); normalisation, the backbone (frozen or fine-tuned), the layer choice and the
  head are inside the graph;
- input ``egemaps`` (eGeMAPS fusion models only): float32 ``(1, 88)``, the raw eGeMAPSv02 functionals openSMILE
  gives for the same audio (``opensmile.Smile(FeatureSet.eGeMAPSv02, FeatureLevel.Functionals)``, in openSMILE's
  column order); the training actors' standardisation is folded into the graph;
- output ``probabilities``: float32 ``(1, classes)``, softmax over ``wav2emo.class_names`` (a fold ensemble in
  one file: the mean of its folds' probabilities).

The metadata (``metadata_props``) says what the file is; :data:`FORMAT_KEY` marks a wav2emo export, and a file
without it is refused. This module reads files only; writing them is :mod:`wav2emo.export`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.data.audio import TARGET_SAMPLE_RATE
from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.inference.reader import WindowReader, WindowSettings
from wav2emo.inference.runner import ensemble_classes

FORMAT_KEY = "wav2emo.format"
FORMAT = "wav2emo-onnx/1"
WAVE_INPUT, EGEMAPS_INPUT, OUTPUT = "waveform", "egemaps", "probabilities"
# Metadata keys (all strings; JSON where structured).
CLASS_NAMES = "wav2emo.class_names"      # JSON list, the order of the output's columns
INPUTS = "wav2emo.inputs"                # JSON list: ["waveform"] or ["waveform", "egemaps"]
SAMPLE_RATE = "wav2emo.sample_rate"
MIN_SAMPLES = "wav2emo.min_samples"      # the fewest samples the graph's features can be computed from
MAX_SAMPLES = "wav2emo.max_samples"      # the checkpoint's features.ssl.max_clip_s in samples ("" = no limit)
EGEMAPS_SET = "wav2emo.egemaps_feature_set"
MODELS = "wav2emo.models"                # JSON list, one entry per fold: checkpoint, sha256, model, fold, backbone


def install_hint() -> str:
    return 'python -m pip install -e ".[onnx]" -c requirements/lock.txt'


def read_metadata(path: Path) -> dict[str, str]:
    """The wav2emo metadata of an ONNX file; one line naming the file when it is not a wav2emo export."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"backend=onnx needs onnxruntime; install it: {install_hint()}") from None
    if not path.is_file():
        raise MissingFileError(f"{path}: no such ONNX file")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for unreadable files
        raise ConfigError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get(FORMAT_KEY) != FORMAT:
        found = meta.get(FORMAT_KEY, "no wav2emo.format entry")
        raise ConfigError(f"{path}: not a wav2emo export ({FORMAT_KEY}: {found}; expected {FORMAT}); make one with "
                          "python -m wav2emo.export ckpt_path=<checkpoint or run> output=<file.onnx>")
    for key in (CLASS_NAMES, INPUTS, MIN_SAMPLES):
        if key not in meta:
            raise ConfigError(f"{path}: its wav2emo metadata has no {key}; re-export it with this wav2emo version")
    return meta


@dataclass
class OnnxModel:
    """One exported file, ready to run on the CPU."""

    path: Path
    session: Any
    class_names: tuple[str, ...]
    inputs: tuple[str, ...]
    min_samples: int
    max_samples: int | None
    egemaps_set: str | None
    meta: dict[str, str]


def load_onnx(path: str | Path, *, threads: int | None = None) -> OnnxModel:
    import onnxruntime as ort

    path = Path(path)
    meta = read_metadata(path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = tuple(json.loads(meta[INPUTS]))
    names = [i.name for i in session.get_inputs()]
    if list(inputs) != names:
        raise ConfigError(f"{path}: its metadata names the inputs {list(inputs)}, the graph has {names}")
    max_samples = meta.get(MAX_SAMPLES) or ""
    return OnnxModel(path=path, session=session, class_names=tuple(json.loads(meta[CLASS_NAMES])), inputs=inputs,
                     min_samples=int(meta[MIN_SAMPLES]), max_samples=int(max_samples) if max_samples else None,
                     egemaps_set=meta.get(EGEMAPS_SET) or None, meta=meta)


def onnx_files(path: str | Path) -> list[Path]:
    """An ``.onnx`` file, or every ``.onnx`` file of a folder (one file per fold: their mean is predicted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        if files:
            return files
        raise MissingFileError(f"ckpt_path={path}: a folder without .onnx files; backend=onnx reads exported files "
                               "(python -m wav2emo.export ckpt_path=<checkpoint or run> output=<file.onnx>)")
    raise MissingFileError(f"ckpt_path={path}: no such ONNX file or folder")


class OnnxPredictor:
    """The :class:`~wav2emo.inference.runner.Predictor` interface over exported files: each window is one run of
    every graph (batch of one, its own length), the mean of their probabilities is the prediction."""

    def __init__(self, models: Sequence[OnnxModel], batch_size: int | None = None) -> None:
        self.models, self.class_names = list(models), ensemble_classes(models)
        self.batch_size = max(1, int(batch_size or 16))  # windows gathered per call (each runs on its own)
        self.min_samples = max(m.min_samples for m in models)
        limits = [m.max_samples for m in models if m.max_samples is not None]
        self.max_samples = min(limits) if limits else None
        self.smile = None
        sets = {m.egemaps_set for m in models if EGEMAPS_INPUT in m.inputs}
        if sets:
            from wav2emo.features.egemaps import make_smile

            self.smile = make_smile(sorted(sets)[0], "functionals")

    def reader(self, files: Sequence[Path], settings: WindowSettings) -> WindowReader:
        """The PyTorch Predictor's interface: windows read a batch ahead; nothing else runs ahead here (a window's
        eGeMAPS is computed with it)."""
        return WindowReader(files, settings, lambda wave: None, self.batch_size)

    def close(self) -> None:
        """The same interface as the PyTorch Predictor's: onnxruntime sessions hold no workers to stop."""

    def egemaps(self, wave: np.ndarray) -> np.ndarray:
        assert self.smile is not None
        values = self.smile.process_signal(wave, TARGET_SAMPLE_RATE).to_numpy(dtype=np.float64)[0]
        if not np.isfinite(values).all():
            raise ValueError("openSMILE gave NaN/inf eGeMAPS functionals (too short or unusual audio?)")
        return np.asarray(values, dtype=np.float32)[None, :]

    def probabilities(self, waves: Sequence[np.ndarray], prefetched: Sequence[None] | None = None) -> np.ndarray:
        """(N, C) mean class probabilities of the ensemble for N mono 16 kHz waves (``prefetched``: unused,
        what the reader's prefetch gave)."""
        out = np.zeros((len(waves), len(self.class_names)))
        for i, wave in enumerate(waves):
            feeds = {WAVE_INPUT: np.ascontiguousarray(wave, dtype=np.float32)[None, :]}
            if self.smile is not None:
                feeds[EGEMAPS_INPUT] = self.egemaps(wave)
            for m in self.models:
                probs = m.session.run([OUTPUT], {k: feeds[k] for k in m.inputs})[0].astype(np.float64)
                if not np.isfinite(probs).all():
                    raise ValueError(f"{m.path.name} gave NaN/inf probabilities")
                out[i] += probs[0]
        return out / len(self.models)
