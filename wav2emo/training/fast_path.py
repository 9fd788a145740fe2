"""The fast path on a GPU, by default: precision and the training step, resolved from ``auto`` settings.

With the default trainer's precision (``${wav2emo_precision:...}``; ``auto`` resolves the same way) and
``cuda_graphs: auto``, a fold trained on a GPU runs in bf16
mixed precision with its whole training step replayed from CUDA graphs (:mod:`wav2emo.training.graphed_step`),
and on a CPU in float32 with Lightning's usual step.  Where data live is decided by ``loader.resident: auto``
(:mod:`wav2emo.feeding.placement`).  Each decision that leaves the fast path says why, in one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, open_dict

from wav2emo.errors import ConfigError
from wav2emo.precision import auto_precision
from wav2emo.training.distributed import several_processes, trains_on_cuda
from wav2emo.training.graphed_step import why_not_graphed

log = logging.getLogger(__name__)


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """``auto``: as :func:`auto_precision` for the trainer's accelerator; any other value as given."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if precision != "auto":
        return precision
    return auto_precision(str(trainer_cfg.get("accelerator", "auto")))


def configure_trainer(model: Any, trainer_cfg: DictConfig, cuda_graphs: bool | str = False, max_graphs: int = 32
                      ) -> dict[str, Any]:
    """Resolve ``trainer.precision`` and ``cuda_graphs`` (True, False or ``"auto"``, as
    :func:`~wav2emo.feeding.placement.parse_auto_bool` reads the setting; ``max_graphs`` graphs at most) for this
    fold, in ``trainer_cfg`` and on ``model``.

    A graphed step is manual optimisation: the trainer then gets no ``gradient_clip_val`` and the module's step
    clips with the same value and algorithm.  Returns what was decided (recorded in the fold result).
    """
    with open_dict(trainer_cfg):
        trainer_cfg.precision = resolve_precision(trainer_cfg)
    setting = cuda_graphs
    if setting not in (True, False, "auto"):
        raise ConfigError(f"cuda_graphs={setting!r}: expected True, False or 'auto' (parse_auto_bool reads the setting)")
    decided = {"precision": str(trainer_cfg.precision), "cuda_graphs": False}
    if setting is False:
        return decided
    on_cuda = trains_on_cuda(trainer_cfg)
    reason = _blocker(model, trainer_cfg)
    if reason is not None:
        if setting is True:
            raise ConfigError(f"cuda_graphs=true cannot be used here: {reason}; set cuda_graphs=auto or false")
        if on_cuda:
            log.info("training step: Lightning's eager step, not CUDA graphs: %s", reason)
        return decided
    if setting == "auto" and not on_cuda:
        return decided
    with open_dict(trainer_cfg):
        clip_val = trainer_cfg.get("gradient_clip_val")
        clip_algorithm = str(trainer_cfg.get("gradient_clip_algorithm") or "norm")
        trainer_cfg.gradient_clip_val = None
        trainer_cfg.gradient_clip_algorithm = None
    model.use_step_runner(clip_val, clip_algorithm, cuda_graphs=True,
                          max_graphs=int(max_graphs or 32))
    decided["cuda_graphs"] = on_cuda
    if on_cuda:
        log.info("training step: replayed from CUDA graphs (one per batch shape, up to %d; cuda_graphs=false "
                 "for Lightning's eager step)", model.step_runner.max_graphs)
    return decided


def _blocker(model: Any, trainer_cfg: DictConfig) -> str | None:
    factory = getattr(model, "optimizer_factory", None)
    optimizer_class = getattr(factory, "func", factory)
    scheduled = getattr(model, "scheduler_factory", None) is not None or model.optim_settings.scheduled
    reason = why_not_graphed(model, optimizer_class, scheduled)
    if reason is not None:
        return reason
    if model.optim_settings.head_only_epochs:
        return "model.module.optim.head_only_epochs changes the trained parameters between epochs"
    if int(trainer_cfg.get("accumulate_grad_batches", 1) or 1) != 1:
        return "trainer.accumulate_grad_batches > 1"
    if str(trainer_cfg.precision) not in ("bf16-mixed", "32-true", "32", "bf16-true"):
        return f"trainer.precision={trainer_cfg.precision} (a gradient scaler reads values back every step)"
    if "ddp" in str(trainer_cfg.get("strategy", "auto")) or several_processes(trainer_cfg):
        return "several devices (DDP): gradients are all-reduced outside the captured step"
    return None


def speed_summary(step_mode: Mapping[str, Any], dm: Any, model: Any) -> dict[str, Any]:
    """How a fold was fed and stepped, after its fit: ``step_mode`` (what :func:`configure_trainer` decided), the
    data module's placement and batching, and the graphed step's counts (for the fold result and benchmarks)."""
    out: dict[str, Any] = dict(step_mode)
    out.update(resident=bool(dm.resident), bucket_by_length=bool(dm.bucket_by_length), frames_multiple=dm.frames_multiple)
    runner = getattr(model, "step_runner", None)
    if runner is not None:
        out.update(graphs=len(runner.graphs), graph_replays=runner.replays, eager_steps=runner.eager_steps)
    return out
