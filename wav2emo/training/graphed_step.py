"""The whole training step replayed from CUDA graphs: forward, loss, backward, gradient clip, optimizer step.

Why: a frozen-feature fold on a GPU is bound by the host, not the GPU.  Per batch-25 step, Python launches
some 300 kernels (forward through ~50 modules, the autograd engine's backward, Adam), which takes about as long
as the GPU needs to run them (``benchmarks/reports/step_variants_h100.md``).  A CUDA graph records those launches
once per batch shape and replays them with one call, so the step costs the GPU time alone.

How (the recipe of PyTorch's "whole network capture", ``torch.cuda.graphs``):

* one graph per batch shape (keys, shapes, dtypes), captured the first time the shape is seen, up to
  ``max_graphs``; any further shape runs the same step eagerly.  Few shapes need ``loader.frames_multiple``
  (e.g. 16): batches padded to a multiple of 16 frames;
* capture needs warm-up steps on a side stream; they would train the model on the capturing batch, so the
  parameters, buffers (batch-norm statistics) and optimizer state are saved before and written back after:
  the captured step then trains exactly as an eager one from the same state;
* Adam/AdamW run fused and ``capturable`` (their step counter lives on the GPU); the learning rate is fixed
  (no scheduler), gradients are clipped inside the graph (no host read of the norm), bf16 autocast runs with
  its weight cache off (a cached cast would freeze the weights into the graph);
* every graph shares one memory pool; no state lives in it between replays (inputs are copied into buffers
  allocated outside it, the loss and predictions are copied out right after each replay).

The step is manual optimisation in Lightning terms; :class:`StepRunner` keeps Lightning's step counter
(``global_step``) moving as an automatic step would.  Without a GPU the same step runs eagerly, which is how
its equivalence with Lightning's automatic step is tested on a CPU (``tests/test_graphed_step.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

GRAPHABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
# (loss, predictions) of a batch, from the module's forward and loss
LossFn = Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]


def why_not_graphed(module: nn.Module, optimizer_class: type | None, scheduled: bool) -> str | None:
    """None when the module's training step can be captured, else the reason (shown in the log)."""
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, GRAPHABLE_OPTIMIZERS)):
        name = getattr(optimizer_class, "__name__", repr(optimizer_class))
        return f"the optimizer is {name}; CUDA graphs support Adam and AdamW"
    if scheduled:
        return "a learning-rate schedule is configured (the captured step has a fixed learning rate)"
    if getattr(module, "upstream", None) is not None:
        return "a backbone is trained (finetune != none): waveform batches of many lengths"
    if getattr(module, "feature_transform", None) is not None:
        return "a feature transform (SpecAugment) runs inside the step"
    return None


def _tensors(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _shape_key(batch: Mapping[str, torch.Tensor]) -> tuple:
    return tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in batch.items()))


class _Graph:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: dict[str, torch.Tensor], loss: torch.Tensor,
                 preds: torch.Tensor) -> None:
        self.graph, self.inputs, self.loss, self.preds = graph, inputs, loss, preds


