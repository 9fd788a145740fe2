"""The LightningModule that wraps any batch-dict network with loss, optimiser and metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, MinMetric

from wav2emo.data.manifest import EMOTIONS, NUM_CLASSES
from wav2emo.errors import ConfigError
from wav2emo.models.standardizer import Standardizer
from wav2emo.training.distributed import gather_rows
from wav2emo.training.epoch_outputs import EpochOutputs, EpochResult
from wav2emo.training.optim import OptimSettings, parameter_groups, set_trainable, warmup_decay_scheduler
from wav2emo.training.tracked_metrics import build_metrics, build_per_class_metrics, per_class_table

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]
# A training-split transform: (batch on the device, generator) -> batch.  Never run on dev/test/predict.
BatchTransform = Callable[[dict[str, Any], torch.Generator], dict[str, Any]]


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """A 63-bit seed per (seed, epoch, batch): fresh randomness every step and epoch, the same on a re-run.

    ``rank`` (several processes): each process augments its own clips with draws of its own; rank 0 draws
    what a single process draws."""
    entropy = [int(seed), int(epoch), int(batch_idx)] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EmotionClassifier(L.LightningModule):
    """Cross-entropy training of ``upstream -> featurizer -> net`` with WA/UA/F1 per stage and per-class
    test reports.

    ``optimizer`` and ``scheduler`` are factories (``functools.partial``, e.g. hydra ``_partial_: true``)
    so the module builds them over its own parameters; they, the modules and the transform stay out of
    the hparams, which therefore hold only plain values.  ``compile`` (true, or a dict of
    ``torch.compile`` options such as ``{dynamic: true}``) compiles the net when the trainer sets the
    module up.

    ``upstream`` (optional): any module with ``forward(batch) -> batch`` and ``parameter_groups()``
    (e.g. a fine-tuned backbone, ``docs/architecture.md``); ``featurizer`` (optional) picks the hidden
    states the net reads.  ``optim`` (:class:`~wav2emo.training.optim.OptimSettings`) sets the
    backbone's lr, layer-wise decay, weight decay, per-step warm-up/decay and head-only epochs.
    ``train_transform`` runs on training batches only, on the device, with a generator seeded from
    ``(seed, epoch, batch_idx)``; ``feature_transform`` (e.g. SpecAugment) runs on what the upstream
    computed, in training steps only, with its own generator from the same step seed.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_classes: int = NUM_CLASSES,
        class_names: Sequence[str] = EMOTIONS,
        label_smoothing: float = 0.0,
        compile: bool | Mapping[str, Any] = False,
        featurizer: nn.Module | None = None,
        upstream: nn.Module | None = None,
        optim: Mapping[str, Any] | None = None,
        train_transform: BatchTransform | None = None,
        seed: int = 0,
        feature_transform: BatchTransform | None = None,
        class_weights: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "featurizer", "upstream", "train_transform", "feature_transform"],
            logger=False,
        )
        names = tuple(str(c) for c in class_names)
        if len(names) != num_classes:
            raise ValueError(
                f"class_names has {len(names)} names {names}, expected num_classes={num_classes}"
            )
        if not isinstance(getattr(net, "inputs", None), tuple):
            raise TypeError(f"{type(net).__name__} must declare a class attribute `inputs: tuple[str, ...]`")
        self.upstream = upstream
        self.featurizer = featurizer
        self.net = net
        self.optim_settings = OptimSettings.from_config(optim)
        if self.optim_settings.scheduled and scheduler is not None:
            raise ConfigError("model.module.scheduler and a per-step schedule (model.module.optim.warmup_steps/"
                              "decay) were both given: choose one")
        if self.optim_settings.head_only_epochs and upstream is None:
            raise ConfigError("model.module.optim.head_only_epochs needs an upstream (a trainable backbone)")
        self.train_transform = train_transform
        self.feature_transform = feature_transform
        self._feature_generator: torch.Generator | None = None  # set for the current training step only
        self.seed = int(seed)
        self._train_batches = 0  # batches transferred in this training epoch (the transform's batch_idx)
        self._backbone_params: list[nn.Parameter] = []
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.class_names = names
        self.label_smoothing = float(label_smoothing)
        self._init_class_weights(class_weights, num_classes)
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(f"compile must be a bool or a dict of torch.compile options, got {compile!r}")
        self.compile_options: dict[str, Any] | None = (
            dict(compile) if isinstance(compile, Mapping) else ({} if compile else None)
        )
        self._compiled = False

        self.train_metrics = build_metrics(num_classes, "train/")
        self.val_metrics = build_metrics(num_classes, "val/")
        self.test_metrics = build_metrics(num_classes, "test/")
        self.test_per_class_metrics = build_per_class_metrics(num_classes)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_ua_best, self.val_loss_best = MaxMetric(), MinMetric()
        self._epoch_outputs = {stage: EpochOutputs() for stage in ("train", "val", "test")}

        self.test_confusion: np.ndarray | None = None
        self.test_per_class: list[dict] = []
        self.test_predictions: list[dict] = []

    # Network -----------------------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[str, ...]:
        """The feature inputs the wrapped net reads from the batch ("ssl", "egemaps")."""
        return self.net.inputs

    @property
    def standardized_inputs(self) -> tuple[str, ...]:
        """Inputs whose statistics must be set with :meth:`set_feature_stats` before training."""
        return tuple(sorted({m.input_name for m in self.net.modules() if isinstance(m, Standardizer)}))

    def set_feature_stats(self, name: str, mean: Any, std: Any) -> None:
        """Fill every Standardizer of input ``name`` with statistics of the training actors."""
        targets = [m for m in self.net.modules() if isinstance(m, Standardizer) and m.input_name == name]
        if not targets:
            raise ValueError(
                f"{type(self.net).__name__} has no Standardizer for input {name!r}; "
                f"standardised inputs: {self.standardized_inputs}"
            )
        for m in targets:
            m.set_stats(mean, std)

    # Class weights ---------------------------------------------------------------------------------
    def _init_class_weights(self, class_weights: str | Sequence[float] | None, num_classes: int) -> None:
        """``None`` (plain cross-entropy), ``"balanced"`` (set later from the training split's label counts
        with :meth:`set_class_weights`, as the eGeMAPS statistics are) or one positive weight per class.
        The weights are a buffer, so a checkpoint carries the ones it was trained with."""
        self.class_weights_mode: str | None = None
        if class_weights is None:
            return
        if isinstance(class_weights, str):
            if class_weights != "balanced":
                raise ConfigError(f"model.module.class_weights={class_weights!r}: expected null, 'balanced' or a list")
            self.class_weights_mode = "balanced"
            weights = torch.full((num_classes,), float("nan"))  # unset until set_class_weights
        else:
            weights = torch.as_tensor([float(w) for w in class_weights], dtype=torch.float32)
            if weights.shape != (num_classes,) or not torch.isfinite(weights).all() or (weights < 0).any() \
                    or weights.sum() <= 0:
                raise ConfigError(
                    f"model.module.class_weights={list(class_weights)}: expected {num_classes} finite, "
                    "non-negative weights (one per class, in class_names order), not all zero"
                )
            self.class_weights_mode = "given"
        self.register_buffer("class_weight", weights)

    def set_class_weights(self, counts: Any) -> None:
        """Balanced weights ``n / (C * count_c)`` (scikit-learn's ``class_weight='balanced'``) from the
        per-class label counts of the *training* clips; a class with no training clip gets weight 0."""
        if self.class_weights_mode != "balanced":
            raise ValueError(f"class weights are {self.class_weights_mode!r}, not 'balanced': nothing to set")
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
        if counts.shape != (self.num_classes,) or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError(f"class counts {counts.tolist()}: expected {self.num_classes} non-negative counts, not all 0")
        present = counts > 0
        weights = torch.zeros_like(counts)
        weights[present] = counts.sum() / (int(present.sum()) * counts[present])
        self.class_weight.copy_(weights.to(self.class_weight.dtype))

    def _loss_weight(self) -> torch.Tensor | None:
        if self.class_weights_mode is None:
            return None
        if not torch.isfinite(self.class_weight).all():
            raise RuntimeError(
                "model.module.class_weights=balanced but the weights were never set: build the module with "
                "wav2emo.runs.build.build_module (it counts the training labels) or call set_class_weights"
            )
        return self.class_weight

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.upstream is not None:
            batch = self.upstream(batch)
            if self._feature_generator is not None and self.feature_transform is not None:
                batch = self.feature_transform(batch, self._feature_generator)
        if self.featurizer is not None:
            batch = self.featurizer(batch)
        return self.net(batch)

    # Batches -----------------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply ``train_transform`` to training batches only (never dev, test or predict), on the device."""
        trainer = self._trainer
        if self.train_transform is None or trainer is None or not trainer.training or trainer.sanity_checking:
            return batch
        g = torch.Generator(device=self.device)
        g.manual_seed(step_seed(self.seed, self.current_epoch, self._train_batches, self.global_rank))
        self._train_batches += 1
        return self.train_transform(batch, g)

    # Steps -------------------------------------------------------------------------------------------
    def _logits(self, batch: Mapping[str, Any]) -> torch.Tensor:
        logits = self(batch)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self.net).__name__} returned logits of shape {tuple(logits.shape)}, "
                f"expected (B, {self.num_classes})"
            )
        return logits.float()  # loss and softmax in float32, also under bf16 autocast

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, weight=self._loss_weight(), label_smoothing=self.label_smoothing)

    def _shared_step(self, batch: Mapping[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["label"].long()
        logits = self._logits(batch)
        loss = self._loss(logits, labels)
        self._epoch_outputs[stage].add(logits.detach().argmax(dim=1), labels, loss.detach())
        return loss, logits

    # The manual (CUDA-graphed) training step ---------------------------------------------------------
    def use_step_runner(self, clip_val: float | None, clip_algorithm: str = "norm", cuda_graphs: bool = True,
                        max_graphs: int = 32) -> None:
        """Train with :class:`~wav2emo.training.graphed_step.StepRunner` (manual optimisation): the whole step
        replayed from CUDA graphs on a GPU, the same step eagerly elsewhere.  The trainer must then be built
        without ``gradient_clip_val``: the runner clips, with the same value and algorithm."""
        from wav2emo.training.graphed_step import StepRunner

        def loss_and_preds(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self._logits(batch)
            return self._loss(logits, batch["label"].long()), logits.argmax(dim=1)

        self.automatic_optimization = False
        self.step_runner = StepRunner(loss_and_preds, self, clip_val, clip_algorithm, use_graphs=cuda_graphs,
                                      max_graphs=max_graphs)

    def _manual_training_step(self, batch: Mapping[str, Any]) -> torch.Tensor:
        lopt = self.optimizers()
        # Lightning counts optimizer steps (global_step: checkpoints, logging) through these hooks of its
        # optimizer wrapper; the runner steps the wrapped optimizer itself (or replays a graph that does).
        lopt._on_before_step()
        loss, preds = self.step_runner.step(lopt.optimizer, batch)
        lopt._on_after_step()
        self._epoch_outputs["train"].add(preds, batch["label"].long(), loss)
        return loss

    def _log_epoch(self, stage: str) -> EpochResult | None:
        """Compute, log and reset ``stage``'s loss and metrics from the whole epoch's predictions at once.

        The metrics are fed once per epoch rather than once per batch: torchmetrics' per-batch
        updates read values back to the host (argument checks, bincount), which made every training
        step wait for the GPU.  The numbers are the same.  None when the stage saw no batch.

        Several processes: each feeds its own clips, and ``compute()`` sums the metric states of all of them
        (torchmetrics syncs on compute once a process group exists), so every process gets the metrics of
        all clips, each dev and test clip counted once (the evaluation shards do not overlap), and the
        checkpoint monitor reads the same ``val/ua`` everywhere.
        """
        collected = self._epoch_outputs[stage].collect()
        if collected is None:
            return None
        preds, labels, losses, sizes = collected
        metrics = getattr(self, f"{stage}_metrics")
        loss_metric = getattr(self, f"{stage}_loss")
        metrics.update(preds, labels)
        loss_metric.update(losses, weight=sizes)
        result = EpochResult(preds, labels, loss_metric.compute(), metrics.compute())
        metrics.reset()
        loss_metric.reset()
        # sync_dist: under DDP each process logs the same, already all-reduced value.
        self.log(f"{stage}/loss", result.loss, prog_bar=stage != "test", sync_dist=True)
        self.log_dict(result.metrics, prog_bar=stage == "val", sync_dist=True)
        return result

    def epoch_loss(self, stage: str) -> float | None:
        """Mean loss of ``stage``'s batches so far in this epoch (a host read: for epoch summaries only)."""
        collected = self._epoch_outputs[stage].collect()
        if collected is None:
            return None
        _, _, losses, sizes = collected
        return float((losses * sizes).sum() / sizes.sum())

    def on_train_epoch_start(self) -> None:
        self._epoch_outputs["train"].reset()
        self._train_batches = 0
        if self._backbone_params and self.optim_settings.head_only_epochs:
            # Frozen parameters get no gradient, so the optimizer creates no state for them until they thaw.
            set_trainable(self._backbone_params, self.current_epoch >= self.optim_settings.head_only_epochs)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._epoch_outputs["val"].reset()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        if not self.automatic_optimization:
            return self._manual_training_step(batch)
        if self.feature_transform is not None:
            # Seeded like the batch hook, salted so the two draw different numbers; fresh every epoch.
            g = torch.Generator(device=self.device)
            g.manual_seed(step_seed(self.seed + 1_000_003, self.current_epoch, batch_idx, self.global_rank))
            self._feature_generator = g
        try:
            loss, _ = self._shared_step(batch, "train")
        finally:
            self._feature_generator = None
        return loss

    def _use_channels_last(self) -> None:
        # cuDNN runs the CNN's small-channel convolutions and batch norms about 3x faster in the
        # channels-last layout on a GPU (benchmarks/step_profile.py); the layout changes no values.
        if self.device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)

    def setup(self, stage: str) -> None:
        # torch.compile fuses the CNN's batch norms, ReLUs and pooling into a few kernels.  In place
        # (nn.Module.compile), so parameter names and checkpoints stay those of the plain net.  A net
        # (or one of its parts) may name what is worth compiling with ``compile_targets()``, e.g. the
        # conv stack without the length-dependent head; otherwise the whole net is compiled.  Whether
        # it pays depends on the loop: benchmarks/reports/step_variants_h100.md.
        if self.compile_options is not None and not self._compiled:
            namer = next((m for m in self.net.modules() if hasattr(m, "compile_targets")), None)
            for target in namer.compile_targets() if namer is not None else [self.net]:
                target.compile(**self.compile_options)
            self._compiled = True

    def on_fit_start(self) -> None:
        self._use_channels_last()

    def on_test_start(self) -> None:
        self._use_channels_last()

    def on_predict_start(self) -> None:
        self._use_channels_last()

    def on_train_start(self) -> None:
        # Lightning's sanity check ran validation before this point (on_fit_start comes even earlier):
        # start the validation metrics from scratch.  The best-so-far trackers are left alone: the sanity
        # check never feeds them, and a resumed run has just restored them from its checkpoint.
        for metric in (self.val_metrics, self.val_loss):
            metric.reset()
        self._epoch_outputs["val"].reset()

    # The best-so-far dev trackers are torchmetrics states, which are not in the state_dict (adding them
    # there would make older checkpoints fail to load strictly): they travel under a key of their own.
    BEST_KEY = "wav2emo_val_best"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.BEST_KEY] = {
            "ua": self.val_ua_best.max_value.detach().cpu().clone(),
            "loss": self.val_loss_best.min_value.detach().cpu().clone(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = checkpoint.get(self.BEST_KEY)
        if not best or not torch.isfinite(best["ua"]).all():  # no dev epoch had finished
            return
        self.val_ua_best.update(best["ua"].to(self.val_ua_best.max_value.device))
        self.val_loss_best.update(best["loss"].to(self.val_loss_best.min_value.device))

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._epoch_outputs["val"].reset()
            return
        result = self._log_epoch("val")
        if result is None:
            return
        self.val_ua_best.update(result.metrics["val/ua"])
        self.val_loss_best.update(result.loss)
        self.log("val/ua_best", self.val_ua_best.compute(), on_step=False, on_epoch=True, sync_dist=True)
        self.log("val/loss_best", self.val_loss_best.compute(), on_step=False, on_epoch=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._epoch_outputs["test"].reset()
        self.test_per_class_metrics.reset()
        self.test_confusion, self.test_per_class, self.test_predictions = None, [], []

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        _, logits = self._shared_step(batch, "test")
        labels = batch["label"].long()
        preds = logits.argmax(dim=1)
        probs = logits.softmax(dim=1).cpu().numpy()
        actors = batch.get("actor")
        actors = [None] * len(labels) if actors is None else [int(a) for a in actors]
        for i, (clip_id, label, pred) in enumerate(
            zip(batch["clip_id"], labels.tolist(), preds.tolist(), strict=True)
        ):
            row = {"clip_id": clip_id, "actor": actors[i], "label": label, "pred": pred}
            row.update({f"prob_{name}": float(probs[i, c]) for c, name in enumerate(self.class_names)})
            self.test_predictions.append(row)

    def on_test_epoch_end(self) -> None:
        # Several processes: every process's predictions, in the split's order (each scored its own block).
        self.test_predictions = gather_rows(self.test_predictions)
        result = self._log_epoch("test")
        if result is None:
            return
        self.test_per_class_metrics.update(result.preds, result.labels)
        res = self.test_per_class_metrics.compute()
        confusion = res["confusion"].cpu().numpy().astype(np.int64)
        self.test_confusion = confusion
        self.test_per_class = per_class_table(
            res["precision"].cpu(),
            res["recall"].cpu(),
            res["f1"].cpu(),
            confusion.sum(axis=1),
            self.class_names,
        )
        for row in self.test_per_class:
            for key in ("precision", "recall", "f1"):
                self.log(f"test/{key}/{row['class']}", row[key], on_step=False, on_epoch=True, sync_dist=True)
        self.test_per_class_metrics.reset()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = self._logits(batch).softmax(dim=1).cpu()
        return {"clip_id": list(batch["clip_id"]), "probs": probs}

    # Optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        head_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        groups = parameter_groups(self, self.upstream, self.optim_settings, head_lr)
        if not groups:
            raise ValueError(f"{type(self.net).__name__} has no trainable parameters")
        self._backbone_params = [p for g in groups if g["name"].startswith("backbone/") for p in g["params"]]
        if len(groups) == 1 and set(groups[0]) == {"name", "params"}:
            optimizer = self.optimizer_factory(groups[0]["params"])  # the optimisation of before groups existed
        else:
            optimizer = self.optimizer_factory(groups)
        if self.optim_settings.scheduled:
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = warmup_decay_scheduler(optimizer, total, self.optim_settings)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val/loss",
                "interval": "epoch",
                "frequency": 1,
            },
        }
