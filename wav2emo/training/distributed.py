"""Several processes training one fold (``trainer=ddp``, one process per GPU): which process this is, what
only one of them does, and what they gather.

Lightning's DDP starts the other processes inside the first ``trainer.fit``, by running the command line again
with ``LOCAL_RANK`` set (under Hydra: the same overrides and run directory, ``hydra.job.name=train_ddp_process_<k>``
and no ``.hydra`` folder).  Every process therefore runs :func:`~wav2emo.runs.experiment.train` from the
start, fold after fold in step with the others; so:

* rank zero prepares the data of every fold before its first fit (:func:`several_processes` tells from the
  config), so the other processes find corpus, feature caches and augmentation copies built and only open
  them (the caches' file lock, :mod:`wav2emo.features.lock`, still makes any late build happen once);
* only rank zero writes fold results, predictions, reports and run records (Lightning writes checkpoints and
  logger files from rank zero itself);
* a Hydra multirun is refused: the relaunched command line would carry ``-m`` and start the whole sweep again
  in every process (:func:`check_launch`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from wav2emo.errors import ConfigError
from wav2emo.precision import accelerator_on_cuda

log = logging.getLogger(__name__)
# What an MPI launcher (mpirun/mpiexec of Open MPI, MPICH, Intel MPI, MVAPICH; PMIx) sets in the processes it starts.
MPI_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def is_distributed() -> bool:
    """True once this process belongs to a process group (the first fit under DDP made it)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank: from the process group, else from the launcher's environment
    (``LOCAL_RANK``/``RANK``, read by Lightning at import), 0 for a process of its own."""
    if is_distributed():
        return dist.get_rank()
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_rank_zero() -> bool:
    """Whether this process writes the run's files (always, without DDP)."""
    return rank() == 0


def gather_rows(rows: list[Any]) -> list[Any]:
    """Every process's ``rows`` (picklable), concatenated in rank order, on every process; ``rows`` alone
    without a process group.  The evaluation shards are contiguous blocks in rank order, so the result is
    the split's rows in their order.  A clip seen by two processes would count twice: refused."""
    if not is_distributed() or dist.get_world_size() == 1:
        return rows
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(rows))
    gathered = [row for part in parts for row in part]
    ids = [row["clip_id"] for row in gathered if isinstance(row, Mapping) and "clip_id" in row]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"{len(ids) - len(set(ids))} clips were scored by more than one process: the evaluation "
                           "shards overlap (wav2emo/feeding/batches.py eval_shard)")
    return gathered


def check_same_everywhere(value: Any, what: str) -> None:
    """Refuse to go on when the processes disagree on ``value`` (e.g. the dev-chosen checkpoint): they would
    test different models, and only rank zero's would be reported."""
    if not is_distributed() or dist.get_world_size() == 1:
        return
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"the processes disagree on {what}: {values} (rank order)")


def trains_on_cuda(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether Lightning will put this trainer on CUDA devices (``accelerator`` gpu/cuda, or auto with CUDA present)."""
    return accelerator_on_cuda(str(trainer_cfg.get("accelerator", "auto")))


def device_count(trainer_cfg: Mapping[str, Any]) -> int:
    """How many devices of this node ``trainer.devices`` asks for: an int, a list of indices, ``"0,1"``, or
    ``auto``/``-1`` (every GPU when the accelerator is a GPU or ``auto`` with CUDA present, else 1)."""
    devices = trainer_cfg.get("devices", "auto")
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip().lower()
    if text in ("auto", "-1"):
        return torch.cuda.device_count() if trains_on_cuda(trainer_cfg) else 1
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text)
    except ValueError:
        return 1


def several_processes(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether this trainer config trains in several processes (devices x nodes > 1), decided from the config
    before any Trainer exists."""
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    return device_count(trainer_cfg) * nodes > 1


def ddp_strategy_for(trainer_cfg: Mapping[str, Any], head_only_epochs: int) -> str | None:
    """The strategy to train with when plain ``ddp`` cannot: a backbone frozen for its first epochs
    (``head_only_epochs``) gets no gradient then, and DDP fails at the second step unless it looks for
    parameters without one (``ddp_find_unused_parameters_true``, a little slower).  None: keep the config's."""
    if str(trainer_cfg.get("strategy")) != "ddp" or not head_only_epochs or not several_processes(trainer_cfg):
        return None
    log.info("head_only_epochs=%d: the frozen backbone has no gradient in those epochs, so DDP looks for unused "
             "parameters (strategy=ddp_find_unused_parameters_true)", head_only_epochs)
    return "ddp_find_unused_parameters_true"


def check_launch(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether the run trains in several processes; refused in a Hydra multirun (see the module docstring)."""
    if not several_processes(trainer_cfg):
        return False
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        multirun = False
    if multirun:
        raise ConfigError(
            f"trainer.devices={trainer_cfg.get('devices')} ({device_count(trainer_cfg)} processes) in a Hydra multirun "
            "(-m): Lightning starts the other processes by running the command line again, -m included, so each "
            "would run the whole sweep. Run the folds in one process instead (fold=all or fold=[0,1,2]: one fold "
            "after the other, each on every GPU)"
        )
    return True


def cluster_plugins(trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{"plugins": [LightningEnvironment()]}`` where Lightning would choose that cluster environment anyway, chosen
    without asking MPI; else ``{}`` (Lightning chooses).

    Lightning's own choice asks ``mpi4py``, where it is installed, for MPI's world size, and that initialises MPI in
    the process: 0.59-0.97 s of a ``Trainer(...)`` in a fresh process on an H100 host whose image has mpi4py
    (``benchmarks/reports/cluster_env_nvidia_h100_80gb_hbm3.md``; 0.36 s in a training run's start-up profile), and
    MPI then lives in a process that forks DataLoader workers.  Lightning chooses as before when the
    config names plugins, when an MPI launcher started this process (:data:`MPI_LAUNCHER_VARIABLES`), or when
    torchelastic, SLURM or LSF is detected (cheap checks of the environment)."""
    if trainer_cfg.get("plugins") or any(v in os.environ for v in MPI_LAUNCHER_VARIABLES):
        return {}
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if any(env.detect() for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment)):
        return {}
    return {"plugins": [LightningEnvironment()]}
