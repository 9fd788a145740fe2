"""Running a loaded audio classifier over a manifest's clips, batched, with each clip's logits as if alone.

Each clip is read at the feature extractor's rate (:func:`wav2emo.data.audio.load_audio` resamples) and
preprocessed alone (so per-clip normalisation never sees padding); clips of similar length are batched up to
``batch_size`` clips and ``max_batch_s`` padded seconds, with the attention mask.  wav2vec2-style models with
a GroupNorm front end get wav2emo's batch-invariance patch (:class:`~wav2emo.backbones.BatchInvariance`), so
padding never changes a clip's logits; a model with GroupNorm the patch does not cover runs clip by clip.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Clip
from wav2emo.external.hf_classifier import HFClassifier

log = logging.getLogger(__name__)


def clip_inputs(clf: HFClassifier, clip: Clip) -> tuple[str, np.ndarray]:
    """(input name, the clip's preprocessed input without a batch axis): ``input_values`` (S,) for waveform
    models, ``input_features`` (...) for spectrogram models."""
    wave = load_audio(clip.path, clf.sampling_rate)
    out = clf.feature_extractor(wave, sampling_rate=clf.sampling_rate, return_tensors="np")
    name = "input_values" if "input_values" in out else next(k for k in out if k != "attention_mask")
    return name, np.asarray(out[name][0], dtype=np.float32)


def _batches(lengths: Sequence[int], batch_size: int, max_samples: int) -> Iterator[list[int]]:
    """Clip indices, longest first, in batches of at most ``batch_size`` clips and ``max_samples`` padded."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= batch_size or longest * (len(batch) + 1) > max_samples):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _invariance(model: torch.nn.Module):
    """The batch-invariance patch for the model's base (None where it does not apply)."""
    from wav2emo.backbones import BackboneError, BatchInvariance

    try:
        return BatchInvariance(getattr(model, "base_model", model))
    except BackboneError:
        return None


@torch.no_grad()
def predict_logits(clf: HFClassifier, clips: Sequence[Clip], *, batch_size: int = 16, max_batch_s: float = 200.0,
                   device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """``(len(clips), num_labels)`` float32 logits, in the order of ``clips``."""
    model, device = clf.model, torch.device(device)
    num_labels = len(clf.id2label)
    out = np.zeros((len(clips), num_labels), dtype=np.float32)
    if not clips:
        return out
    inputs = [clip_inputs(clf, c) for c in clips]
    name = inputs[0][0]
    arrays = [a for _, a in inputs]
    waveform = name == "input_values" and all(a.ndim == 1 for a in arrays)
    inv = _invariance(model) if waveform else None
    has_group_norm = any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    takes_mask = "attention_mask" in inspect.signature(model.forward).parameters
    same_shape = len({a.shape for a in arrays}) == 1
    one_by_one = (waveform and has_group_norm and inv is None) or (not waveform and not same_shape)
    if one_by_one:
        log.info("%s: clips run one at a time (padding would change its outputs)", clf.info.get("ref"))
    lengths = [a.shape[0] for a in arrays]
    max_samples = int(max_batch_s * clf.sampling_rate) if waveform else 1 << 62
    bar = tqdm(total=len(clips), desc=f"{clf.info.get('ref')}", unit="clip", disable=not progress, leave=False)
    for batch in _batches(lengths, 1 if one_by_one else max(1, int(batch_size)), max_samples):
        kwargs: dict[str, torch.Tensor] = {}
        ctx = nullcontext()
        if waveform:
            n = [lengths[i] for i in batch]
            x = torch.zeros(len(batch), max(n))
            for b, i in enumerate(batch):
                x[b, : n[b]] = torch.from_numpy(arrays[i])
            kwargs[name] = x.to(device)
            if takes_mask:
                kwargs["attention_mask"] = (torch.arange(max(n))[None, :] < torch.tensor(n)[:, None]).long().to(device)
            if inv is not None:
                ctx = inv.lengths(n)
        else:
            kwargs[name] = torch.from_numpy(np.stack([arrays[i] for i in batch])).to(device)
        with ctx:
            logits = model(**kwargs).logits
        out[batch] = logits.float().cpu().numpy()
        bar.update(len(batch))
    bar.close()
    return out
