"""Training precision chosen per machine: bf16 mixed precision where a trainer lands on a GPU with bf16 (the fast
path), float32 elsewhere: the ``${wav2emo_precision:<accelerator>}`` resolver of conf/trainer/default.yaml.

The resolver is registered with OmegaConf when this module is imported; :mod:`wav2emo.plain_config`, which every
path that resolves a run config goes through, imports it. torch is imported only when the value is resolved.
"""

from __future__ import annotations

RESOLVER = "wav2emo_precision"


def accelerator_on_cuda(accelerator: str = "auto") -> bool:
    """Whether Lightning puts a trainer of this ``accelerator`` on CUDA (gpu/cuda, or auto with CUDA present)."""
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def auto_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` when a trainer of this ``accelerator`` lands on a GPU with bf16, else ``32-true``."""
    if not accelerator_on_cuda(accelerator):
        return "32-true"
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def register_precision_resolver() -> None:
    """Register ``${wav2emo_precision:...}`` with OmegaConf, once."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda accelerator="auto": auto_precision(str(accelerator)))


register_precision_resolver()