class StepRunner:
    """Runs a training step (zero grads, loss, backward, clip, optimizer step), from a CUDA graph where it can.

    ``loss_fn(batch) -> (loss, preds)``; ``module`` owns the parameters and buffers (batch-norm statistics) that
    a capture's warm-up steps change and that are written back afterwards; ``clip_val``/``clip_algorithm`` as
    Lightning's ``gradient_clip_val``/``gradient_clip_algorithm``.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        module: nn.Module,
        clip_val: float | None = None,
        clip_algorithm: str = "norm",
        use_graphs: bool = True,
        max_graphs: int = 32,
        warmup_steps: int = 3,
    ) -> None:
        if clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm={clip_algorithm!r}: expected 'norm' or 'value'")
        self.loss_fn, self.module = loss_fn, module
        self.clip_val = None if clip_val in (None, 0) else float(clip_val)
        self.clip_algorithm = clip_algorithm
        self.use_graphs, self.max_graphs, self.warmup_steps = use_graphs, int(max_graphs), int(warmup_steps)
        self.graphs: dict[tuple, _Graph] = {}
        self._pool = None
        self._prepared: set[int] = set()
        self.eager_steps = 0
        self.replays = 0

    # The step -------------------------------------------------------------------------------------------
    def _params(self, optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
        return [p for g in optimizer.param_groups for p in g["params"]]

    def _body(self, optimizer: torch.optim.Optimizer, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss, backward, clip, step: what a graph records (gradients were set to None before)."""
        loss, preds = self.loss_fn(batch)
        loss.backward()
        if self.clip_val is not None:
            params = [p for p in self._params(optimizer) if p.grad is not None]
            if self.clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(params, self.clip_val, foreach=params[0].is_cuda if params else None)
            else:
                torch.nn.utils.clip_grad_value_(params, self.clip_val)
        optimizer.step()
        return loss.detach(), preds.detach()

    def _autocast(self, device: torch.device):
        """The enclosing autocast (Lightning's precision context), with its weight cache off."""
        kind = device.type
        if not torch.is_autocast_enabled(kind):
            return torch.autocast(kind, enabled=False)
        return torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), cache_enabled=False)

    def _prepare(self, optimizer: torch.optim.Optimizer) -> None:
        """Adam/AdamW fused and capturable (once per optimizer): a step with no host synchronisation."""
        if id(optimizer) in self._prepared:
            return
        for group in optimizer.param_groups:
            group["capturable"] = True
            group["fused"] = True
            group["foreach"] = False
        self._prepared.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on ``batch``; returns (loss, predictions), fresh tensors the caller may keep."""
        inputs = _tensors(batch)
        device = next(iter(inputs.values())).device
        if not (self.use_graphs and device.type == "cuda"):
            return self._eager(optimizer, batch, device)
        self._prepare(optimizer)
        key = _shape_key(inputs)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self._eager(optimizer, batch, device)
            entry = self._capture(optimizer, inputs, device)
            self.graphs[key] = entry
        for k, v in inputs.items():
            entry.inputs[k].copy_(v, non_blocking=True)
        entry.graph.replay()
        self.replays += 1
        return entry.loss.clone(), entry.preds.clone()

    def _eager(self, optimizer, batch, device) -> tuple[torch.Tensor, torch.Tensor]:
        self.eager_steps += 1
        optimizer.zero_grad(set_to_none=True)
        with self._autocast(device):
            return self._body(optimizer, batch)

    # Capture --------------------------------------------------------------------------------------------
    def _capture(self, optimizer, inputs: dict[str, torch.Tensor], device: torch.device) -> _Graph:
        static = {k: v.clone() for k, v in inputs.items()}
        saved = self._save(optimizer)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                optimizer.zero_grad(set_to_none=True)
                with self._autocast(device):
                    self._body(optimizer, static)
        torch.cuda.current_stream(device).wait_stream(side)
        optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), self._autocast(device):
            loss, preds = self._body(optimizer, static)
        if self._pool is None:
            self._pool = graph.pool()
        self._restore(optimizer, saved)
        log.debug("captured a training step graph for %s", {k: tuple(v.shape) for k, v in static.items()})
        return _Graph(graph, static, loss, preds)

    def _save(self, optimizer) -> dict[str, Any]:
        with torch.no_grad():
            return {
                "params": [p.detach().clone() for p in self.module.parameters()],
                "buffers": [b.detach().clone() for b in self.module.buffers()],
                "state": {p: {k: v.clone() for k, v in st.items() if isinstance(v, torch.Tensor)}
                          for p, st in optimizer.state.items()},
            }

    def _restore(self, optimizer, saved: Mapping[str, Any]) -> None:
        """Undo the warm-up steps in place (the graph holds these very tensors)."""
        with torch.no_grad():
            for p, v in zip(self.module.parameters(), saved["params"], strict=True):
                p.copy_(v)
            for b, v in zip(self.module.buffers(), saved["buffers"], strict=True):
                b.copy_(v)
            for p, st in optimizer.state.items():
                before = saved["state"].get(p)
                for k, v in st.items():
                    if not isinstance(v, torch.Tensor):
                        continue
                    if before is not None and k in before:
                        v.copy_(before[k])
                    else:  # state the warm-up created: Adam's fresh state is all zeros (step 0)
                        v.zero_()
