"""Lightning's cluster environment chosen without initialising MPI where no MPI launcher started the process
(training/distributed.py ``cluster_plugins``), and left to Lightning wherever its choice could differ."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.fabric.plugins.environments import LightningEnvironment, MPIEnvironment, SLURMEnvironment

from wav2emo.training.distributed import MPI_LAUNCHER_VARIABLES, cluster_plugins

CLUSTER_VARIABLES = (*MPI_LAUNCHER_VARIABLES, "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "LSB_JOBID",
                     "LSB_HOSTS", "LSB_MCPU_HOSTS", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")


@pytest.fixture
def plain_machine(monkeypatch):
    """No launcher's variables; MPI must not be asked (as if mpi4py were installed and slow to initialise)."""
    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def asked():
        raise AssertionError("MPI was asked for its world size")

    monkeypatch.setattr(MPIEnvironment, "detect", staticmethod(asked))
    return monkeypatch


def test_a_plain_process_gets_lightnings_default_environment_without_asking_mpi(plain_machine):
    plugins = cluster_plugins({})
    assert [type(p) for p in plugins["plugins"]] == [LightningEnvironment]
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, **plugins)
    assert isinstance(trainer._accelerator_connector.cluster_environment, LightningEnvironment)
    with pytest.raises(AssertionError, match="MPI was asked"):  # what Lightning alone would have done
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)


@pytest.mark.parametrize("variable", MPI_LAUNCHER_VARIABLES)
def test_a_process_started_by_an_mpi_launcher_is_left_to_lightning(plain_machine, variable):
    plain_machine.setenv(variable, "2")
    assert cluster_plugins({}) == {}


def test_slurm_and_plugins_named_in_the_config_are_left_to_lightning(plain_machine):
    assert cluster_plugins({"plugins": ["something"]}) == {}
    plain_machine.setenv("SLURM_NTASKS", "1")
    plain_machine.setenv("SLURM_JOB_NAME", "train")
    assert SLURMEnvironment.detect()
    assert cluster_plugins({}) == {}
